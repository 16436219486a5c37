package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/sigfilter"
)

// deviceWait bounds how long boot waits for a device the host attached
// (the agent's port, a disk) to show up after its driver loaded. It is a
// guard against a broken host configuration, not a tuning knob.
const deviceWait = 60 * time.Second

// devicePoll is how often boot looks for such a device: it appears a few
// milliseconds after its driver loaded, as the kernel processes QEMU's
// announcement.
const devicePoll = 2 * time.Millisecond

// console is where PID 1 reports; the kernel's /dev/console (ttyS0).
var console io.Writer = os.Stderr

// logf prints one line on the console.
func logf(format string, args ...any) {
	fmt.Fprintf(console, "berth-agent: "+format+"\n", args...)
}

// initMain boots the guest, serves the host and powers off; it never
// returns.
func initMain() {
	g, port, err := boot()
	if err != nil {
		logf("boot failed: %v", err)
		powerOff()
	}
	err = agent.Serve(port, g)
	if err != nil {
		logf("%v", err)
		_ = g.Shutdown()
	}
	unmountAll()
	powerOff()
}

// boot mounts the early file systems, loads the modules and opens the
// agent port.
func boot() (*guest, io.ReadWriteCloser, error) {
	start := bootTime()
	ignoreSignals()
	if err := mountEarly(); err != nil {
		return nil, nil, err
	}
	ignoreUncaught()
	// Last, over every handler: what the guest's processes send PID 1
	// never reaches the runtime, not even a SIGSEGV whose sigqueue'd
	// siginfo the runtime would take for a fault.
	sigfilter.Install()
	if c, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
		console = c
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return nil, nil, fmt.Errorf("read /proc/cmdline: %w", err)
	}
	tracing = cmdlineValue(string(cmdline), "berth.trace", "") != ""
	if tracing {
		traceKernel()
		traceAt(start, "agent starts")
		container.Trace = func(step string, at time.Time) {
			d := time.Since(at)
			ts := bootTime()
			ns := ts.Nano() - d.Nanoseconds()
			traceAt(unix.NsecToTimespec(ns), "engine: "+step)
		}
		tracef("early mounts done")
	}
	ownNofile()
	ch, err := parseChannel(string(cmdline))
	if err != nil {
		return nil, nil, err
	}
	mods, err := readModuleList(moduleList)
	if err != nil {
		return nil, nil, err
	}
	g := newGuest()
	first, skip := ch.modules()
	if g.modules, err = insertModules(selectModules(mods, skip), first); err != nil {
		return nil, nil, err
	}
	template := cmdlineValue(string(cmdline), "berth.template", "") != ""
	if template {
		// A template's guest is saved as soon as the port opens: all
		// the work that does not depend on the workload is done first,
		// so that no clone does it again: modules, cgroups and, when
		// the host names them (berth.root=LAYER,LAYER/SCRATCH, disk
		// serials), the root's disks.
		go g.prepareCgroups()
		root, err := parseRoot(cmdlineValue(string(cmdline), "berth.root", ""))
		if err != nil {
			return nil, nil, err
		}
		if root != nil {
			if err := g.premount(root); err != nil {
				return nil, nil, err
			}
		}
		if err := g.modules.Wait(); err != nil {
			return nil, nil, err
		}
		<-g.cgReady
		if root != nil {
			g.premountInit()
		}
		// The workload's init, prestarted meanwhile, finishes its
		// start here rather than in every clone.
		g.pre.Settle(10 * time.Second)
		tracef("workload init settled")
		tracef("ready to be saved as a template")
	}
	port, err := ch.open()
	if err != nil {
		return nil, nil, err
	}
	tracef("agent channel open: " + ch.String())
	if !template {
		go g.prepareCgroups()
	}
	return g, port, nil
}

// parseRoot reads berth.root's value, LAYER[,LAYER...][/SCRATCH] in disk
// serials; nil for "".
func parseRoot(v string) (*agent.Root, error) {
	if v == "" {
		return nil, nil
	}
	layers, scratch, hasScratch := strings.Cut(v, "/")
	r := &agent.Root{Layers: strings.Split(layers, ","), Scratch: scratch}
	if slices.Contains(r.Layers, "") || (hasScratch && scratch == "") {
		return nil, fmt.Errorf("berth.root=%q: want LAYER[,LAYER...][/SCRATCH], disk serials: %w", v, errdefs.ErrInvalid)
	}
	return r, nil
}

