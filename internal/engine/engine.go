// Package engine is the one interface through which berth's front ends run
// an instance, whatever isolates it. Each kind of isolation is one Engine:
// the container engine (internal/container: namespaces and cgroups on the
// host's kernel) and the VM engine (internal/vm: a guest kernel under QEMU)
// are the two; a third would be one more implementation, and no verb of a
// front end asks which kind an instance is.
//
// An instance has two sides. Its owner (the foreground `berth run`, or the
// monitor of a detached one) starts it and holds it as a Running until it
// ends: it waits for it, relays signals and tears it down. Every other
// process reaches it through a Handle, made from its record: signals, exec,
// pause and resume, stats and top, whoever owns it.
package engine

import (
	"context"
	"fmt"
	"os"
	"sort"
	"syscall"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/usage"
)

// Stdio is a workload's standard streams; nil ones are /dev/null.
type Stdio = container.Stdio

// Exit is how a workload ended.
type Exit = container.Exit

// Engine runs instances of one kind of isolation.
type Engine interface {
	// Name is the isolation's name, as records and ps show it.
	Name() string
	// Traits are what the front ends must know of how the engine wires
	// an instance to them.
	Traits() Traits
	// Prepare may begin work for an instance whose spec is not known
	// yet, from a skeleton spec and the stdio it will have (the
	// container engine forks its init here); nil when there is nothing
	// to begin. The result goes into Config.Prepared; the caller closes
	// it.
	Prepare(skeleton *specs.Spec, stdio Stdio) Prepared
	// Cgroup is the host cgroup an instance of this engine gets, "" for
	// none (a container's processes; a VM's QEMU and virtiofsd, whose
	// workload's cgroups are inside its guest).
	Cgroup(id string) string
	// Start creates and starts the instance cfg describes, with stdio;
	// the caller owns it from then on. Cancelling ctx cancels the start
	// until the workload runs. On failure nothing of the instance is left.
	Start(ctx context.Context, cfg Config, stdio Stdio) (Running, error)
	// Open is a handle on an instance some process owns, from its record
	// and its directory.
	Open(in *instance.Instance, dir string) Handle
}

// Traits say how an engine's instances are wired to their front end.
type Traits struct {
	// LocalTerminal: with a terminal, the engine allocates a pty on the
	// host and Running.Console is its master; stdio is not used.
	// Otherwise the terminal is the instance's own (in a guest) and
	// streams through stdio, stdin included.
	LocalTerminal bool
	// OwnerWritesOutput: the owner's process itself writes the
	// workload's output into stdio, so the owner's ends of the pipes
	// stay open until the workload has ended; otherwise the workload's
	// processes hold them and the owner closes its copies at once.
	OwnerWritesOutput bool
	// RemoveWhileEnding: an instance's directory holds nothing its end
	// needs, so a --rm instance may be removed while it is torn down.
	RemoveWhileEnding bool
}

// Prepared is work an engine began before the instance's spec was known.
type Prepared interface {
	Close()
}

// Config is what starting an instance takes.
type Config struct {
	ID   string
	Dir  string // the instance's directory: sockets, console, scratch
	Spec *specs.Spec
	// Layers are the image's unpacked layers, lowest first.
	Layers []string
	// Cgroup is the host cgroup (Engine.Cgroup's).
	Cgroup string
	// Prepared is what Prepare returned for this instance, or nil.
	Prepared Prepared
	// Kernel is a VM's guest kernel ("" for the default); Root is
	// berth's data root, where the VM engine finds its guest's parts.
	Kernel, Root string
	// Network, when not nil, wires the instance's network namespace (its
	// path given) before the workload runs: berth's network layer puts
	// eth0 there, addressed and routed. A container's processes live in
	// that namespace; a VM's QEMU runs there and gives eth0 to its guest
	// (see vm.Network.Attach). nil: no network (`--network none`).
	Network func(netns string) error
}

// Running is an instance as its owner holds it.
type Running interface {
	// Pid is the host process that embodies the instance: a container's
	// init, a VM's QEMU.
	Pid() int
	// Wait blocks until the workload ends.
	Wait() (Exit, error)
	// Signal relays sig to the workload.
	Signal(sig syscall.Signal) error
	// Resize changes the size of the instance's terminal.
	Resize(rows, cols uint16) error
	// Console is the master of a local terminal (Traits.LocalTerminal)
	// or nil.
	Console() *os.File
	// Facts are what inspect shows of how the instance runs.
	Facts() Facts
	// Destroy releases everything the instance holds.
	Destroy() error
}

// Facts are what an engine tells of how an instance runs, for its record.
type Facts struct {
	Accel      string // a VM's accelerator: kvm or tcg
	Transport  string // a VM's agent channel
	VMStart    string // how a VM started: "template" or "boot"
	VMTemplate string // the template a VM was restored from
}

// Handle reaches an instance that some process owns.
type Handle interface {
	// Signal relays sig to the workload. SIGKILL ends the instance even
	// when its owner does not answer.
	Signal(sig syscall.Signal) error
	// Exec runs p beside the workload with stdio (p.Terminal: a
	// terminal, whose size resize carries) and waits for it.
	Exec(ctx context.Context, p *specs.Process, stdio Stdio, resize <-chan specs.Box) (Exec, error)
	// Pause freezes the workload; Resume thaws it.
	Pause() error
	Resume() error
	// Stats reads the workload's resource figures: a VM's are its
	// guest's workload cgroup's, with its QEMU's host usage in Host.
	Stats() (usage.Stats, error)
	// Top lists the workload's processes, with the pids of the kernel
	// that runs them (the host's for a container, the guest's for a VM).
	Top() ([]usage.Process, error)
}

// Exec is a process started by Handle.Exec.
type Exec interface {
	// Console is the master of its local terminal, or nil.
	Console() *os.File
	// Wait blocks until it ends.
	Wait() (Exit, error)
}

var engines = map[string]Engine{}

// register adds e under its name; each engine registers itself.
func register(e Engine) { engines[e.Name()] = e }

// For is the engine of an isolation ("" is the container engine).
func For(isolation string) (Engine, error) {
	if isolation == "" {
		isolation = instance.IsolationContainer
	}
	if e, ok := engines[isolation]; ok {
		return e, nil
	}
	return nil, fmt.Errorf("isolation %q: want one of %v: %w", isolation, Names(), errdefs.ErrInvalid)
}

// Names lists the engines, sorted.
func Names() []string {
	var out []string
	for n := range engines {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
