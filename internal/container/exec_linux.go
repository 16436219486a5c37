package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Process is a process started in a running container by Exec. It is a
// child of the calling process.
type Process struct {
	cmd     *exec.Cmd
	console *os.File
	once    sync.Once
	exit    Exit
	err     error
}

// Pid is the process's pid on the host.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Console is the master of the process's terminal when p.Terminal was
// set, nil otherwise: a /dev/pts/N of the container's devpts, sized by
// p.ConsoleSize before the command ran. The caller owns it and closes it.
func (p *Process) Console() *os.File { return p.console }

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("exec process %d: not running: %w", p.Pid(), errdefs.ErrConflict)
		}
		return fmt.Errorf("exec process %d: signal %v: %w", p.Pid(), sig, err)
	}
	return nil
}

// Wait waits for the process and reports its status (128+N for signal N).
func (p *Process) Wait() (Exit, error) {
	p.once.Do(func() {
		err := p.cmd.Wait()
		var ee *exec.ExitError
		switch {
		case err == nil || errors.As(err, &ee):
			p.exit = exitOf(p.cmd.ProcessState.Sys().(syscall.WaitStatus))
		default:
			p.err = fmt.Errorf("exec process %d: wait: %w", p.Pid(), err)
		}
	})
	return p.exit, p.err
}

// execNamespaces are entered by the parent, in this order. The mount
// namespace is entered by the exec stage itself (execMountNSFD): the stage's
// binary must be loaded from the host's file system (a dynamically linked
// binary needs the host's loader), and a Go process can only switch mount
// namespace on a thread with its own fs_struct, which the stage has.
var execNamespaces = []struct {
	name string
	flag int
}{
	{"ipc", unix.CLONE_NEWIPC},
	{"uts", unix.CLONE_NEWUTS},
	{"net", unix.CLONE_NEWNET},
	{"pid", unix.CLONE_NEWPID},
	{"cgroup", unix.CLONE_NEWCGROUP},
}

// Exec starts p in the running container whose PID 1 has host pid pid1
// and whose cgroup is cgroupPath (see docs/design.md, "exec"); keepInit
// says that PID 1 is berth's init (Config.KeepInit), the workload its
// child, rather than the workload itself. It returns
// once the command runs; a command that is not found or cannot be invoked
// is an *ExecError (127 or 126). p carries the capabilities and
// no_new_privs to apply; the seccomp filter is berth's default when the
// container's workload runs under a filter (use ExecWithSeccomp to give
// the container's own profile). With p.Terminal the command's stdio is a
// terminal allocated in the container (stdio is not used): see
// Process.Console.
func Exec(ctx context.Context, pid1 int, keepInit bool, cgroupPath string, p *specs.Process, stdio Stdio) (*Process, error) {
	workload := pid1
	if keepInit {
		if c := firstChild(pid1); c > 0 {
			workload = c
		}
	}
	var filter *specs.LinuxSeccomp
	if seccompMode(workload) == 2 {
		filter = seccomp.Default()
	}
	return execIn(ctx, pid1, workload, cgroupPath, p, filter, stdio)
}

// ExecWithSeccomp is Exec into a container whose PID 1 is its workload
// (a detached one: berth-runtime's), with the seccomp profile given
// (nil: none).
func ExecWithSeccomp(ctx context.Context, pid1 int, cgroupPath string, p *specs.Process, filter *specs.LinuxSeccomp, stdio Stdio) (*Process, error) {
	return execIn(ctx, pid1, pid1, cgroupPath, p, filter, stdio)
}

