package container

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/seccomp"
	"github.com/berth-dev/berth/internal/sigfilter"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// forwarded are the signals the init passes on to the workload: those
// the host sends (berth stop, kill), which is all that reaches it once
// the filter is in (catchSignals). The last ones would crash the init
// (a traceback on the workload's stderr) if they were not asked for.
var forwarded = []os.Signal{
	unix.SIGHUP, unix.SIGINT, unix.SIGQUIT, unix.SIGABRT, unix.SIGUSR1, unix.SIGUSR2,
	unix.SIGALRM, unix.SIGTERM, unix.SIGCONT, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU,
	unix.SIGWINCH, unix.SIGIO, unix.SIGPWR, unix.SIGVTALRM, unix.SIGPROF, unix.SIGXCPU,
	unix.SIGXFSZ, unix.SIGTRAP, unix.SIGSYS,
	unix.SIGILL, unix.SIGBUS, unix.SIGFPE, unix.SIGSEGV, unix.SIGSTKFLT,
}

// catchSignals asks for the forwarded signals, then, as PID 1 of the
// container's pid namespace, drops every signal a process of the
// container sends before the runtime sees it (package sigfilter): the
// workload can neither end the init nor have a signal it sends the init
// come back to it.
func catchSignals() chan os.Signal {
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs, forwarded...)
	if os.Getpid() == 1 {
		sigfilter.Install()
	}
	return sigs
}

// startWorkload starts the workload (step 5) from a thread of its own: the
// thread joins the container's cgroup (unless the init is in it already)
// and unshares the cgroup namespace, drops capabilities, sets
// no_new_privs and loads seccomp, then forks the command. The thread is
// never unlocked, so it ends with its goroutine and the init's other
// threads keep their capabilities (to signal the workload whatever its
// user). With sp, a spawner made ready during setup, only the fork is
// left to do.
func startWorkload(cfg *initConfig, w *workload, sp *spawner) (int, error) {
	if sp == nil {
		sp = newSpawner(cfg, w.cgroupMoves, false, nil)
	}
	return sp.spawn(cfg, w)
}

// spawner is the init's thread that forks the workload. Made early, with
// the seccomp program (nil: none), it enters the cgroup and applies the
// workload's security at once, while the main thread builds the root; the command
// is resolved (on the main thread, with the init's capabilities: the
// threads share root and working directory) when the fork is asked for.
type spawner struct {
	early bool // the thread is in the cgroup, with the workload's security
	fork  chan spawnRequest
}

type spawnRequest struct {
	w      *workload
	path   string // resolved by the caller when the spawner is early
	cancel bool   // nothing to fork (the command was not found): end
	res    chan spawnResult
}

type spawnResult struct {
	pid int
	err error
}

func newSpawner(cfg *initConfig, moves *cgroups.ThreadFiles, early bool, prog []unix.SockFilter) *spawner {
	sp := &spawner{early: early, fork: make(chan spawnRequest)}
	go func() {
		runtime.LockOSThread()
		var err error
		if early {
			if err = enterCgroup(cfg, moves); err == nil {
				err = applySecurity(cfg.Spec.Process, cfg.Spec.Linux.Seccomp, prog, true)
			}
		}
		req := <-sp.fork
		if req.cancel {
			req.res <- spawnResult{}
			return
		}
		var pid int
		switch {
		case err != nil:
		case early:
			pid, err = forkWorkload(cfg, req.w, req.path)
		default:
			pid, err = spawn(cfg, req.w)
		}
		req.res <- spawnResult{pid, err}
		if err == nil {
			if !early {
				prog = req.w.filter
			}
			filterInit(cfg, prog)
			req.w.pidsSlot.hold()
		}
	}()
	return sp
}

// filterInit puts the workload's seccomp filter on every thread of the
// init, once the workload runs: a workload allowed to ptrace its PID 1
// (CAP_SYS_PTRACE) must not find there a process without its filter.
// This thread's filter is in place, so the kernel can synchronise the
// others (SECCOMP_FILTER_FLAG_TSYNC) to a copy stacked on it.
func filterInit(cfg *initConfig, prog []unix.SockFilter) {
	if p := cfg.Spec.Linux.Seccomp; p != nil && len(prog) > 0 {
		_ = seccomp.Install(prog, p)
	}
}

