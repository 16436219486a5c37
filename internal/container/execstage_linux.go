package container

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/berth-dev/berth/internal/cgroups"
	"golang.org/x/sys/unix"
)

// The exec stage: started by Exec already inside the container's
// namespaces (v2: and its cgroup; v1: its thread joins it last). It sets
// the process up like the init sets up the workload and execs the
// command from its main thread. fd 3 is the sync socket; fds 0-2 the stdio.

func runExecStage() {
	// Credentials and capabilities are set on this thread only, and the
	// execve from this thread is what carries them into the command.
	runtime.LockOSThread()
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	ch, err := newChannel(os.NewFile(stageSocketFD, "sync"))
	if err != nil {
		os.Exit(1)
	}
	closeExtraFDs()
	var cfg execConfig
	files, err := ch.recvFiles(&cfg)
	if err != nil {
		os.Exit(1)
	}
	var join *cgroupJoin
	if n := cfg.CgroupJoins; n > 0 && len(files) == 2*n+2 {
		join = &cgroupJoin{
			moves: &cgroups.ThreadFiles{Join: files[:n], Leave: files[n : 2*n]},
			pids:  &cgroups.PidsFiles{Current: files[2*n], Max: files[2*n+1]},
		}
	} else {
		closeFiles(files)
	}
	err = execCommand(ch, &cfg, join)
	if join != nil {
		cgroups.Move(join.moves.Leave) // whether or not it joined: the stage's own cgroups
	}
	if ee, ok := err.(*ExecError); ok {
		errno, _ := ee.Err.(unix.Errno)
		ch.send(message{Type: msgExecError, Path: ee.Path, Errno: int(errno), Err: ee.Err.Error(), Code: ee.Code})
	} else {
		ch.send(errorMessage(err))
	}
	os.Exit(1)
}

// execMountNSFD is the container's mount namespace in the exec stage.
const execMountNSFD = 4

// cgroupJoin is how the exec stage's thread joins a v1 cgroup alone
// (execConfig.CgroupJoins), the last thing before it execs the command,
// and so the stage's other threads never count against the pids limit:
// the Go runtime could not start them in a full cgroup, and would die of
// it. No limit stops a thread from joining, as it stops a fork: the
// thread reads the count after, and fails when it went beyond (the
// stage then leaves, runExecStage).
type cgroupJoin struct {
	moves *cgroups.ThreadFiles
	pids  *cgroups.PidsFiles
}

func (j *cgroupJoin) join() error {
	// No collection from here on: its workers would be threads started
	// from this one, in the cgroup.
	debug.SetGCPercent(-1)
	if err := cgroups.Move(j.moves.Join); err != nil {
		return fmt.Errorf("join the container's cgroup: %w", err)
	}
	over, limit, err := j.pids.Over()
	if err != nil {
		return fmt.Errorf("join the container's cgroup: %w", err)
	}
	if over {
		return &PidsLimitError{Limit: limit}
	}
	return nil
}

// execCommand only returns on failure.
func execCommand(ch *channel, cfg *execConfig, join *cgroupJoin) error {
	// Enter the container's file system on this thread: unshare the
	// fs_struct it shares with the runtime's other threads, then setns.
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unshare fs: %w", err)
	}
	if cfg.Chroot {
		if err := unix.Fchdir(execMountNSFD); err != nil {
			return fmt.Errorf("enter the container's root: %w", err)
		}
		if err := unix.Chroot("."); err != nil {
			return fmt.Errorf("enter the container's root: chroot: %w", err)
		}
	} else if err := unix.Setns(execMountNSFD, unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("enter the container's mount namespace: %w", err)
	}
	unix.Close(execMountNSFD)
	p := cfg.Process
	if p.Cwd == "" {
		p.Cwd = "/"
	}
	db, err := readUserFiles()
	if err != nil {
		return err
	}
	cred, err := resolveUser(p.User, db)
	if err != nil {
		return err
	}
	if err := checkSetgroups(&cred, p.User); err != nil {
		return err
	}
	env := withHome(p.Env, cred.Home)
	path, err := lookPath(p.Args[0], envPath(env), p.Cwd)
	if err != nil {
		return err
	}
	if err := setRlimits(p.Rlimits); err != nil {
		return err
	}
	if cfg.Console {
		// The terminal comes from the container's devpts, now that this
		// thread is in its mount namespace; the parent gets the master.
		cons, err := openConsole(p.ConsoleSize, cred.UID)
		if err != nil {
			return err
		}
		if err := ch.send(message{Type: msgConsole}, cons.master); err != nil {
			cons.close()
			return fmt.Errorf("send the terminal: %w", err)
		}
		cons.master.Close()
		cons.master = nil
		for fd := 0; fd < 3; fd++ {
			if err := unix.Dup3(int(cons.slave.Fd()), fd, 0); err != nil {
				cons.close()
				return fmt.Errorf("terminal as stdio: %w", err)
			}
		}
		cons.close()
	}
	if _, err := unix.Setsid(); err != nil {
		return fmt.Errorf("setsid: %w", err)
	}
	if cfg.Console {
		if err := unix.IoctlSetInt(0, unix.TIOCSCTTY, 0); err != nil {
			return fmt.Errorf("controlling terminal: %w", err)
		}
	}
	if p.User.Umask != nil {
		unix.Umask(int(*p.User.Umask))
	} else {
		unix.Umask(0o022)
	}
	// Without no_new_privs a filter needs CAP_SYS_ADMIN to load: load it
	// before the capabilities go, as runc does.
	filter := cfg.Seccomp
	if filter != nil && !p.NoNewPrivileges {
		if err := installFilter(filter, nil); err != nil {
			return err
		}
		filter = nil
	}
	if err := switchUser(p.Capabilities, cred); err != nil {
		return err
	}
	if err := unix.Chdir(p.Cwd); err != nil {
		return fmt.Errorf("working directory %q: %w", p.Cwd, err)
	}
	if join != nil {
		if err := join.join(); err != nil {
			return err
		}
	}
	pp := *p
	pp.Capabilities = nil
	if err := applySecurity(&pp, filter, nil, false); err != nil {
		return err
	}
	err = syscall.Exec(path, p.Args, env)
	return execError(p.Args[0], err)
}
