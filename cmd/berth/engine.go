package main

import (
	"github.com/berth-dev/berth/internal/vm"
)

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