// spawn asks the spawner's thread for the fork and returns the pid.
func (sp *spawner) spawn(cfg *initConfig, w *workload) (int, error) {
	req := spawnRequest{w: w, res: make(chan spawnResult, 1)}
	if sp.early {
		p := cfg.Spec.Process
		path, err := lookPath(p.Args[0], envPath(w.env), p.Cwd)
		if err != nil {
			req.cancel = true
			sp.fork <- req // lets the thread end
			<-req.res
			return 0, err
		}
		setUmask(p)
		req.path = path
	}
	sp.fork <- req
	r := <-req.res
	return r.pid, r.err
}

func spawn(cfg *initConfig, w *workload) (int, error) {
	spec, p := cfg.Spec, cfg.Spec.Process
	if cfg.HostMount {
		// This thread forks the workload: it must be where the init's
		// main thread went at the end of setup.
		if err := rootInHost(w.tree); err != nil {
			return 0, err
		}
	}
	if err := enterCgroup(cfg, w.cgroupMoves); err != nil {
		return 0, err
	}
	path, err := lookPath(p.Args[0], envPath(w.env), p.Cwd)
	if err != nil {
		return 0, err
	}
	setUmask(p)
	if err := applySecurity(p, spec.Linux.Seccomp, w.filter, true); err != nil {
		return 0, err
	}
	return forkWorkload(cfg, w, path)
}

// setUmask sets the workload's umask (022 unless the spec says).
func setUmask(p *specs.Process) {
	umask := 0o022
	if p.User.Umask != nil {
		umask = int(*p.User.Umask)
	}
	unix.Umask(umask)
}

// forkWorkload forks and execs the workload at path from the calling
// thread, then takes the thread out of the container's cgroup.
func forkWorkload(cfg *initConfig, w *workload, path string) (int, error) {
	p := cfg.Spec.Process
	groups := make([]uint32, len(w.cred.Groups))
	copy(groups, w.cred.Groups)
	stdio := [3]*os.File{os.Stdin, os.Stdout, os.Stderr}
	if w.console != nil {
		stdio = [3]*os.File{w.console.slave, w.console.slave, w.console.slave}
	}
	// syscall.ForkExec, not os/exec: the init needs no Process (it reaps
	// with wait4), and os/exec's first start probes pidfd support with a
	// clone of its own, which holds the caller's P meanwhile.
	pid, err := syscall.ForkExec(path, p.Args, &syscall.ProcAttr{
		Dir:   p.Cwd,
		Env:   w.env,
		Files: []uintptr{stdio[0].Fd(), stdio[1].Fd(), stdio[2].Fd()},
		Sys: &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: w.cred.UID, Gid: w.cred.GID, Groups: groups, NoSetGroups: w.cred.NoSetGroups},
			Setsid:     true,
			// Ctty is the terminal's fd in the child: its stdin.
			Setctty: w.console != nil,
			Ctty:    0,
		},
	})
	leaveCgroup(cfg, w)
	if err != nil {
		return 0, execError(p.Args[0], err)
	}
	return pid, nil
}

// enterCgroup puts the calling thread in the container's cgroup, when
// the init is not (v1: the thread alone), and then in a cgroup namespace
// of its own when the spec asks for a new one: its root is that cgroup.
func enterCgroup(cfg *initConfig, moves *cgroups.ThreadFiles) error {
	if moves != nil {
		if err := cgroups.Move(moves.Join); err != nil {
			return fmt.Errorf("join the container's cgroup: %w", err)
		}
	}
	if newCgroupNS(cfg) {
		if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
			return fmt.Errorf("cgroup namespace: %w", err)
		}
	}
	return nil
}

