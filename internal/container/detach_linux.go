package container

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Detached containers, for berth-runtime (runc's semantics).
//
// runc's create and start are separate processes and the container's
// process is the workload itself: its init execve's the command instead of
// forking it and staying as PID 1, so whoever waits for that pid (the
// containerd shim, as a subreaper) gets the workload's exit status. Detach
// turns a created container into such a one: the parent sends the init
// "await-start" with a listening unix socket (SCM_RIGHTS) and the compiled
// seccomp program; the init resolves the command (so a missing one fails
// create, as with runc), answers "awaiting" and from then on needs nothing
// from its parent. It accepts connections on the listener; a "start"
// message on one of them makes it apply capabilities, the user, no_new_privs
// and seccomp and execve the workload. The connection is close-on-exec:
// end of file means the workload runs, an "error" or "exec-error" message
// that it could not be started (and the init has exited).

// Message types of detached containers.
const (
	msgAwaitStart = "await-start" // parent -> init: listener attached; wait for "start" on it, then execve the workload
	msgAwaiting   = "awaiting"    // init -> parent: the command resolved; waiting on the listener
)

// Detach hands the created container over to its start listener and lets
// the calling process exit without taking the container with it: the init
// (Pid) becomes the workload itself once StartDetached is called on the
// listener's address, and its exit status is the workload's. listener
// must be a listening unix stream socket; the init keeps its own copy and
// the caller may close theirs. Detach fails, with the init gone, when the
// command is not found or cannot be invoked (an *ExecError). After Detach
// only Pid and Console may be used; Start, Wait and Destroy do not apply.
func (c *Container) Detach(listener *os.File) error {
	prog, err := c.claimStart()
	if err != nil {
		if !errors.Is(err, errdefs.ErrConflict) {
			c.kill()
		}
		return err
	}
	// The init becomes the workload even when created to stay: then no
	// thread of its own holds the place it was given under the pids
	// limit (cgroupResources).
	if n := pidsLimit(c.cfg.Spec); n > 0 && !c.becomes {
		if err := c.cg.SetPids(n); err != nil {
			c.kill()
			return fmt.Errorf("container %s: %w", c.cfg.ID, err)
		}
	}
	if err := c.ch.send(message{Type: msgAwaitStart, Filter: prog}, listener); err != nil {
		c.kill()
		return fmt.Errorf("container %s: hand over: %w", c.cfg.ID, err)
	}
	var m message
	if err := c.ch.recv(&m); err != nil {
		c.kill()
		return fmt.Errorf("container %s: init died before waiting for start", c.cfg.ID)
	}
	if m.Type != msgAwaiting {
		c.kill()
		return errorFromMessage(&m)
	}
	c.ch.close()
	c.sock.Close()
	// The init is not waited for here: it outlives this process (or, for
	// berth-runtime run, the caller waits for Pid itself).
	return nil
}

// kill ends a container whose hand-over failed and removes its cgroup.
func (c *Container) kill() {
	c.cmd.Process.Kill()
	c.cmd.Wait()
	c.cg.Destroy()
	c.mu.Lock()
	c.destroyed = true
	c.mu.Unlock()
}

// StartDetached starts the workload of a detached container whose start
// listener is at addr (a unix socket path; see Detach). It returns once
// the workload has been execve'd, or with the reason it could not be (an
// *ExecError for 126/127; a failed startContainer hook); either way the
// listener is then gone. state is the container's OCI state JSON, given
// to the spec's startContainer hooks, which the init runs in the
// container just before the workload.
func StartDetached(addr string, state []byte) error {
	conn, err := net.DialTimeout("unix", addr, 10*time.Second)
	if err != nil {
		return fmt.Errorf("start: the container is not waiting for start: %w", unwrapErrno(err))
	}
	defer conn.Close()
	rc, err := conn.(*net.UnixConn).SyscallConn()
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	ch := &channel{rc: rc}
	defer ch.close()
	if err := ch.send(message{Type: msgStart, State: state}); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	var m message
	switch err := ch.recv(&m); err {
	case io.EOF:
		return nil // close-on-exec: the workload runs
	case nil:
		return errorFromMessage(&m)
	default:
		return fmt.Errorf("start: %w", err)
	}
}

// awaitStart is the detached init's life after "await-start"; it never
// returns. ch is the socket to the parent, lfd the listener.
func awaitStart(ch *channel, cfg *initConfig, w *workload, m *message, files []*os.File) {
	if len(files) != 1 {
		ch.send(errorMessage(fmt.Errorf("await start: want one listener, got %d files", len(files))))
		os.Exit(1)
	}
	prog, err := decodeFilter(m.Filter)
	if err != nil {
		ch.send(errorMessage(err))
		os.Exit(1)
	}
	w.filter = prog
	// Now, not at start: the container's namespaces are all there once
	// create returns.
	path, err := readyToExec(cfg, w)
	if err != nil {
		sendExecError(ch, err)
		os.Exit(1)
	}
	lfd := int(files[0].Fd()) // Fd puts it in blocking mode
	// Until the workload runs, the init dies of the signals that would
	// end a process by default (the parent no longer relays anything).
	signal.Reset()
	if err := ch.send(message{Type: msgAwaiting}); err != nil {
		os.Exit(1)
	}
	// The parent's socket (fd 3) stays open until the execve closes it.
	for {
		nfd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
		if err == unix.EINTR || err == unix.ECONNABORTED {
			continue
		}
		if err != nil {
			os.Exit(1)
		}
		// The File owns the fd: closed through it only (a raw close
		// would leave its finalizer a number to close a second time).
		f := os.NewFile(uintptr(nfd), "start")
		conn, err := newChannel(f)
		if err != nil {
			f.Close()
			continue
		}
		var req message
		if err := conn.recv(&req); err != nil || req.Type != msgStart {
			f.Close()
			continue
		}
		files[0].Close() // the listener (lfd)
		if h := cfg.Spec.Hooks; h != nil && len(h.StartContainer) > 0 {
			// In the container, before the workload: paths resolve in
			// its root.
			if err := RunHooks("startContainer", h.StartContainer, req.State); err != nil {
				conn.send(errorMessage(err))
				os.Exit(1)
			}
		}
		err = execWorkload(cfg, w, path)
		sendExecError(conn, err)
		os.Exit(1)
	}
}

// becomeWorkload is the end of an attached init that does not stay
// (KeepInit unset): it execve's the workload, which so is the
// container's PID 1 and the child its parent waits for, whose exit
// status is the workload's. The parent reads "execing", then end of file
// once the execve has closed the socket. It never returns.
func becomeWorkload(ch *channel, cfg *initConfig, w *workload) {
	path, err := readyToExec(cfg, w)
	if err == nil {
		note("workload exec")
		if ch.send(message{Type: msgExecing, Trace: takeStamps()}) != nil {
			os.Exit(1)
		}
		err = execWorkload(cfg, w, path)
	}
	sendExecError(ch, err)
	os.Exit(1)
}

// readyToExec resolves the workload's command and puts the calling
// thread, the main one, which execve's it, in the container's cgroup
// (and a cgroup namespace of its own): all that is left before
// execWorkload.
func readyToExec(cfg *initConfig, w *workload) (string, error) {
	p := cfg.Spec.Process
	path, err := lookPath(p.Args[0], envPath(w.env), p.Cwd)
	if err != nil {
		return "", err
	}
	if err := enterCgroup(cfg, w.cgroupMoves); err != nil {
		return "", err
	}
	return path, nil
}

// sendExecError reports a failed start on ch in its wire form.
func sendExecError(ch *channel, err error) {
	if ee, ok := err.(*ExecError); ok {
		errno, _ := ee.Err.(unix.Errno)
		ch.send(message{Type: msgExecError, Path: ee.Path, Errno: int(errno), Err: ee.Err.Error(), Code: ee.Code})
		return
	}
	ch.send(errorMessage(err))
}

// execWorkload turns the init into the workload on the calling (locked,
// main) thread: terminal, capabilities, user, cwd,
// no_new_privs, seccomp, execve. It only returns on failure.
func execWorkload(cfg *initConfig, w *workload, path string) error {
	p := cfg.Spec.Process
	if w.console != nil {
		for fd := 0; fd < 3; fd++ {
			if err := unix.Dup3(int(w.console.slave.Fd()), fd, 0); err != nil {
				return fmt.Errorf("terminal as stdio: %w", err)
			}
		}
		// The init is a session leader (Setsid at clone) without a
		// controlling terminal yet.
		if err := unix.IoctlSetInt(0, unix.TIOCSCTTY, 0); err != nil {
			return fmt.Errorf("controlling terminal: %w", err)
		}
		w.console.close()
	}
	umask := 0o022
	if p.User.Umask != nil {
		umask = int(*p.User.Umask)
	}
	unix.Umask(umask)
	// Without no_new_privs, installing a filter needs CAP_SYS_ADMIN: do it
	// while the init still has it (runc does the same; the profile must
	// then allow what follows, as Docker's does).
	filter := cfg.Spec.Linux.Seccomp
	if filter != nil && !p.NoNewPrivileges {
		if err := installFilter(filter, w.filter); err != nil {
			return err
		}
		filter = nil
	}
	if err := switchUser(p.Capabilities, w.cred); err != nil {
		return err
	}
	if p.Cwd != "" {
		if err := unix.Chdir(p.Cwd); err != nil {
			return fmt.Errorf("working directory %q: %w", p.Cwd, err)
		}
	}
	pp := *p
	pp.Capabilities = nil
	if err := applySecurity(&pp, filter, w.filter, false); err != nil {
		return err
	}
	err := syscall.Exec(path, p.Args, w.env)
	return execError(p.Args[0], err)
}

// installFilter loads a seccomp profile, precompiled when prog is set.
func installFilter(p *specs.LinuxSeccomp, prog []unix.SockFilter) error {
	var err error
	if len(prog) > 0 {
		err = seccomp.Install(prog, p)
	} else {
		err = seccomp.Load(p)
	}
	if err != nil {
		return fmt.Errorf("seccomp: %w", err)
	}
	return nil
}
