package main

// The peer of `berth bench vm`: plain QEMU, with the same kernel, machine
// type, accelerator, RAM and firmware as berth's guests, running a busybox
// /init that does the least a guest can do. It boots and powers off, or is
// saved once while it waits on a serial port and then restored from that
// file for each sample: a user's own QEMU "snapshot restore".

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/initramfs"
	"github.com/berth-dev/berth/internal/qmp"
	"github.com/berth-dev/berth/internal/vm"
)

// plainGuest is the peer's guest: its command line and saved state.
type plainGuest struct {
	dir   string
	args  []string // qemu and the options every run shares
	state string   // the saved guest, restored with -incoming
}

// plainStep bounds each step of preparing or running the plain guest.
const plainStep = 2 * time.Minute

// plainInit is the guest's /init. Booted with bench=boot (a kernel
// parameter the kernel hands to init as an environment variable) it powers
// off at once; otherwise it says "ready" on its second serial port, waits
// for a line there, and then powers off.
const plainInit = `#!/bin/busybox sh
[ "$bench" = boot ] && /bin/busybox poweroff -f
echo ready > /dev/ttyS1
read line < /dev/ttyS1
/bin/busybox poweroff -f
`

// newPlainGuest builds the guest in dir and saves it once, waiting on its
// serial port.
func newPlainGuest(guest vm.Guest, dir string) (*plainGuest, error) {
	initrd := filepath.Join(dir, "plain.cpio")
	if err := plainInitramfs(initrd); err != nil {
		return nil, err
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return nil, fmt.Errorf("plain QEMU: %v", err)
	}
	cpu := "max"
	if guest.Accel == vm.AccelKVM {
		cpu = "host"
	}
	p := &plainGuest{dir: dir, state: filepath.Join(dir, "state")}
	p.args = []string{qemu, "-M", "q35,accel=" + string(guest.Accel), "-cpu", cpu, "-m", "256M", "-smp", "1",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-serial", "file:/dev/null",
		"-kernel", guest.Kernel.Path, "-initrd", initrd}
	if fw := vm.DefaultFirmware(); fw != "" {
		p.args = append(p.args, "-bios", fw) // berth's firmware, so that the ratio is berth's own cost
	}
	if err := p.save(); err != nil {
		return nil, fmt.Errorf("plain QEMU: save the guest: %v", err)
	}
	return p, nil
}

