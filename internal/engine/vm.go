package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/usage"
	"github.com/berth-dev/berth/internal/vm"
)

// vms is the VM engine: the workload runs in a guest with its own kernel,
// under QEMU, behind berth's guest agent. Only the owner holds the
// agent's connection; other processes reach the instance through the
// owner's control socket in the instance's directory.
type vms struct{}

func init() { register(vms{}) }

func (vms) Name() string { return instance.IsolationVM }

func (vms) Traits() Traits { return Traits{OwnerWritesOutput: true} }

// Prepare has nothing to begin: the guest's parts are found at Start.
func (vms) Prepare(*specs.Spec, Stdio) Prepared { return nil }

// Cgroup is the host cgroup QEMU and virtiofsd run in, bounded to the
// guest's RAM and QEMU's overhead (vm.HostResources).
func (vms) Cgroup(id string) string { return "/berth/" + id }

func (vms) Start(ctx context.Context, cfg Config, stdio Stdio) (Running, error) {
	guest, err := vm.FindGuest(cfg.Kernel, cfg.Root)
	if err != nil {
		return nil, err
	}
	var layers []vm.Layer
	for _, l := range cfg.Layers {
		layers = append(layers, vm.Layer{Snapshot: l, Digest: "sha256:" + filepath.Base(l)})
	}
	// Nil files must stay nil interfaces for the agent's client.
	var as agent.Stdio
	if stdio.Stdin != nil {
		as.Stdin = stdio.Stdin
	}
	if stdio.Stdout != nil {
		as.Stdout = stdio.Stdout
	}
	if stdio.Stderr != nil {
		as.Stderr = stdio.Stderr
	}
	rc := vm.RunConfig{ID: cfg.ID, Dir: cfg.Dir, Spec: cfg.Spec, Layers: layers, Guest: guest, Cgroup: cfg.Cgroup}
	if cfg.Network != nil {
		rc.Network = &vm.Network{Attach: cfg.Network}
	}
	m, err := vm.Boot(ctx, rc, as)
	if err != nil {
		return nil, err
	}
	stop, err := instance.ServeControl(instance.ControlSocket(cfg.Dir), m)
	if err != nil {
		m.Destroy()
		return nil, err
	}
	return &runningVM{m: m, accel: guest.Accel, stopControl: stop}, nil
}

// runningVM is a VM as its owner holds it: the machine, and the control
// socket it serves.
type runningVM struct {
	m           *vm.Machine
	accel       vm.Accel
	stopControl func()
}

func (r *runningVM) Pid() int                       { return r.m.Pid() }
func (r *runningVM) Resize(rows, cols uint16) error { return r.m.Resize(rows, cols) }
func (r *runningVM) Console() *os.File              { return nil }

// Signal relays a signal the owner got (a foreground run's). One that
// asks the instance to end holds the guest to it: a guest that cannot
// take it, or a second one, ends the VM as SIGKILL does (vm.Interrupt).
func (r *runningVM) Signal(sig syscall.Signal) error {
	switch sig {
	case syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT:
		return r.m.Interrupt(sig)
	}
	return r.m.Signal(sig)
}

func (r *runningVM) Wait() (Exit, error) {
	st, err := r.m.Wait()
	return Exit{Code: st.Code, Signal: st.Signal, OOMKilled: st.OOMKilled}, err
}

func (r *runningVM) Facts() Facts {
	f := Facts{Accel: string(r.accel), Transport: string(r.m.Transport()), VMStart: "boot", VMTemplate: r.m.Template()}
	if f.VMTemplate != "" {
		f.VMStart = "template"
	}
	return f
}

func (r *runningVM) Destroy() error {
	r.stopControl()
	return r.m.Destroy()
}

func (vms) Open(in *instance.Instance, dir string) Handle {
	return vmHandle{in: in, socket: instance.ControlSocket(dir)}
}

// vmHandle reaches a VM through its owner's control socket.
type vmHandle struct {
	in     *instance.Instance
	socket string
}

// Signal relays sig through the owner, which ends QEMU itself when the
// guest does not take a SIGKILL in time (vm.Machine.Kill). A SIGKILL
// whose owner is gone or does not answer kills QEMU directly, by the pid
// recorded (and its start time, against reuse).
func (h vmHandle) Signal(sig syscall.Signal) error {
	err := instance.ControlSignal(h.socket, sig)
	if err != nil && sig == syscall.SIGKILL && instance.Alive(h.in.Pid, h.in.PidStart) {
		if kerr := syscall.Kill(h.in.Pid, syscall.SIGKILL); kerr != nil {
			return fmt.Errorf("instance %s: kill qemu (pid %d): %w", h.in.ShortID(), h.in.Pid, kerr)
		}
		return nil
	}
	return err
}

func (h vmHandle) Exec(ctx context.Context, p *specs.Process, stdio Stdio, resize <-chan specs.Box) (Exec, error) {
	stdin := stdio.Stdin
	if stdin == nil {
		devnull, err := os.Open(os.DevNull)
		if err != nil {
			return nil, err
		}
		defer devnull.Close()
		stdin = devnull
	}
	code, err := instance.ControlExec(h.socket, p, stdin, stdio.Stdout, stdio.Stderr, resize, nil)
	if err != nil {
		if code == 126 || code == 127 {
			err = &container.ExecError{Code: code, Err: err}
		}
		return nil, err
	}
	return doneExec{Exit{Code: code}}, nil
}

// doneExec is an exec that the owner ran to its end.
type doneExec struct{ exit Exit }

func (doneExec) Console() *os.File     { return nil }
func (d doneExec) Wait() (Exit, error) { return d.exit, nil }

func (h vmHandle) Pause() error  { return instance.ControlPause(h.socket, true) }
func (h vmHandle) Resume() error { return instance.ControlPause(h.socket, false) }

// Stats asks the owner for the guest's figures and adds QEMU's own
// usage, read from the host's /proc.
func (h vmHandle) Stats() (usage.Stats, error) {
	var s usage.Stats
	if err := instance.ControlQuery(h.socket, agent.QueryStats, &s); err != nil {
		return usage.Stats{}, fmt.Errorf("instance %s: %w", h.in.ShortID(), err)
	}
	host, err := usage.HostOf("/proc", h.in.Pid)
	if err != nil {
		return usage.Stats{}, fmt.Errorf("instance %s: QEMU: %w", h.in.ShortID(), err)
	}
	if h.in.Cgroup != "" {
		if err := hostCgroup(host, h.in.Cgroup); err != nil {
			return usage.Stats{}, fmt.Errorf("instance %s: QEMU: %w", h.in.ShortID(), err)
		}
	}
	s.Host = host
	return s, nil
}

// hostCgroup adds the figures of QEMU's host cgroup at path to h.
func hostCgroup(h *usage.Host, path string) error {
	cg, err := cgroups.New(path)
	if err != nil {
		return err
	}
	cs, err := cg.Stats()
	if err != nil {
		return err
	}
	h.Cgroup, h.Memory, h.MemoryLimit, h.Pids = path, cs.MemoryUsage, cs.MemoryLimit, cs.Pids
	return nil
}

// Top asks the owner for the guest's workload processes.
func (h vmHandle) Top() ([]usage.Process, error) {
	var ps []usage.Process
	if err := instance.ControlQuery(h.socket, agent.QueryTop, &ps); err != nil {
		return nil, fmt.Errorf("instance %s: %w", h.in.ShortID(), err)
	}
	return ps, nil
}
