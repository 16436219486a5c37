package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/instance"
)

// defaultRoot is where berth keeps its data unless --root or BERTH_ROOT
// say otherwise.
const defaultRoot = "/var/lib/berth"

// globals are the flags before the verb and the stores they open.
type globals struct {
	root      string
	images    *image.Store
	instances *instance.Store
}

// parseGlobals parses the flags before the verb. `berth --help` returns
// a *helpRequest for the whole command line.
func parseGlobals(args []string) (*globals, []string, error) {
	g := &globals{root: os.Getenv("BERTH_ROOT")}
	if g.root == "" {
		g.root = defaultRoot
	}
	fs := globalFlags(g)
	if err := parseStrict(fs, args); err != nil {
		return nil, nil, err
	}
	if g.root == "" {
		// filepath.Abs would make it the working directory.
		return nil, nil, fmt.Errorf("--root: empty; want a directory: %w", errdefs.ErrInvalid)
	}
	abs, err := filepath.Abs(g.root)
	if err != nil {
		return nil, nil, fmt.Errorf("--root %q: %v", g.root, err)
	}
	g.root = abs
	return g, fs.Args(), nil
}

// imageStore opens the image store under the root on first use.
func (g *globals) imageStore() (*image.Store, error) {
	if g.images == nil {
		s, err := image.Open(filepath.Join(g.root, "image"))
		if err != nil {
			return nil, err
		}
		g.images = s
	}
	return g.images, nil
}

// instanceStore opens the instance store under the root on first use.
func (g *globals) instanceStore() (*instance.Store, error) {
	if g.instances == nil {
		s, err := instance.OpenStore(g.root)
		if err != nil {
			return nil, err
		}
		g.instances = s
	}
	return g.instances, nil
}

// globalFlags declares the flags before the verb, for parsing and help.
func globalFlags(g *globals) *flag.FlagSet {
	fs := newFlags("berth")
	fs.StringVar(&g.root, "root", g.root, "the `DIR` that holds images and instances (BERTH_ROOT sets the default)")
	return fs
}

// newFlags returns a flag set that reports errors instead of exiting and
// stops at the first non-flag argument.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parse parses args, flags and operands in any order (`image import
// PATH --name x`), expanding grouped one-letter flags (-it) first. After
// it, fs.Args() holds the operands.
func parse(fs *flag.FlagSet, args []string) error {
	var operands []string
	for {
		if err := parseStrict(fs, args); err != nil {
			if h, ok := err.(*helpRequest); ok {
				h.interspersed = true
			}
			return err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if i := len(args) - len(rest) - 1; i >= 0 && args[i] == "--" {
			operands = append(operands, rest...)
			break
		}
		operands = append(operands, rest[0])
		args = rest[1:]
	}
	return fs.Parse(append([]string{"--"}, operands...))
}

// parseStrict parses flags up to the first operand, as commands that run
// a command line (`run IMAGE CMD...`, `exec ID CMD...`) need. -h, -help
// and --help (where the verb does not define -h itself) return a
// *helpRequest carrying fs, from which the verb's help is written.
func parseStrict(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(expandGroups(fs, args)); err != nil {
		if err == flag.ErrHelp {
			return &helpRequest{fs: fs}
		}
		return err
	}
	return nil
}

// expandGroups rewrites "-it" as "-i -t" when every letter is a boolean
// flag of fs, as Docker's users expect. It stops at the first non-flag.
func expandGroups(fs *flag.FlagSet, args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || a == "-" || !strings.HasPrefix(a, "-") {
			return append(out, args[i:]...)
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if f := fs.Lookup(name); f != nil {
			out = append(out, a)
			if !hasValue && !isBool(f) && i+1 < len(args) {
				i++
				out = append(out, args[i])
			}
			continue
		}
		if strings.HasPrefix(a, "--") || !allBool(fs, a[1:]) {
			out = append(out, a) // unknown: the flag package names it
			continue
		}
		for _, r := range a[1:] {
			out = append(out, "-"+string(r))
		}
	}
	return out
}

func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

func allBool(fs *flag.FlagSet, letters string) bool {
	for _, r := range letters {
		f := fs.Lookup(string(r))
		if f == nil || !isBool(f) {
			return false
		}
	}
	return true
}

// listFlag collects a flag given several times.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// optString records whether a string flag was given at all.
type optString struct {
	set bool
	val string
}

func (o *optString) String() string     { return o.val }
func (o *optString) Set(v string) error { o.set, o.val = true, v; return nil }
