package vm

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

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

// stop kills the helper's process group, which holds what it forked
// (virtiofsd serves from a child in a pid namespace of its own, which
// would otherwise outlive its parent until the guest's socket closes),
// and waits for the helper.
func (h *helper) stop() {
	if syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL) != nil {
		h.cmd.Process.Kill()
	}
	<-h.done
}

// virtiofsd (QEMU 7.2's, in C) sandboxes itself (sandbox=namespace): it
// makes new mount, pid and network namespaces, forks, and the child,
// which serves the guest, pivots into the shared directory, loads its
// seccomp filter and keeps only the capabilities a file server acting as
// any file's owner needs (virtiofsdServe), with an empty bounding set.
// berth confines it from its exec on, before any of that: through
// util-linux's setpriv it starts with no_new_privs and a bounding set of
// what it serves with and what its sandbox's set-up needs
// (virtiofsdSetup), nothing else (no CAP_SYS_RESOURCE: it is given a
// descriptor limit within its hard limit; no CAP_SYS_PTRACE,
// CAP_NET_ADMIN, CAP_SYS_MODULE, ...). Its parent, which only waits for
// the child, drops every capability. A read-only share's virtiofsd
// serves with CAP_DAC_READ_SEARCH alone (-o modcaps): it reads any file,
// changes none, and its directory is a read-only bind in a mount
// namespace of its own besides. It runs in the instance's host cgroup,
// as QEMU does.
var (
	virtiofsdServe   = []string{"chown", "dac_override", "fowner", "fsetid", "setgid", "setuid", "mknod", "setfcap"}
	virtiofsdServeRO = []string{"dac_read_search"}
	// new namespaces, mounts and pivot_root; the drop of its bounding set
	virtiofsdSetup = []string{"sys_admin", "setpcap"}
)

// virtiofsdNofile is virtiofsd's own default descriptor limit (it holds
// a descriptor per inode the guest knows); berth gives it no more than
// the hard limit it inherits, which it may raise its soft limit to
// without CAP_SYS_RESOURCE.
const virtiofsdNofile = 1000000

// virtiofsdArgs is the command line of virtiofsd (bin) for share s on
// descriptor 3, run through setpriv (see above).
func virtiofsdArgs(setpriv, bin string, s Share) []string {
	nofile := uint64(virtiofsdNofile)
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil && rl.Max < nofile {
		nofile = rl.Max
	}
	serve := virtiofsdServe
	fsd := []string{bin, "--fd=3", "-o", "source=" + s.Source, "-o", "sandbox=namespace", "-o", "cache=auto",
		"-o", "log_level=warn", "--rlimit-nofile=" + strconv.FormatUint(nofile, 10)}
	if s.ReadOnly {
		serve = virtiofsdServeRO
		var mod []string
		for _, c := range virtiofsdServe {
			mod = append(mod, "-"+c)
		}
		for _, c := range virtiofsdServeRO {
			mod = append(mod, "+"+c)
		}
		fsd = append(fsd, "-o", "modcaps="+strings.Join(mod, ":"))
	}
	bounding := "-all"
	for _, c := range append(slices.Clone(serve), virtiofsdSetup...) {
		bounding += ",+" + c
	}
	return append([]string{setpriv, "--nnp", "--inh-caps=-all", "--bounding-set=" + bounding, "--"}, fsd...)
}

// startVirtiofsd starts virtiofsd for share i on a socket it inherits,
// confined (virtiofsdArgs), and returns the connected end for QEMU. A
// read-only share runs virtiofsd in a private mount namespace (util-linux
// unshare) where Source is bind-mounted read-only, so the host refuses
// the guest's writes too.
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
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		return nil, fmt.Errorf("virtiofsd is confined through setpriv (util-linux): %w", errdefs.ErrUnavailable)
	}
	argv := virtiofsdArgs(setpriv, bin, s)
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
