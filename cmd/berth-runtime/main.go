// Command berth-runtime is a runc-compatible OCI runtime over berth's
// container engine: containerd's runc shim and dockerd drive it with
// runc's command line (see docs/runtime.md). Each verb is a short-lived
// process; the state of every container lives under --root. The verbs
// live one per file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/errdefs"
	rt "github.com/berth-dev/berth/internal/runtime"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// globals are runc's global flags and what they open.
type globals struct {
	root          string
	logPath       string
	logFormat     string
	debug         bool
	systemdCgroup bool
	isolation     string
	log           *slog.Logger
}

// store opens the state root.
func (g *globals) store() (*rt.Store, error) { return rt.NewStore(g.root) }

// command is one verb.
type command struct {
	name  string
	usage string
	run   func(ctx context.Context, g *globals, args []string) error
}

func commands() []command {
	return []command{
		{"create", "create [--bundle DIR] [--pid-file F] [--console-socket S] ID", cmdCreate},
		{"start", "start ID", cmdStart},
		{"run", "run [--bundle DIR] [--detach] [--pid-file F] [--console-socket S] [--keep] ID", cmdRun},
		{"state", "state ID", cmdState},
		{"kill", "kill [--all] ID [SIGNAL]", cmdKill},
		{"delete", "delete [--force] ID", cmdDelete},
		{"exec", "exec [--process F | OPTIONS] [--detach] [--pid-file F] ID [CMD...]", cmdExec},
		{"ps", "ps [--format table|json] ID", cmdPs},
		{"pause", "pause ID", cmdPause},
		{"resume", "resume ID", cmdResume},
		{"update", "update [--resources F | flags] ID", cmdUpdate},
		{"events", "events [--stats] [--interval D] ID", cmdEvents},
		{"features", "features", cmdFeatures},
		{"list", "list [--format table|json] [-q]", cmdList},
		{"spec", "spec [--bundle DIR]", cmdSpec},
	}
}

func main() {
	// Re-exec stages of the container engine come first and never return.
	if container.RunStage(os.Args) {
		return
	}
	// So do VM isolation's host processes: a VM's owner and an exec relay.
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case rt.OwnerVerb:
			os.Exit(rt.RunVMOwner(os.Args[2:]))
		case rt.ExecRelayVerb:
			os.Exit(rt.RunExecRelay(os.Args[2:]))
		}
	}
	os.Exit(realMain(os.Args[1:]))
}

func realMain(args []string) int {
	g := &globals{}
	fs := newFlags("berth-runtime")
	fs.StringVar(&g.root, "root", rt.DefaultRoot, "state directory")
	fs.StringVar(&g.logPath, "log", "", "log file (default: stderr)")
	fs.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	fs.BoolVar(&g.debug, "debug", false, "debug logging")
	fs.BoolVar(&g.systemdCgroup, "systemd-cgroup", false, "use systemd cgroups (not supported)")
	fs.StringVar(&g.isolation, "isolation", defaultIsolation(os.Args[0]), "isolation level: container (default) or vm")
	showVersion := fs.Bool("version", false, "print the version")
	fs.BoolVar(showVersion, "v", false, "print the version")
	fs.Bool("rootless", false, "ignored")
	fs.String("criu", "", "ignored")
	if err := fs.Parse(args); err != nil {
		fmt.Fprintf(os.Stderr, "berth-runtime: %v\n", err)
		return 1
	}
	if *showVersion {
		fmt.Printf("berth-runtime version %s\nspec: %s\n", version, specs.Version)
		return 0
	}
	closeLog, err := g.openLog()
	if err != nil {
		fmt.Fprintf(os.Stderr, "berth-runtime: %v\n", err)
		return 1
	}
	defer closeLog()
	rest := fs.Args()
	if len(rest) == 0 || rest[0] == "help" {
		usage()
		if len(rest) == 0 {
			return 1
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != rest[0] {
			continue
		}
		g.log.Debug("command", "args", args)
		err := g.check()
		if err == nil {
			err = c.run(context.Background(), g, rest[1:])
		}
		if err == nil {
			return 0
		}
		var st exitStatus
		if errors.As(err, &st) {
			return int(st)
		}
		msg := oneLine(err)
		g.log.Error(msg)
		fmt.Fprintf(os.Stderr, "berth-runtime %s: %s\n", c.name, msg)
		return 1
	}
	fmt.Fprintf(os.Stderr, "berth-runtime: unknown command %q (see berth-runtime help)\n", rest[0])
	return 1
}

// vmName is the name under which berth-runtime runs every bundle as a VM
// (a symlink made by make install), for engines that take a runtime's
// binary but no arguments for it: containerd's CRI BinaryName, a
// Kubernetes RuntimeClass for VMs.
const vmName = "berth-runtime-vm"

// defaultIsolation is --isolation's default: vm when called as vmName.
func defaultIsolation(arg0 string) string {
	if filepath.Base(arg0) == vmName {
		return "vm"
	}
	return ""
}

// check refuses global settings berth-runtime does not support.
func (g *globals) check() error {
	if g.systemdCgroup {
		return fmt.Errorf("--systemd-cgroup: the systemd cgroup driver is not supported; use cgroupfs: %w", errdefs.ErrNotSupported)
	}
	switch g.isolation {
	case "", "container", "vm":
		return nil
	}
	return fmt.Errorf("--isolation %q: want container or vm: %w", g.isolation, errdefs.ErrInvalid)
}

// openLog sets up g.log: the --log file (runc's json lines, which
// containerd reads back on failure: level, msg, time) or stderr.
func (g *globals) openLog() (func(), error) {
	var w io.Writer = io.Discard
	closeFn := func() {}
	if g.logPath != "" {
		f, err := os.OpenFile(g.logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("--log %s: %w", g.logPath, err)
		}
		w, closeFn = f, func() { f.Close() }
	} else if g.debug {
		w = os.Stderr
	}
	level := slog.LevelInfo
	if g.debug {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.LevelKey {
			return slog.String(slog.LevelKey, strings.ToLower(a.Value.String()))
		}
		return a
	}}
	switch g.logFormat {
	case "json":
		g.log = slog.New(slog.NewJSONHandler(w, opts))
	case "text", "":
		g.log = slog.New(slog.NewTextHandler(w, opts))
	default:
		closeFn()
		return nil, fmt.Errorf("--log-format %q: want text or json", g.logFormat)
	}
	return closeFn, nil
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: berth-runtime [--root DIR] [--log F] [--log-format text|json] [--debug] [--isolation container|vm] COMMAND\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintln(os.Stderr, "  "+c.usage)
	}
}

// exitStatus is returned by verbs whose exit status is a process's.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// oneLine keeps an error to a single line.
func oneLine(err error) string { return errdefs.OneLine(err) }

// newFlags is a flag set that reports errors instead of exiting.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// oneID parses a verb's flags and wants exactly one argument, the ID.
func oneID(fs *flag.FlagSet, args []string) (string, error) {
	if err := fs.Parse(args); err != nil {
		return "", fmt.Errorf("%v: %w", err, errdefs.ErrInvalid)
	}
	if fs.NArg() != 1 {
		return "", fmt.Errorf("want exactly one container ID: %w", errdefs.ErrInvalid)
	}
	return fs.Arg(0), nil
}

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// noArgs refuses arguments to a verb that takes none.
func noArgs(args []string) ([]string, error) {
	if len(args) != 0 {
		return nil, fmt.Errorf("unexpected arguments %q: %w", args, errdefs.ErrInvalid)
	}
	return nil, nil
}
