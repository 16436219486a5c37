package vm

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Share is a host directory shared into the guest over virtio-fs.
type Share struct {
	// Source is the host directory.
	Source string
	// Tag is the virtio-fs tag the guest mounts (mount -t virtiofs TAG DIR).
	Tag string
	// ReadOnly makes the host side refuse writes too: virtiofsd then runs
	// in a mount namespace where Source is a read-only bind mount.
	ReadOnly bool
}

// Config describes a VM.
type Config struct {
	// ID names the VM (QEMU's -name, disk serials).
	ID string
	// Dir is the VM's private directory (sockets live here); it must exist.
	Dir    string
	Kernel Kernel
	// Initramfs is the guest's initramfs (berth-agent as /init).
	Initramfs string
	// MemoryMiB is guest RAM; 0 means 256.
	MemoryMiB int
	// CPUs is the vCPU count; 0 means 1.
	CPUs int
	// Layers are the read-only layer disks, lowest first: /dev/vda, vdb, ...
	Layers []string
	// Scratch is the writable scratch disk, after the layers; "" for none.
	// The VM owns it: Cleanup removes it.
	Scratch string
	Shares  []Share
	Accel   Accel
	// Transport is the agent's channel; "" means virtio-serial.
	Transport Transport
	// GuestCID is the guest's vsock address with TransportVsock; Start
	// chooses it (one the host's vhost-vsock does not know yet).
	GuestCID uint32
	// ConsoleLog receives the last ConsoleLogMax bytes of the guest's
	// serial console, at most; "" means Dir/console.log.
	ConsoleLog string
	// Append is added to the kernel command line.
	Append []string
	// QEMU is the qemu-system-x86_64 binary; "" looks it up on PATH.
	QEMU string
	// QEMUVersion is its release, which decides how some options are
	// spelt (confineArgs); the zero value means 7.2's spelling.
	QEMUVersion Version
	// Virtiofsd is the virtiofsd binary; "" means /usr/lib/qemu/virtiofsd.
	Virtiofsd string
	// Firmware is the BIOS image (QEMU's -bios); "" means QEMU's default
	// (SeaBIOS). Start fills in DefaultFirmware.
	Firmware string

	// RAMFile backs guest RAM with a file rather than anonymous memory:
	// mapped shared while a template is made (the guest's memory is then
	// in the file), copy-on-write with RAMPrivate for a clone of one.
	RAMFile    string
	RAMPrivate bool
	// SaveTo is where SaveState writes a template's device state.
	SaveTo string
	// RestoreFrom is a template's saved device state: QEMU starts with
	// -incoming defer, and Start loads the state before resuming the guest.
	RestoreFrom string

	// RunAs is the uid:gid QEMU drops to once it has opened its files;
	// "" means DefaultRunAs.
	RunAs string
	// Cgroup is the host cgroup (path below the hierarchy's root) that
	// QEMU and virtiofsd start in; it must exist. "" leaves them in
	// berth's.
	Cgroup string

	// NIC, when not nil, gives the guest a virtio-net card.
	NIC *NIC
	// NetNS is the network namespace QEMU starts in (the one whose eth0
	// its card took over, see Network); nil for the caller's.
	NetNS *os.File
}

// NIC is the guest's network card: a virtio-net device on a tap.
type NIC struct {
	// MAC is the card's Ethernet address; "" leaves QEMU's default (a
	// template's guest: its clones get theirs from the agent).
	MAC string
	// Tap is the tap's queue QEMU sends and receives the card's frames
	// through; nil for a card without a peer (a template's guest).
	Tap *os.File
}

// Qboot is where Debian's qemu-system-data installs qboot, a minimal
// firmware that sets up PCI and jumps to the -kernel image without
// SeaBIOS's probing of the virtio disks and boot menu: under software
// emulation about 50 ms less of a berth guest's start.
const Qboot = "/usr/share/qemu/qboot.rom"

// DefaultFirmware is the firmware berth boots guests with: qboot where
// it is installed, else "" (QEMU's default).
func DefaultFirmware() string {
	if st, err := os.Stat(Qboot); err == nil && st.Mode().IsRegular() {
		return Qboot
	}
	return ""
}

// scratchSerial is the scratch disk's serial, by which the agent finds it.
const scratchSerial = "scratch"

// agentPortID is the QEMU id of the agent's virtio-serial port, which
// its VSERPORT_CHANGE events name.
const agentPortID = "agentport"

