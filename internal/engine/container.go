package engine

import (
	"context"
	"fmt"
	"syscall"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/usage"
)

// containers is the container engine: the workload shares the host's
// kernel, in namespaces and a cgroup of its own, as their PID 1 or, with
// the spec's instance.AnnotationInit, under berth's init.
type containers struct{}

func init() { register(containers{}) }

func (containers) Name() string { return instance.IsolationContainer }

func (containers) Traits() Traits {
	return Traits{LocalTerminal: true, RemoveWhileEnding: true}
}

// Prepare forks the container's init while the caller resolves the image
// and writes the records (container.Prestart).
func (containers) Prepare(skeleton *specs.Spec, stdio Stdio) Prepared {
	if in := container.Prestart(skeleton, stdio); in != nil {
		return in
	}
	return nil
}

func (containers) Cgroup(id string) string { return "/berth/" + id }

func (containers) Start(ctx context.Context, cfg Config, stdio Stdio) (Running, error) {
	pre, _ := cfg.Prepared.(*container.Init)
	var wire func(pid int) error
	if cfg.Network != nil {
		wire = func(pid int) error { return cfg.Network(fmt.Sprintf("/proc/%d/ns/net", pid)) }
	}
	c, err := container.Run(ctx, &container.Config{
		Network:    wire,
		ID:         cfg.ID,
		Spec:       cfg.Spec,
		Layers:     cfg.Layers,
		Dir:        cfg.Dir,
		CgroupPath: cfg.Cgroup,
		Init:       pre,
		KeepInit:   cfg.Spec.Annotations[instance.AnnotationInit] == "true",
	}, stdio)
	if err != nil {
		return nil, err
	}
	return runningContainer{c}, nil
}

// runningContainer is a container as its owner holds it.
type runningContainer struct{ *container.Container }

// Resize is done on the terminal's master (Console), which the owner
// holds: nothing to do here.
func (runningContainer) Resize(rows, cols uint16) error { return nil }

func (runningContainer) Facts() Facts { return Facts{} }

func (containers) Open(in *instance.Instance, dir string) Handle {
	return containerHandle{in}
}

// containerHandle reaches a container through its PID 1's pid (the
// workload's, or with --init the init's) and its cgroup: no owner is
// needed.
type containerHandle struct{ in *instance.Instance }

// Signal goes to PID 1: the workload, or the init that relays it to the
// workload (SIGKILL ends the whole pid namespace).
func (h containerHandle) Signal(sig syscall.Signal) error {
	if err := syscall.Kill(h.in.Pid, sig); err != nil {
		return fmt.Errorf("signal instance %s: %w", h.in.ShortID(), err)
	}
	return nil
}

func (h containerHandle) Exec(ctx context.Context, p *specs.Process, stdio Stdio, _ <-chan specs.Box) (Exec, error) {
	proc, err := container.Exec(ctx, h.in.Pid, h.in.Init, h.in.Cgroup, p, stdio)
	if err != nil {
		return nil, err
	}
	return proc, nil
}

func (h containerHandle) Pause() error  { return h.freeze(true) }
func (h containerHandle) Resume() error { return h.freeze(false) }

func (h containerHandle) freeze(on bool) error {
	if err := cgroups.SetFrozen(h.in.Cgroup, on); err != nil {
		return fmt.Errorf("instance %s: %w", h.in.ShortID(), err)
	}
	return nil
}

func (h containerHandle) cgroup() (cgroups.Manager, error) {
	cg, err := cgroups.New(h.in.Cgroup)
	if err != nil {
		return nil, fmt.Errorf("instance %s: %w", h.in.ShortID(), err)
	}
	return cg, nil
}

// Stats reads the container's cgroup, the host's memory as the limit
// when the cgroup has none, and the network interfaces (but lo) of the
// container's network namespace.
func (h containerHandle) Stats() (usage.Stats, error) {
	cg, err := h.cgroup()
	if err != nil {
		return usage.Stats{}, err
	}
	st, err := cg.Stats()
	if err != nil {
		return usage.Stats{}, fmt.Errorf("instance %s: %w", h.in.ShortID(), err)
	}
	total, err := usage.MemTotal("/proc")
	if err != nil {
		return usage.Stats{}, err
	}
	s := usage.FromCgroup(st, total)
	if s.NetRx, s.NetTx, err = usage.NetDev(fmt.Sprintf("/proc/%d/net/dev", h.in.Pid)); err != nil {
		s.NetRx, s.NetTx = -1, -1
	}
	return s, nil
}

// Top lists the processes of the container's cgroup and its PID 1 (an
// init that stays is outside the cgroup on v1), with the host's pids.
func (h containerHandle) Top() ([]usage.Process, error) {
	cg, err := h.cgroup()
	if err != nil {
		return nil, err
	}
	pids, err := cg.Pids()
	if err != nil {
		return nil, fmt.Errorf("instance %s: %w", h.in.ShortID(), err)
	}
	return usage.Processes("/proc", append(pids, h.in.Pid))
}
