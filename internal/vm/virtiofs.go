package vm

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"github.com/berth-dev/berth/internal/errdefs"
)

// DefaultVirtiofsd is Debian's virtiofsd (shipped with qemu-system-x86).
const DefaultVirtiofsd = "/usr/lib/qemu/virtiofsd"

// helper is a child process the VM owns.
type helper struct {
	cmd    *exec.Cmd
	stderr *tailBuffer
	done   chan struct{}
}

func (h *helper) stop() {
	h.cmd.Process.Kill()
	<-h.done
}

// startVirtiofsd starts virtiofsd for share i on a socket it inherits, and
// returns the connected end for QEMU. A read-only share runs virtiofsd in a
// private mount namespace (util-linux unshare) where Source is bind-mounted
// read-only, so the host refuses the guest's writes too.
func (v *VM) startVirtiofsd(i int, s Share) (*os.File, error) {
	bin := v.cfg.Virtiofsd
	if bin == "" {
		bin = DefaultVirtiofsd
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("virtiofsd not found at %s (apt-get install qemu-system-x86): %w", bin, errdefs.ErrUnavailable)
	}
	if !isDir(s.Source) {
		return nil, fmt.Errorf("not a directory: %w", errdefs.ErrNotFound)
	}
	if s.Tag == "" {
		return nil, fmt.Errorf("no virtio-fs tag: %w", errdefs.ErrInvalid)
	}
	sock := shareSocket(v.cfg.Dir, i)
	lf, err := listenFile(sock)
	v.sockets = append(v.sockets, sock)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	argv := []string{bin, "--fd=3", "-o", "source=" + s.Source, "-o", "cache=auto", "-o", "log_level=warn"}
	if s.ReadOnly {
		unshare, err := exec.LookPath("unshare")
		if err != nil {
			return nil, fmt.Errorf("read-only share needs unshare (util-linux): %w", errdefs.ErrUnavailable)
		}
		argv = append([]string{unshare, "--mount", "--propagation", "private", "--",
			"/bin/sh", "-c", `mount --bind -o ro "$1" "$1" && shift && exec "$@"`, "sh", s.Source}, argv...)
	}
	h := &helper{cmd: exec.Command(argv[0], argv[1:]...), stderr: &tailBuffer{}, done: make(chan struct{})}
	h.cmd.ExtraFiles = []*os.File{lf}
	h.cmd.Stdout, h.cmd.Stderr = h.stderr, h.stderr
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := startIn(h.cmd, v.cfg.Cgroup, nil); err != nil {
		return nil, fmt.Errorf("starting virtiofsd: %v: %w", err, errdefs.ErrUnavailable)
	}
	go func() { h.cmd.Wait(); close(h.done) }()
	v.virtiofsd = append(v.virtiofsd, h)

	// Connect now: the connection waits in the backlog until virtiofsd
	// accepts it, and QEMU gets it ready-made, whatever the path's length.
	c, err := dialUnix(sock)
	if err != nil {
		return nil, fmt.Errorf("virtiofsd socket: %w", err)
	}
	defer c.Close()
	f, err := c.(interface{ File() (*os.File, error) }).File()
	if err != nil {
		return nil, err
	}
	os.Remove(sock) // virtiofsd keeps listening on the unlinked socket
	return f, nil
}
