// Package container is berth's Linux container engine: it turns an OCI
// runtime spec plus overlay layers into a process tree isolated by
// namespaces, cgroups, capabilities and seccomp. See docs/design.md for the
// start sequence. It knows nothing about images or the CLI.
package container

import (
	"fmt"
	"os"
	"time"

	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// Config is everything needed to create one container.
type Config struct {
	// ID names the container; it is the default hostname and the cgroup leaf.
	ID string
	// Spec describes the process, mounts, namespaces, resources and security.
	// Spec.Root.Path is used as the root when Layers is empty.
	Spec *specs.Spec
	// Layers are the overlay lower directories, lowest first.
	Layers []string
	// Dir is the instance's own directory; the engine keeps upper/, work/ and
	// its bookkeeping there. It must exist.
	Dir string
	// CgroupPath is the cgroup relative to the hierarchy roots, e.g. "/berth/ID".
	CgroupPath string
	// CreateHooks, when set, is called during Create once the init (pid,
	// in the host's pid namespace) has built the root file system and
	// before it pivots into it: the caller runs the prestart and
	// createRuntime hooks and returns the state JSON that the init then
	// gives the spec's createContainer hooks, which it runs in the
	// container's namespaces with the host's file system still in view
	// (the OCI runtime spec's order). An error fails Create.
	CreateHooks func(pid int) (state []byte, err error)
	// Init, when set, is an init Prestart started for this container;
	// Create takes it (or, when it does not fit, closes it and starts one).
	// A taken init keeps the stdio Prestart gave it: Create's must be the
	// same.
	Init *Init
	// Network, when set, is called during Create with the init's pid
	// once its network namespace exists, while the init builds the root
	// file system, to wire the namespace (the workload starts only after
	// it returns); an error fails the create. The spec must give the
	// container a network namespace of its own.
	Network func(pid int) error
	// KeepInit keeps berth's init as the container's PID 1 (berth run
	// --init, as docker run --init puts tini there): it forks the
	// workload, relays signals to it and reaps orphans. Otherwise the
	// init execve's the workload, which is PID 1 and the process the
	// owner waits for, as with Docker and runc: the kernel drops the
	// signals it has no handler for (but SIGKILL and SIGSTOP).
	KeepInit bool
	// CgroupMade, when set, says the cgroup exists already with these
	// limits and device rules (berth-agent makes its workload cgroup
	// before its guest is saved as a template): Create applies the
	// spec's only when they differ.
	CgroupMade *cgroups.Resources
}

// Trace, when set, is called with the name of each step of Create and
// Start and when it was reached, for profiling a start (berth's
// BERTH_TRACE). The init's own steps come too, once the init reports
// them, so calls are not in time order.
var Trace func(step string, at time.Time)

func trace(step string) {
	if Trace != nil {
		Trace(step, time.Now())
	}
}

// Prewarm makes, in the background, the one-time check os/exec runs
// before a process's first child: on Linux a clone(CLONE_PIDFD) of a
// child that exits at once, up to a millisecond here. A process that is
// about to create a container calls it first thing, so that the check
// is not on the start's critical path.
func Prewarm() {
	go func() {
		if p, err := os.FindProcess(os.Getpid()); err == nil {
			p.Release()
		}
	}()
}

// Stdio is what the workload's fds 0, 1 and 2 become. A nil file means
// /dev/null. With Process.Terminal set it is not used: the engine
// allocates a terminal inside the container for all three (the
// controlling terminal) and hands its master to the caller
// (Container.Console, Process.Console).
type Stdio struct {
	Stdin, Stdout, Stderr *os.File
}

// Exit is how a workload ended, in the command-line contract's terms.
type Exit struct {
	Code      int  // exit status, or 128+Signal
	Signal    int  // the signal that killed it, 0 when it exited
	OOMKilled bool // the cgroup's OOM killer fired
}

// ExecError reports that the workload's command could not be started:
// Code is 127 when it was not found and 126 when it was found but could
// not be invoked (not executable, permission denied, bad format). The
// command line uses Code as its exit status (errors.As).
type ExecError struct {
	Path string // the command as given (Args[0]) or as resolved
	Err  error  // the underlying cause, usually a syscall.Errno
	Code int    // 126 or 127
}

func (e *ExecError) Error() string {
	if e.Code == 127 {
		return fmt.Sprintf("exec %q: %v (command not found)", e.Path, e.Err)
	}
	return fmt.Sprintf("exec %q: %v (cannot invoke)", e.Path, e.Err)
}

func (e *ExecError) Unwrap() error { return e.Err }

// PidsLimitError reports that a process could not join the container
// (Exec): the container's pids limit, Limit processes, is reached.
type PidsLimitError struct {
	Limit int64
}

func (e *PidsLimitError) Error() string {
	return fmt.Sprintf("pids limit %d reached", e.Limit)
}

// Unwrap classes it as a clash with the container's state.
func (e *PidsLimitError) Unwrap() error { return errdefs.ErrConflict }
