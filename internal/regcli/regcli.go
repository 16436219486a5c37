// Package regcli is the command line of berth's registry verbs (pull,
// push, login, logout) and what berth and berth-registry share of them.
//
// The registry client (net/http, TLS, x509, go-containerregistry) lives in
// a binary of its own, berth-registry, so that berth does not link it:
// initialising those packages cost every berth process 3 to 4 ms of
// its start, whether it talked to a registry or not. berth declares a
// verb's flags from here, for its help, completion and docs and to parse
// the command line the user typed, and then executes berth-registry with
// the flags as parsed (Args); berth-registry declares the same flags from
// here, parses that and does the work. This package must therefore never
// import internal/registry (TestNoRegistryClient in cmd/berth checks what
// berth links).
package regcli

import (
	"flag"
	"strings"
)

// Binary is the helper's file name, found next to berth or in
// ../lib/berth from it, as berth-init is.
const Binary = "berth-registry"

// The verbs berth-registry has besides the user's (pull, push, login,
// logout), for berth alone.
const (
	// RunPull pulls for `berth run --pull`: berth-registry [--root ROOT]
	// run-pull POLICY REF. Progress goes to standard error; standard
	// output has one line, the pinned reference to resolve in the store,
	// or the error; ExitNotAName says that REF is no name a registry has,
	// when POLICY is "missing".
	RunPull = "run-pull"
	// ServeBench serves a registry on 127.0.0.1 for `berth bench pull`:
	// berth-registry serve-bench DIR keeps the registry's blobs in DIR,
	// pushes the bench image to it, prints its reference on standard
	// output and serves until its standard input ends.
	ServeBench = "serve-bench"
)

// ExitNotAName is berth-registry's exit status for a run-pull of a
// reference no registry could have: run then reports the store's error.
const ExitNotAName = 3

// Verb is the flags of a registry verb.
type Verb interface {
	// Declare declares the verb's flags on fs, bound to the verb's fields.
	Declare(fs *flag.FlagSet)
}

// Pull is the flags of `berth pull`.
type Pull struct {
	Platform string
	Quiet    bool
	Jobs     int
	Insecure List
}

func (p *Pull) Declare(fs *flag.FlagSet) {
	fs.StringVar(&p.Platform, "platform", "", "the `OS/ARCH[/VARIANT]` to take from a multi-platform image (default this host's)")
	quietFlag(fs, &p.Quiet)
	fs.IntVar(&p.Jobs, "max-concurrent-downloads", 3, "how many layers to download at once")
	insecureFlag(fs, &p.Insecure)
}

// Push is the flags of `berth push`.
type Push struct {
	Quiet    bool
	Jobs     int
	Insecure List
}

func (p *Push) Declare(fs *flag.FlagSet) {
	quietFlag(fs, &p.Quiet)
	fs.IntVar(&p.Jobs, "max-concurrent-uploads", 5, "how many layers to upload at once")
	insecureFlag(fs, &p.Insecure)
}

// Login is the flags of `berth login`.
type Login struct {
	User, Password string
	PasswordStdin  bool
	Insecure       List
}

func (l *Login) Declare(fs *flag.FlagSet) {
	fs.StringVar(&l.User, "u", "", "the `USER` name")
	fs.StringVar(&l.User, "username", "", "the `USER` name")
	const pass = "the `PASSWORD` (visible to other users of this host: prefer --password-stdin)"
	fs.StringVar(&l.Password, "p", "", pass)
	fs.StringVar(&l.Password, "password", "", pass)
	fs.BoolVar(&l.PasswordStdin, "password-stdin", false, "read the password from standard input")
	insecureFlag(fs, &l.Insecure)
}

// Logout is the flags of `berth logout`: none.
type Logout struct{}

func (*Logout) Declare(*flag.FlagSet) {}

func quietFlag(fs *flag.FlagSet, q *bool) {
	const usage = "print only the image's reference, no progress"
	fs.BoolVar(q, "q", false, usage)
	fs.BoolVar(q, "quiet", false, usage)
}

// insecureFlag declares --insecure-registry on a verb that talks to
// registries; it adds to BERTH_INSECURE_REGISTRIES and ROOT/registries.json.
func insecureFlag(fs *flag.FlagSet, l *List) {
	fs.Var(l, "insecure-registry", "a registry `HOST[:PORT]` to reach over plain HTTP or unverified TLS (repeatable; also BERTH_INSECURE_REGISTRIES and ROOT/registries.json)")
}

// List collects a flag given several times.
type List []string

func (l *List) String() string     { return strings.Join(*l, ",") }
func (l *List) Set(v string) error { *l = append(*l, v); return nil }

// Args is the command line that sets the flags of fs as its parse left
// them, one --NAME=VALUE each (a List's once per value), then "--" and
// its operands: what berth passes to berth-registry, which reads it with
// a plain fs.Parse, whatever grouped letters or operands among flags the
// user typed.
func Args(fs *flag.FlagSet) []string {
	var out []string
	fs.Visit(func(f *flag.Flag) {
		if l, ok := f.Value.(*List); ok {
			for _, v := range *l {
				out = append(out, "--"+f.Name+"="+v)
			}
			return
		}
		out = append(out, "--"+f.Name+"="+f.Value.String())
	})
	return append(append(out, "--"), fs.Args()...)
}