// AgentPort is the virtio-serial port name the guest agent serves on; the
// kernel command line carries it as berth.port=AgentPort.
const AgentPort = "agent"

// File descriptors QEMU inherits (exec.Cmd.ExtraFiles order).
const (
	fdQMP = 3 // listening socket Dir/qmp.sock
	// The agent's channel: the listening socket Dir/agent.sock
	// (virtio-serial), or /dev/vhost-vsock with the guest's CID set (vsock).
	fdAgent = 4
	// The write end of a pipe QEMU writes the serial console into; the
	// VM's owner keeps its last ConsoleLogMax bytes in ConsoleLog.
	fdConsole = 5
	fdShare0  = 6 // connected vhost-user socket of share 0, then 1, ...
	// A template's device state to restore (RestoreFrom) is fd 6: a VM
	// with a template has no shares.
	fdState = 6
	// Then the disks (diskFDs): each layer read-only, and the scratch
	// disk read-write and read-only in one fd set, from which QEMU,
	// chrooted, takes the mode it reopens the disk with (it does when a
	// template is saved or restored). Then the NIC's tap (tapFD).
)

// tapFD is the descriptor of cfg's tap, after the disks.
func tapFD(cfg Config) int {
	fd := diskFDs(cfg) + len(cfg.Layers)
	if cfg.Scratch != "" {
		fd += 2
	}
	return fd
}

// diskFDs is the first descriptor of cfg's disks, after the shares or
// the template's state.
func diskFDs(cfg Config) int {
	fd := fdShare0 + len(cfg.Shares)
	if cfg.RestoreFrom != "" {
		fd++
	}
	return fd
}

const defaultMemoryMiB = 256

// Paths of a VM's sockets.
func qmpSocket(dir string) string   { return filepath.Join(dir, "qmp.sock") }
func agentSocket(dir string) string { return filepath.Join(dir, "agent.sock") }
func shareSocket(dir string, i int) string {
	return filepath.Join(dir, "fs"+strconv.Itoa(i)+".sock")
}

func (cfg Config) consoleLog() string {
	if cfg.ConsoleLog != "" {
		return cfg.ConsoleLog
	}
	return filepath.Join(cfg.Dir, "console.log")
}

func (cfg Config) memory() int {
	if cfg.MemoryMiB > 0 {
		return cfg.MemoryMiB
	}
	return defaultMemoryMiB
}

func (cfg Config) cpus() int {
	if cfg.CPUs > 0 {
		return cfg.CPUs
	}
	return 1
}

func (cfg Config) qemu() string {
	if cfg.QEMU != "" {
		return cfg.QEMU
	}
	return "qemu-system-x86_64"
}

// escape doubles commas, QEMU's escape inside an option list value.
func escape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// KernelCmdline is the guest kernel's command line for cfg: it tells the
// agent its channel, berth.port=NAME (virtio-serial) or berth.vsock=PORT.
func KernelCmdline(cfg Config) string {
	channel := "berth.port=" + AgentPort
	if cfg.Transport == TransportVsock {
		channel = "berth.vsock=" + strconv.Itoa(AgentVsockPort)
	}
	args := append([]string{"console=ttyS0", "quiet", "panic=-1", channel}, cfg.Append...)
	return strings.Join(args, " ")
}

