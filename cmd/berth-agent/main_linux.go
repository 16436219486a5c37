// Command berth-agent is the PID 1 of a berth guest VM: a static Go
// binary (CGO_ENABLED=0) that the host packs as /init into the guest's
// initramfs (internal/initramfs.AgentImage).
//
// At boot it mounts /proc, /sys and /dev (devtmpfs), inserts the
// kernel modules listed in /etc/berth/modules (the agent channel's
// first; the rest, and the workload's cgroup, while the host says
// hello; never the other channel's driver), opens its channel and serves
// the host's requests over it with internal/agent: with `berth.vsock=PORT`
// on the kernel command line it listens on AF_VSOCK port PORT and
// accepts the host's one connection, else it opens the virtio-serial
// port named by `berth.port=NAME` (default "agent"). Run assembles the workload's root (EROFS
// layer disks, an ext4 scratch disk, overlayfs), moves into it
// switch_root style and starts the process in a cgroup v2 child with its
// limits (spawn_linux.go); Exec starts more processes there; Shutdown
// stops everything and flushes virtio-fs shares; then the agent unmounts
// and powers off. Signals sent to the agent are ignored: the workload,
// root in its guest, cannot kill it with them.
//
// Any failure before serving, and the end of the connection, print one
// line "berth-agent: ..." to the console (ttyS0) and power the guest off,
// so the host finds the reason in the console's tail.
//
// # Contract with the host (internal/vm)
//
//   - initramfs: internal/initramfs.AgentImage(agent, KERNEL/lib/modules/VER,
//     initramfs.DefaultModules), written with initramfs.Build.
//   - kernel command line: "console=ttyS0 quiet panic=-1" and either
//     "berth.port=NAME" or "berth.vsock=PORT", and "berth.trace=1" to have
//     the agent print the time of each step of a start on the console;
//     nothing else is read from it.
//   - agent channel, virtio-serial: -device virtio-serial-pci, -chardev
//     socket,id=C,path=SOCK,server=on,wait=off and -device
//     virtserialport,chardev=C,name=NAME; the host connects to SOCK and
//     calls agent.Dial. The host may connect before or after the guest is
//     up. Or vsock: -device vhost-vsock-pci,guest-cid=CID; the host
//     connects to (CID, PORT), retrying until the agent listens, and calls
//     agent.Dial. Either way the connection is the instance's lifeline:
//     when it ends the agent kills the workload and powers off.
//   - disks: one read-only virtio-blk disk per layer holding an EROFS image
//     of the layer's snapshot directory in overlayfs form, plus an empty
//     ext4 scratch disk; give each a serial (virtio-blk-pci,serial=...) and
//     name them in agent.Process.Root (Layers lowest first, Scratch), or use
//     /dev/vdX paths.
//   - after the workload exits the guest stays up (Exec still works) until
//     the host calls Client.Shutdown; once acknowledged, nothing of the
//     guest needs to survive (the host may kill QEMU); left alone the agent
//     unmounts, syncs and powers off, so QEMU (with -no-reboot) exits by
//     itself.
package main

import (
	"fmt"
	"os"

	"github.com/berth-dev/berth/internal/container"
)

func main() {
	// The guest's container engine runs its stages (the workload's
	// init, exec) from this binary.
	container.RunStage(os.Args)
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "berth-agent: must run as PID 1 of a berth guest (it mounts, loads modules and powers off)")
		os.Exit(2)
	}
	initMain()
}