// leaveCgroup takes the thread that forked the workload back out of the
// container's cgroup. Under a pids limit it stays in the pids hierarchy
// (first in Leave) while the workload lives (w.pidsSlot): the fork
// needed it there, the cgroup's limit counts it (one more than the
// spec's: cgroupResources), and so the workload gets the spec's number
// of processes, as with runc, and no more.
func leaveCgroup(cfg *initConfig, w *workload) {
	if w.cgroupMoves == nil {
		return
	}
	leave := w.cgroupMoves.Leave
	if pidsLimit(cfg.Spec) > 0 && len(leave) > 0 {
		w.pidsSlot = &pidsSlot{leave: leave[0], release: make(chan struct{}), done: make(chan struct{})}
		leave = leave[1:]
		w.cgroupMoves.Leave = leave
	}
	cgroups.Move(leave)
	w.cgroupMoves.Close()
	w.cgroupMoves = nil
}

// pidsSlot is the init's place under a v1 pids limit: the thread that
// forked the workload, parked in the cgroup's pids hierarchy.
type pidsSlot struct {
	leave         *os.File // the pids hierarchy's Leave file
	release, done chan struct{}
}

// hold parks the calling thread, the one in the cgroup, until free.
func (s *pidsSlot) hold() {
	if s == nil {
		return
	}
	<-s.release
	cgroups.Move([]*os.File{s.leave})
	s.leave.Close()
	close(s.done)
}

// free takes the parked thread out of the cgroup.
func (s *pidsSlot) free() {
	if s == nil {
		return
	}
	close(s.release)
	<-s.done
}

func newCgroupNS(cfg *initConfig) bool {
	for _, ns := range cfg.Spec.Linux.Namespaces {
		if ns.Type == "cgroup" && ns.Path == "" {
			return true
		}
	}
	return false
}

// execError classifies a failed start: not found is 127, anything else
// about invoking the file (permission, format, a directory) is 126.
func execError(name string, err error) error {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return fmt.Errorf("start %q: %w", name, err)
	}
	code := 126
	if errno == syscall.ENOENT || errno == syscall.ENOTDIR {
		code = 127
	}
	return &ExecError{Path: name, Err: errno, Code: code}
}

// lookPath resolves the command in the container's file system with the
// container's PATH: a name with a slash is taken as it is (relative to
// cwd), a bare name is searched in path. Not found is a 127 error; a file
// that exists but is a directory or has no execute bit is a 126 one.
func lookPath(name, path, cwd string) (string, error) {
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) && cwd != "" {
			p = filepath.Join(cwd, p)
		}
		if err := executable(p); err != nil {
			return "", execError(name, err)
		}
		return p, nil
	}
	var denied error
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		if !filepath.IsAbs(dir) && cwd != "" {
			dir = filepath.Join(cwd, dir)
		}
		p := filepath.Join(dir, name)
		err := executable(p)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ENOTDIR) && denied == nil {
			denied = err
		}
	}
	if denied != nil {
		return "", execError(name, denied)
	}
	return "", execError(name, syscall.ENOENT)
}

// executable says why p cannot be executed (an errno), or nil.
func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return pe.Err
		}
		return err
	}
	if fi.IsDir() {
		return syscall.EISDIR
	}
	if fi.Mode()&0o111 == 0 {
		return syscall.EACCES
	}
	return nil
}

// supervise is the init's life as PID 1 once the workload runs: it
// forwards signals to the workload, reaps every child (orphans included)
// and, when the workload has exited, kills whatever is left in the
// container and returns the workload's wait status. The main thread waits
// in wait4 itself, so the workload's end wakes it directly; a goroutine
// forwards the signals.
func supervise(pid int, sigs chan os.Signal) syscall.WaitStatus {
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case sig := <-sigs:
				unix.Kill(pid, sig.(syscall.Signal))
			case <-stop:
				return
			}
		}
	}()
	var status syscall.WaitStatus
	for {
		var ws unix.WaitStatus
		p, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			break // no child left: the workload was reaped already
		}
		if p == pid {
			status = syscall.WaitStatus(ws)
			break
		}
	}
	// No signal.Stop: the init exits next, and the runtime would undo
	// each of its handlers through a round trip to its signal thread
	// (most of a millisecond in all).
	close(stop)
	if os.Getpid() == 1 {
		// Everything else in the pid namespace: background jobs, exec'd
		// processes. As PID 1, kill(-1) spares only the init itself.
		unix.Kill(-1, unix.SIGKILL)
		for {
			if _, err := unix.Wait4(-1, nil, 0, nil); err != nil && err != unix.EINTR {
				break
			}
		}
	}
	return status
}
