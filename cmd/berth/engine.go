package main

import (
	"github.com/berth-dev/berth/internal/engine"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/vm"
)

// traitsOf are the traits of in's engine: how it is wired to its owner.
// An instance whose isolation no engine knows (a record of a newer berth)
// has none.
func traitsOf(in *instance.Instance) engine.Traits {
	e, err := engine.For(in.Isolation)
	if err != nil {
		return engine.Traits{}
	}
	return e.Traits()
}

// handleOf reaches in, which some process owns, through its engine.
func handleOf(st *instance.Store, in *instance.Instance) (engine.Handle, error) {
	e, err := engine.For(in.Isolation)
	if err != nil {
		return nil, err
	}
	return e.Open(in, st.Dir(in.ID)), nil
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
