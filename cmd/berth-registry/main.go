// Command berth-registry is berth's registry client: it does berth pull,
// push, login and logout, and the pulls of berth run --pull. berth parses
// those verbs' command lines (internal/regcli declares their flags, for
// both) and then executes this binary, found next to it or in
// ../lib/berth, with the flags as parsed; it is never run by hand. It is
// a binary of its own because net/http, TLS and go-containerregistry,
// linked into berth, cost every berth process milliseconds to start.
//
//	berth-registry [--root ROOT] VERB [--FLAG=VALUE...] -- OPERAND...
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/regcli"
	"github.com/berth-dev/berth/internal/registry"
)

// verbs are what berth-registry does, by name.
var verbs = map[string]func(root string, args []string) error{
	"pull":            cmdPull,
	"push":            cmdPush,
	"login":           cmdLogin,
	"logout":          cmdLogout,
	regcli.RunPull:    cmdRunPull,
	regcli.ServeBench: cmdServeBench,
}

// errNotAName ends a run-pull of a reference no registry could have.
var errNotAName = errors.New("not a registry's name")

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := newFlags("berth-registry")
	root := fs.String("root", "/var/lib/berth", "berth's data root")
	if err := fs.Parse(args); err != nil || fs.NArg() == 0 || verbs[fs.Arg(0)] == nil {
		fmt.Fprintln(os.Stderr, "berth-registry: berth's registry client, started by berth (berth pull, push, login, logout)")
		return 2
	}
	verb := fs.Arg(0)
	err := verbs[verb](*root, fs.Args()[1:])
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errNotAName):
		return regcli.ExitNotAName
	case verb == regcli.RunPull:
		fmt.Println(oneLine(err)) // berth run reports it
	default:
		fmt.Fprintf(os.Stderr, "berth %s: %s\n", verb, oneLine(err))
	}
	return 125
}

func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parseVerb parses the command line berth made of a verb's (regcli.Args)
// into v's fields, and returns its operand, which operand checks.
func parseVerb(name string, v regcli.Verb, args []string, operand func([]string) (string, error)) (string, error) {
	fs := newFlags(name)
	v.Declare(fs)
	if err := fs.Parse(args); err != nil {
		return "", fmt.Errorf("%v: %w", err, errdefs.ErrInvalid)
	}
	return operand(fs.Args())
}

// registryOptions are the options of a pull, push or login: the insecure
// registries of flags, the environment and the data root's file.
func registryOptions(root string, flags []string) (registry.Options, error) {
	list, err := registry.InsecureRegistries(root, flags)
	if err != nil {
		return registry.Options{}, err
	}
	return registry.Options{Insecure: list}, nil
}

// transferOptions are the options of a pull or push: registryOptions,
// and jobs layers at once, as the flag named jobsFlag says.
func transferOptions(root string, insecure []string, jobsFlag string, jobs int) (registry.Options, error) {
	if jobs < 1 {
		return registry.Options{}, fmt.Errorf("--%s %d: want at least 1: %w", jobsFlag, jobs, errdefs.ErrInvalid)
	}
	o, err := registryOptions(root, insecure)
	o.Jobs = jobs
	return o, err
}

// openStore opens the image store of the data root.
func openStore(root string) (*image.Store, error) {
	return image.Open(filepath.Join(root, "image"))
}

// oneOperand is the single image reference of pull and push.
func oneOperand(args []string) (string, error) {
	if len(args) != 1 {
		return "", fmt.Errorf("want exactly one image reference: %w", errdefs.ErrInvalid)
	}
	return args[0], nil
}

// atMostOne is the optional registry of login and logout.
func atMostOne(args []string) (string, error) {
	if len(args) > 1 {
		return "", fmt.Errorf("want at most one registry: %w", errdefs.ErrInvalid)
	}
	return strings.Join(args, ""), nil
}

// oneLine keeps an error to a single line, as berth does.
func oneLine(err error) string { return errdefs.OneLine(err) }