// ignoreSignals keeps PID 1 alive whatever signals the guest's root
// user sends it. The kernel delivers to init only the signals it handles,
// and Go's runtime handles them all, by default by exiting (SIGTERM,
// SIGINT, SIGHUP, SIGPIPE on stdout, ...) or crashing (SIGQUIT, and
// SIGABRT, SIGSEGV and the like when sent with kill), which panics the
// guest kernel ("Attempted to kill init"). Asking for every signal on a
// channel that nobody heeds turns all of that off; faults the agent
// really causes still crash it. signal.Ignore would not do: an ignored
// disposition is inherited by the processes the agent starts, a handled
// one is reset to the default at their exec. The few signals Go does not
// catch are ignored, but not for the processes the agent starts
// (sigaction_unsafe_linux.go).
func ignoreSignals() {
	ch := make(chan os.Signal, 16)
	signal.Notify(ch)
	go func() {
		for range ch {
		}
	}()
}

func mountEarly() error {
	if err := rootOverSelf(); err != nil {
		return err
	}
	for _, m := range []struct{ src, dst, typ, data string }{
		{"proc", "/proc", "proc", ""},
		{"sysfs", "/sys", "sysfs", ""},
		{"devtmpfs", "/dev", "devtmpfs", "mode=0755"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", m.dst, err)
		}
		if err := unix.Mount(m.src, m.dst, m.typ, unix.MS_NOSUID, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.typ, m.dst, err)
		}
	}
	return nil
}

// rootOverSelf makes the agent's root a bind mount of the initramfs
// over itself. The kernel's rootfs is no mount one can pivot_root away
// from (it has no parent), and the container engine pivots the
// workload's mount namespace, a copy of the agent's, into its root; a
// mount on top of rootfs can be. Like switch_root: bind, step into it,
// move it over "/", chroot.
func rootOverSelf() error {
	const self = "/.root"
	if err := os.MkdirAll(self, 0o700); err != nil {
		return err
	}
	if err := unix.Mount("/", self, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind the initramfs: %w", err)
	}
	if err := unix.Chdir(self); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move the initramfs's bind over /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot into the initramfs's bind: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	// Shared: what the agent mounts later (the workload's root, its
	// shares) reaches the mount namespace of a workload init started
	// before (prestart), until that init makes its tree private when
	// its configuration comes.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("make the agent's mounts shared: %w", err)
	}
	return nil
}

// cmdlineValue returns the value of key=value on the kernel command line.
func cmdlineValue(cmdline, key, def string) string {
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return def
}

// openPort finds the virtio-serial port called name (there is no udev to
// make /dev/virtio-ports/NAME: its /sys/class/virtio-ports/vportNpM/name
// says which device node it is) and opens it. Ports appear shortly after
// virtio_console loads, when the device announces them.
func openPort(name string) (io.ReadWriteCloser, error) {
	deadline := time.Now().Add(deviceWait)
	for {
		ents, _ := os.ReadDir("/sys/class/virtio-ports")
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join("/sys/class/virtio-ports", e.Name(), "name"))
			if err != nil || strings.TrimSpace(string(b)) != name {
				continue
			}
			f, err := os.OpenFile("/dev/"+e.Name(), os.O_RDWR, 0)
			if err == nil {
				return &portConn{f: f}, nil
			}
			if !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("open agent port %s: %w", e.Name(), err)
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no virtio-serial port named %q (QEMU: -device virtserialport,name=%s): %w", name, name, errdefs.ErrNotFound)
		}
		time.Sleep(devicePoll)
	}
}

// portPoll is how often portConn reads the port again while no host is
// connected.
const portPoll = 2 * time.Millisecond

// portConn is a virtio-serial port as a connection. Until the host has
// sent its first byte a read of the port returns EOF whenever no host is
// connected to the chardev; portConn waits for the host instead.
type portConn struct {
	f      *os.File
	mu     sync.Mutex
	gotAny bool
}

func (p *portConn) Read(b []byte) (int, error) {
	for {
		n, err := p.f.Read(b)
		p.mu.Lock()
		if n > 0 {
			p.gotAny = true
		}
		waiting := !p.gotAny
		p.mu.Unlock()
		if n > 0 || !waiting || !errors.Is(err, io.EOF) {
			return n, err
		}
		// The host's hello waits out this sleep: after a restore the
		// guest is already here when the host connects. It spins only
		// while no host is connected, before the host's first byte.
		time.Sleep(portPoll)
	}
}

func (p *portConn) Write(b []byte) (int, error) { return p.f.Write(b) }
func (p *portConn) Close() error                { return p.f.Close() }

// powerOff syncs and powers the guest off; QEMU then exits.
func powerOff() {
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Not reached unless reboot failed: exiting PID 1 panics the kernel,
	// which with panic=-1 and -no-reboot also ends QEMU.
	logf("power off failed")
	os.Exit(1)
}

// lines reads a small text file's lines.
func lines(p string) ([]string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		out = append(out, s.Text())
	}
	return out, s.Err()
}

// ownNofile makes the agent's raised RLIMIT_NOFILE its own setting, so
// that os/exec never puts back Go's start-up value in a child (the
// container engine's stages, which set the spec's limits themselves).
func ownNofile() {
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil {
		_ = unix.Prlimit(0, unix.RLIMIT_NOFILE, &rl, nil)
	}
}
