package main

import (
	"context"
	"os"
	"path/filepath"
	"syscall"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/vm"
)

// workload is a started instance as its owner holds it. The container
// engine's Container is one; vmWorkload is the other.
type workload interface {
	Pid() int
	Wait() (container.Exit, error)
	Signal(syscall.Signal) error
	Destroy() error
	// Console is a local pty master for -t, or nil (a VM's terminal
	// is in the guest and streams through stdio).
	Console() *os.File
}

// vmWorkload is a VM instance: the guest machine and the control socket
// through which other berth processes reach its agent.
type vmWorkload struct {
	m           *vm.Machine
	accel       vm.Accel
	stopControl func()
}

func (w *vmWorkload) Pid() int                        { return w.m.Pid() }
func (w *vmWorkload) Signal(sig syscall.Signal) error { return w.m.Signal(sig) }
func (w *vmWorkload) Console() *os.File               { return nil }

func (w *vmWorkload) Wait() (container.Exit, error) {
	st, err := w.m.Wait()
	return container.Exit{Code: st.Code, Signal: st.Signal, OOMKilled: st.OOMKilled}, err
}

func (w *vmWorkload) Destroy() error {
	w.stopControl()
	return w.m.Destroy()
}

// startVM boots the instance's bundle as a virtual machine.
func startVM(ctx context.Context, g *globals, st *instance.Store, in *instance.Instance, b *instance.Bundle, stdio container.Stdio) (*vmWorkload, error) {
	guest, err := findGuest(g, in.Kernel)
	if err != nil {
		return nil, err
	}
	var layers []vm.Layer
	for _, l := range b.Layers {
		layers = append(layers, vm.Layer{Snapshot: l, Digest: "sha256:" + filepath.Base(l)})
	}
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
	m, err := vm.Boot(ctx, vm.RunConfig{
		ID: in.ID, Dir: st.Dir(in.ID), Spec: b.Spec, Layers: layers, Guest: guest,
	}, as)
	if err != nil {
		return nil, err
	}
	stop, err := instance.ServeControl(instance.ControlSocket(st.Dir(in.ID)), m)
	if err != nil {
		m.Destroy()
		return nil, err
	}
	return &vmWorkload{m: m, accel: guest.Accel, stopControl: stop}, nil
}

// findGuest locates what a guest needs (vm.FindGuest, shared with
// berth-runtime): the kernel (--kernel, then BERTH_KERNEL, then
// ROOT/kernel and /var/lib/berth/kernel), the berth-agent binary
// (BERTH_AGENT, next to berth, then /usr/local/lib/berth), QEMU, and the
// accelerator.
func findGuest(g *globals, kernel string) (vm.Guest, error) {
	return vm.FindGuest(kernel, g.root)
}

func findKernel(g *globals, kernel string) (vm.Kernel, error) {
	return vm.FindGuestKernel(kernel, g.root)
}

// execVM runs p in a VM instance through its owner's control socket,
// with this process's stdio.
func execVM(st *instance.Store, in *instance.Instance, p *specs.Process, interactive bool, resize <-chan specs.Box) error {
	stdin := os.Stdin
	if !interactive {
		devnull, err := os.Open(os.DevNull)
		if err != nil {
			return err
		}
		defer devnull.Close()
		stdin = devnull
	}
	code, err := instance.ControlExec(instance.ControlSocket(st.Dir(in.ID)), p, stdin, os.Stdout, os.Stderr, resize, nil)
	if err != nil {
		if code == 126 || code == 127 {
			return &codedError{code: code, err: err}
		}
		return err
	}
	return exitStatus(code)
}

// signalVM relays sig to a VM instance's workload through its owner; a
// SIGKILL whose owner does not answer kills the guest's QEMU directly.
func signalVM(st *instance.Store, in *instance.Instance, sig syscall.Signal) error {
	err := instance.ControlSignal(instance.ControlSocket(st.Dir(in.ID)), sig)
	if err != nil && sig == syscall.SIGKILL && instance.Alive(in.Pid, in.PidStart) {
		return syscall.Kill(in.Pid, syscall.SIGKILL)
	}
	return err
}
