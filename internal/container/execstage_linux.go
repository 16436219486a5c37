package container

import (
	"fmt"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// The exec stage: started by Exec already inside the container's
// namespaces (and, once the parent has added it, its cgroup). It sets the
// process up like the init sets up the workload and execs the command
// from its main thread. fd 3 is the sync socket; fds 0-2 the stdio.

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
	if err := ch.recv(&cfg); err != nil {
		os.Exit(1)
	}
	err = execCommand(ch, &cfg)
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

// execCommand only returns on failure.
func execCommand(ch *channel, cfg *execConfig) error {
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
	pp := *p
	pp.Capabilities = nil
	if err := applySecurity(&pp, filter, nil, false); err != nil {
		return err
	}
	err = syscall.Exec(path, p.Args, env)
	return execError(p.Args[0], err)
}