// boot is one sample of the peer's cold boot: boot, power off, exit.
func (p *plainGuest) boot() error {
	args := append(append([]string{}, p.args...), "-append", "console=ttyS0 quiet panic=-1 bench=boot")
	cmd := qemuCommand(args)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// waiting is the command line of a guest that waits on its serial port,
// with QMP and that port on sockets in dir, plus extra.
func (p *plainGuest) waiting(extra ...string) (cmd *exec.Cmd, serial, control string) {
	serial, control = filepath.Join(p.dir, "serial.sock"), filepath.Join(p.dir, "qmp.sock")
	os.Remove(serial)
	os.Remove(control)
	args := append(append([]string{}, p.args...), "-append", "console=ttyS0 quiet panic=-1",
		"-chardev", "socket,id=s1,path="+serial+",server=on,wait=off", "-serial", "chardev:s1",
		"-qmp", "unix:"+control+",server=on,wait=off")
	args = append(args, extra...)
	return qemuCommand(args), serial, control
}

// qemuCommand runs the peer's QEMU, which dies with berth: a benchmark
// killed half way leaves no guest behind.
func qemuCommand(args []string) *exec.Cmd {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// plainRun is one QEMU of the plain guest waiting on its serial port,
// with that port and QMP connected.
type plainRun struct {
	cmd    *exec.Cmd
	out    strings.Builder
	exited chan error
	ended  bool // QEMU exited and was reaped
	port   net.Conn
	qmp    *qmp.Client
}

// start starts QEMU with extra options and connects to it.
func (p *plainGuest) start(ctx context.Context, extra ...string) (*plainRun, error) {
	cmd, serial, control := p.waiting(extra...)
	r := &plainRun{cmd: cmd, exited: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = &r.out, &r.out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { r.exited <- cmd.Wait() }()
	var err error
	if r.port, err = dialWhenUp(ctx, serial, r.exited); err != nil {
		r.close()
		return nil, fmt.Errorf("%v: %s", err, r.out.String())
	}
	if r.qmp, err = dialQMP(ctx, control, r.exited); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

// close disconnects and kills QEMU unless it has exited.
func (r *plainRun) close() {
	if r.qmp != nil {
		r.qmp.Close()
	}
	if r.port != nil {
		r.port.Close()
	}
	if !r.ended {
		r.cmd.Process.Kill()
		<-r.exited
	}
}

// save boots the guest until it waits on its serial port and saves it to
// p.state through QMP's migrate.
func (p *plainGuest) save() error {
	ctx, cancel := context.WithTimeout(context.Background(), plainStep)
	defer cancel()
	r, err := p.start(ctx)
	if err != nil {
		return err
	}
	defer r.close()
	r.port.SetReadDeadline(time.Now().Add(plainStep))
	if line, err := bufio.NewReader(r.port).ReadString('\n'); err != nil || !strings.Contains(line, "ready") {
		return fmt.Errorf("the guest never said ready (%q, %v): %s", line, err, r.out.String())
	}
	c := r.qmp
	if err := c.Stop(ctx); err != nil {
		return err
	}
	if err := c.Migrate(ctx, "exec:cat > "+p.state); err != nil {
		return err
	}
	for {
		m, err := c.QueryMigrate(ctx)
		if err != nil {
			return err
		}
		switch m.Status {
		case "completed":
			return c.Quit(ctx)
		case "failed", "cancelled":
			return fmt.Errorf("migrate: %s %s", m.Status, m.ErrorDesc)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// restore is one sample of the peer's restore: QEMU loads the saved
// guest, which, once running, is told to go on and powers off.
func (p *plainGuest) restore() error {
	ctx, cancel := context.WithTimeout(context.Background(), plainStep)
	defer cancel()
	r, err := p.start(ctx, "-incoming", "exec:cat "+p.state)
	if err != nil {
		return err
	}
	defer r.close()
	// A line sent before the saved guest is loaded would be lost in the
	// serial device's state: wait until it is loaded, and resume it (it
	// was saved stopped, as a snapshot is).
	for {
		st, err := r.qmp.QueryStatus(ctx)
		if err != nil {
			return err
		}
		if st.Status != "inmigrate" {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := r.qmp.Cont(ctx); err != nil {
		return err
	}
	// Right after the resume the serial port drops what it is sent, whole
	// or in part (seen with QEMU 7.2's 8250 under TCG): send the line
	// until the guest powers off. The lines after the first it reads are
	// never read.
	for {
		r.port.Write([]byte("go\n")) // fails once QEMU is gone: then it exits
		select {
		case err := <-r.exited:
			r.ended = true
			if err != nil {
				return fmt.Errorf("%v: %s", err, r.out.String())
			}
			return nil
		case <-ctx.Done():
			return fmt.Errorf("the restored guest did not power off: %s", r.out.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// dialWhenUp connects to the unix socket QEMU listens on at path, once it
// exists.
func dialWhenUp(ctx context.Context, path string, exited <-chan error) (net.Conn, error) {
	for {
		if c, err := net.Dial("unix", path); err == nil {
			return c, nil
		}
		select {
		case err := <-exited:
			return nil, fmt.Errorf("qemu exited at start (%v)", err)
		case <-ctx.Done():
			return nil, fmt.Errorf("no socket %s: %v", path, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

func dialQMP(ctx context.Context, path string, exited <-chan error) (*qmp.Client, error) {
	conn, err := dialWhenUp(ctx, path, exited)
	if err != nil {
		return nil, err
	}
	c, err := qmp.Dial(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// plainInitramfs writes the plain guest's initramfs: busybox, its /init
// and the device nodes it uses.
func plainInitramfs(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return initramfs.Build(f, []initramfs.File{
		{Path: "bin", Dir: true, Mode: 0o755},
		{Path: "bin/busybox", SourcePath: "/bin/busybox", Mode: 0o755},
		{Path: "dev", Dir: true, Mode: 0o755},
		{Path: "dev/console", Mode: os.ModeDevice | os.ModeCharDevice | 0o600, Major: 5, Minor: 1},
		{Path: "dev/ttyS1", Mode: os.ModeDevice | os.ModeCharDevice | 0o600, Major: 4, Minor: 65},
		{Path: "init", Mode: 0o755, Data: []byte(plainInit)},
	})
}