// CommandLine is QEMU's argv (argv[0] is the binary) for cfg. The guest is
// created paused (-S); Start resumes it once QMP is connected. QEMU
// inherits fd 3 (the QMP listening socket), fd 4 (the agent's listening
// socket, or with vsock the /dev/vhost-vsock descriptor that holds the
// guest's CID), fd 5 (the console's pipe), and from fd 6 on one connected
// vhost-user socket per share or a template's saved state.
func CommandLine(cfg Config) []string {
	accel, cpu := "tcg,tb-size="+strconv.Itoa(tcgCacheMiB), "max"
	if cfg.Accel == AccelKVM {
		accel, cpu = "kvm", "host"
	}
	mem := cfg.memory()
	name := cfg.ID
	if name == "" {
		name = "berth"
	}
	a := []string{cfg.qemu(),
		"-name", "berth-" + escape(name) + ",process=berth-" + escape(name),
		"-M", "q35", "-accel", accel,
		"-cpu", cpu,
		"-smp", strconv.Itoa(cfg.cpus()),
		"-m", strconv.Itoa(mem) + "M",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-S",
		// An fd set, not /dev/fd/N: QEMU keeps it close-on-exec, so
		// what QEMU runs (a template's exec: migration) does not hold
		// the pipe open after QEMU is gone. append=on: QEMU would
		// truncate it otherwise, which a pipe refuses.
		"-add-fd", "fd=" + strconv.Itoa(fdConsole) + ",set=" + strconv.Itoa(fdConsole),
		"-chardev", "file,id=console,path=/dev/fdset/" + strconv.Itoa(fdConsole) + ",append=on",
		"-serial", "chardev:console",
		"-chardev", "socket,id=qmp," + "fd=" + strconv.Itoa(fdQMP) + ",server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
		"-kernel", cfg.Kernel.Path,
		"-append", KernelCmdline(cfg),
	}
	a = append(a, confineArgs(cfg)...)
	if cfg.Initramfs != "" {
		a = append(a, "-initrd", cfg.Initramfs)
	}
	if cfg.Firmware != "" {
		a = append(a, "-bios", cfg.Firmware)
	}
	switch {
	case cfg.RAMFile != "":
		share := "on"
		if cfg.RAMPrivate {
			share = "off"
		}
		a = append(a,
			"-object", fmt.Sprintf("memory-backend-file,id=mem,size=%dM,mem-path=%s,share=%s", mem, escape(cfg.RAMFile), share),
			"-machine", "memory-backend=mem")
	case len(cfg.Shares) > 0:
		// vhost-user needs guest RAM that virtiofsd can map.
		a = append(a,
			"-object", fmt.Sprintf("memory-backend-memfd,id=mem,size=%dM,share=on", mem),
			"-numa", "node,memdev=mem")
	}
	if cfg.Transport == TransportVsock {
		a = append(a, "-device", "vhost-vsock-pci,id=vsock0,guest-cid="+strconv.FormatUint(uint64(cfg.GuestCID), 10)+",vhostfd="+strconv.Itoa(fdAgent))
	} else {
		// One serial port (number 1; QEMU keeps 0 for a console): the
		// guest driver then sets up 6 virtqueues rather than the
		// default 64.
		a = append(a,
			"-device", "virtio-serial-pci,id=vser0,max_ports=2",
			"-chardev", "socket,id=agent,fd="+strconv.Itoa(fdAgent)+",server=on,wait=off",
			"-device", "virtserialport,bus=vser0.0,chardev=agent,id="+agentPortID+",name="+AgentPort,
		)
	}
	fd := diskFDs(cfg)
	addFD := func(fd, set int) []string {
		return []string{"-add-fd", "fd=" + strconv.Itoa(fd) + ",set=" + strconv.Itoa(set)}
	}
	for i := range cfg.Layers {
		id := "layer" + strconv.Itoa(i)
		a = append(append(a, addFD(fd, fd)...),
			"-drive", "file=/dev/fdset/"+strconv.Itoa(fd)+",if=none,id="+id+",format=raw,readonly=on",
			"-device", "virtio-blk-pci,drive="+id+",serial="+id)
		fd++
	}
	if cfg.Scratch != "" {
		a = append(append(append(a, addFD(fd, fd)...), addFD(fd+1, fd)...),
			"-drive", "file=/dev/fdset/"+strconv.Itoa(fd)+",if=none,id=scratch,format=raw,discard=unmap",
			"-device", "virtio-blk-pci,drive=scratch,serial="+scratchSerial)
	}
	if cfg.RestoreFrom != "" {
		a = append(a, "-incoming", "defer")
	}
	for i, s := range cfg.Shares {
		id := "fs" + strconv.Itoa(i)
		a = append(a,
			"-chardev", "socket,id="+id+",fd="+strconv.Itoa(fdShare0+i),
			"-device", "vhost-user-fs-pci,chardev="+id+",tag="+escape(s.Tag))
	}
	if n := cfg.NIC; n != nil {
		// No option ROM: the guest boots from -kernel, and a ROM would
		// be one more RAM block for a template's state to carry.
		dev := "virtio-net-pci,id=nic0,romfile="
		if n.Tap != nil {
			// vhost off: it needs /dev/vhost-net, which QEMU could
			// not open chrooted (and some hosts lack).
			a = append(a, "-netdev", "tap,id=net0,vhost=off,fd="+strconv.Itoa(tapFD(cfg)))
			dev += ",netdev=net0"
		}
		if n.MAC != "" {
			dev += ",mac=" + n.MAC
		}
		a = append(a, "-device", dev)
	}
	return a
}