// execIn is Exec into the container whose PID 1 is initPid on the host
// and whose workload, PID 1 itself or its child, is workload.
func execIn(ctx context.Context, initPid, workload int, cgroupPath string, p *specs.Process, filter *specs.LinuxSeccomp, stdio Stdio) (_ *Process, err error) {
	if p == nil || len(p.Args) == 0 {
		return nil, fmt.Errorf("exec: no command given: %w", errdefs.ErrInvalid)
	}
	if err := unix.Kill(initPid, 0); err != nil {
		return nil, fmt.Errorf("exec: container init %d: not running: %w", initPid, errdefs.ErrConflict)
	}
	joins, err := execJoins(initPid, workload)
	if err != nil {
		return nil, err
	}
	// A container with a user namespace of its own: the exec'd process
	// joins it first (a hand-made fork, userns_unsafe.go), or it would be
	// the host's root inside the container's other namespaces.
	userns := fmt.Sprintf("/proc/%d/ns/user", initPid)
	sameUser, err := sameFile(userns, "/proc/self/ns/user")
	if err != nil {
		return nil, fmt.Errorf("exec: container init %d: %w", initPid, unwrapErrno(err))
	}
	if !sameUser {
		joins = append([]nsJoin{{flag: unix.CLONE_NEWUSER, path: userns}}, joins...)
	}
	// The container's file system: its mount namespace, or, for a
	// container in the host's mount namespace (hostmnt_linux.go), its
	// init's root directory.
	chroot, err := sameFile(fmt.Sprintf("/proc/%d/ns/mnt", initPid), "/proc/self/ns/mnt")
	if err != nil {
		return nil, fmt.Errorf("exec: container init %d: %w", initPid, unwrapErrno(err))
	}
	fsPath := fmt.Sprintf("/proc/%d/ns/mnt", initPid)
	if chroot {
		fsPath = fmt.Sprintf("/proc/%d/root", initPid)
	}
	mntns, err := os.Open(fsPath)
	if err != nil {
		return nil, fmt.Errorf("exec: container init %d: %w", initPid, unwrapErrno(err))
	}
	defer mntns.Close()
	cg, err := cgroups.New(cgroupPath)
	if err != nil {
		return nil, err
	}
	parent, child, err := socketPair("exec")
	if err != nil {
		return nil, err
	}
	defer parent.Close()
	defer child.Close()
	cmd, view := stageCmd(verbExec, child, mntns)
	if view != nil {
		defer view.Close()
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	if !p.Terminal {
		setStdio(cmd, stdio)
	}
	cgfd, v2, err := cg.FD()
	if err != nil {
		return nil, err
	}
	if v2 {
		defer unix.Close(cgfd)
	}
	// Born in the cgroup on v2 (clone3), when the fork is os/exec's; for
	// a hand-made fork (a user namespace to join) added after. On v1 the
	// stage's thread that execs the command joins the cgroup alone, last
	// (cgroupJoin): the stage's other threads never count against a pids
	// limit, and a full one is "pids limit N reached", not a stage that
	// cannot start its threads. Not forked from a thread of ours that
	// joined the cgroup, as the workload is: the fork would fail at a
	// full pids limit, and the thread would freeze with a paused
	// container.
	if v2 && sameUser {
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = cgfd
	}
	ecfg := execConfig{Process: p, Seccomp: filter, Console: p.Terminal, Chroot: chroot}
	var cgFiles []*os.File
	// v2 has thread files under a pids limit only (the threaded cgroup
	// that holds it): the stage, born in the cgroup, then joins it as on
	// v1.
	t, err := cg.ThreadFiles()
	if v2 && errors.Is(err, errdefs.ErrNotSupported) {
		t, err = nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("exec: %w", err)
	}
	if t != nil {
		defer t.Close()
		pf, err := cg.PidsFiles()
		if err != nil {
			return nil, fmt.Errorf("exec: %w", err)
		}
		defer pf.Close()
		ecfg.CgroupJoins = len(t.Join)
		cgFiles = append(append(append(cgFiles, t.Join...), t.Leave...), pf.Current, pf.Max)
	}
	if err := startIn(cmd, joins); err != nil {
		if v2 && errors.Is(err, syscall.EAGAIN) {
			// clone3 into a cgroup at its pids limit.
			return nil, execPidsError(initPid, cgroupPath, cg)
		}
		return nil, fmt.Errorf("exec: %w", err)
	}
	child.Close()
	mntns.Close()
	defer func() {
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	stop := context.AfterFunc(ctx, func() { cmd.Process.Kill() })
	defer stop()
	if v2 && !sameUser {
		if err := cg.Add(cmd.Process.Pid); err != nil {
			return nil, fmt.Errorf("add exec process: %w", err)
		}
	}
	ch, err := newChannel(parent)
	if err != nil {
		return nil, err
	}
	defer ch.close()
	if err := ch.send(ecfg, cgFiles...); err != nil {
		cmd.Process.Kill()
		if werr := cmd.Wait(); werr != nil {
			err = stageExit(werr)
		}
		return nil, fmt.Errorf("exec: the exec stage died: %w", err)
	}
	// The socket is close-on-exec in the stage: end of file without a
	// message (but "console" with a terminal) means the command's execve
	// succeeded.
	var console *os.File
	defer func() {
		if err != nil && console != nil {
			console.Close()
		}
	}()
	m, rerr := recvConsole(ch, p.Terminal, &console)
	if rerr == nil {
		err := errorFromMessage(m)
		if pe, ok := err.(*PidsLimitError); ok {
			pe.Limit -= initPidsSlot(initPid, cgroupPath)
		}
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("exec: %w", ctx.Err())
	}
	if rerr != io.EOF {
		return nil, fmt.Errorf("exec: the exec stage: %w", rerr)
	}
	if p.Terminal && console == nil {
		return nil, fmt.Errorf("exec: the exec stage ran the command without a terminal")
	}
	return &Process{cmd: cmd, console: console}, nil
}

// execPidsError is the error of an exec stage that could not be born in
// the container's cgroup at its pids limit.
func execPidsError(initPid int, cgroupPath string, cg cgroups.Manager) error {
	pf, err := cg.PidsFiles()
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	defer pf.Close()
	_, limit, err := pf.Over()
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	return &PidsLimitError{Limit: limit - initPidsSlot(initPid, cgroupPath)}
}

// initPidsSlot is how many places under the cgroup's pids limit the
// container's init holds beside the workload's (cgroupResources): one
// when the init's main thread is outside the cgroup that holds the
// limit (an init that forks the workload, whose forking thread stays
// there: v1's pids hierarchy, v2's threaded cgroup below the
// container's), none when it is inside (an init that became the
// workload).
func initPidsSlot(initPid int, cgroupPath string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", initPid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		// ID:CONTROLLERS:PATH
		f := strings.SplitN(line, ":", 3)
		if len(f) == 3 && f[0] == "0" && f[1] == "" && cgroups.DetectMode() == cgroups.ModeV2 {
			// v2: the init that stays is in the container's cgroup,
			// the limit on the threaded one below it.
			if f[2] == cgroupPath {
				return 1
			}
			return 0
		}
		if len(f) == 3 && slices.Contains(strings.Split(f[1], ","), "pids") {
			if f[2] != cgroupPath {
				return 1
			}
			return 0
		}
	}
	return 0
}

// execJoins lists the container's namespaces that differ from ours. The
// cgroup namespace is the workload's: an init that stays has none of its
// own.
func execJoins(initPid, workload int) ([]nsJoin, error) {
	var joins []nsJoin
	for _, ns := range execNamespaces {
		pid := initPid
		if ns.name == "cgroup" {
			pid = workload
		}
		path := fmt.Sprintf("/proc/%d/ns/%s", pid, ns.name)
		same, err := sameFile(path, "/proc/self/ns/"+ns.name)
		if err != nil {
			return nil, fmt.Errorf("exec: container init %d: %w", initPid, unwrapErrno(err))
		}
		if !same {
			joins = append(joins, nsJoin{flag: ns.flag, path: path})
		}
	}
	return joins, nil
}

// firstChild is the oldest child of pid, 0 when it has none. Children
// are listed per thread: the workload is the child of the init's thread
// that forked it until that thread has ended. While that thread ends,
// its children move to another thread and for a moment show in no list;
// so a live pid with no child is asked again, for up to 100 ms.
func firstChild(pid int) int {
	for try := 0; ; try++ {
		c := listedChild(pid)
		if c > 0 || try == 20 || unix.Kill(pid, 0) != nil {
			return c
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// listedChild is the first child that pid's threads list, 0 for none.
func listedChild(pid int) int {
	tids := []string{strconv.Itoa(pid)}
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid)); err == nil {
		for _, e := range ents {
			tids = append(tids, e.Name())
		}
	}
	for _, tid := range tids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, tid))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			c, _ := strconv.Atoi(f[0])
			return c
		}
	}
	return 0
}

func sameFile(a, b string) (bool, error) {
	var sa, sb unix.Stat_t
	if err := unix.Stat(a, &sa); err != nil {
		return false, err
	}
	if err := unix.Stat(b, &sb); err != nil {
		return false, err
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino, nil
}

// seccompMode is the Seccomp field of /proc/PID/status (0 when unknown).
func seccompMode(pid int) int {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Seccomp:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}
