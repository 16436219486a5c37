// Command berth runs OCI images as containers or virtual machines.
//
// There is no daemon: each verb does its work and exits; a small monitor
// process owns each detached instance. The verbs live one per file.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/vm"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// command is one verb of the command line.
type command struct {
	name  string
	usage string
	run   func(g *globals, args []string) error
}

func commands() []command {
	return []command{
		{"info", "info                       host facts: cgroup mode, root, versions", cmdInfo},
		{"image", "image import|ls|rm|inspect  manage images", cmdImage},
		{"run", "run [OPTIONS] IMAGE [CMD...] run an instance", cmdRun},
		{"ps", "ps [-a] [--format json]    list instances", cmdPs},
		{"logs", "logs [-f] ID                show a detached instance's output", cmdLogs},
		{"exec", "exec [-i] [-t] ID CMD...    run a command in a running instance", cmdExec},
		{"stop", "stop [-t SECONDS] ID...     SIGTERM, then SIGKILL after the grace period", cmdStop},
		{"kill", "kill [-s SIGNAL] ID...      send a signal", cmdKill},
		{"rm", "rm [-f] ID...               remove stopped instances", cmdRm},
		{"pause", "pause ID...                 freeze every process of instances", cmdPause},
		{"unpause", "unpause ID...               thaw paused instances", cmdUnpause},
		{"inspect", "inspect ID...               instance details as JSON", cmdInspect},
		{"stats", "stats [--no-stream] [--format json] [ID...] resource usage of instances", cmdStats},
		{"top", "top ID                      processes of an instance", cmdTop},
		{"bench", "bench [start] [memory]      measure berth against runc", cmdBench},
		{"version", "version                    print berth's version", cmdVersion},
		{monitorVerb, "", cmdMonitor},
	}
}

func main() {
	// Re-exec stages of the container engine come first and never return.
	if container.RunStage(os.Args) {
		return
	}
	os.Exit(realMain(os.Args[1:]))
}

func realMain(args []string) int {
	g, rest, err := parseGlobals(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "berth: %v\n", err)
		return 125
	}
	if len(rest) == 0 || rest[0] == "help" || rest[0] == "-h" || rest[0] == "--help" {
		usage()
		if len(rest) == 0 {
			return 125
		}
		return 0
	}
	for _, c := range commands() {
		if c.name == rest[0] {
			if c.name == "run" {
				catchEarlySignals()
			}
			err := c.run(g, rest[1:])
			if err == nil {
				return 0
			}
			var st exitStatus
			if errors.As(err, &st) {
				return int(st)
			}
			fmt.Fprintf(os.Stderr, "berth %s: %s\n", c.name, oneLine(err))
			return exitCode(err)
		}
	}
	fmt.Fprintf(os.Stderr, "berth: unknown command %q (see berth help)\n", rest[0])
	return 125
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: berth [--root DIR] COMMAND [ARGS]\n\ncommands:")
	for _, c := range commands() {
		if c.usage != "" {
			fmt.Fprintln(os.Stderr, "  "+c.usage)
		}
	}
}

// exitStatus is returned by verbs whose own exit status is the workload's.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// exitCode maps an error to the contract's exit codes: 126 when the
// command could not be invoked, 127 when it was not found, 125 for berth's
// own failures.
func exitCode(err error) int {
	var ee *container.ExecError
	if errors.As(err, &ee) {
		return ee.Code
	}
	var ce *codedError
	if errors.As(err, &ce) {
		return ce.code
	}
	var se *vm.StartError
	if errors.As(err, &se) && se.Code >= 125 {
		return se.Code
	}
	return 125
}

// codedError is an error that already knows its exit code (a VM exec's
// 126 or 127 reported by the instance's owner).
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

// oneLine keeps an error to a single line.
func oneLine(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}
