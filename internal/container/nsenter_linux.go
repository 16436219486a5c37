package container

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"
)

// nsJoin is one namespace to enter: its clone flag and its file.
type nsJoin struct {
	flag int
	path string
}

// startIn starts cmd from a thread that has first entered the namespaces
// in joins (in order; a mount namespace must come last; a user namespace,
// first, makes it a hand-made fork: see startJoinedUser). The child is
// forked from that thread and so is born in them. The thread then goes
// back to its own namespaces and is never unlocked: it ends with its
// goroutine. Going back matters when the thread is the process's main
// one, which Go never ends (it parks it): /proc/self names that thread,
// so the process's own /proc/self/mountinfo and /proc/self/ns/* would
// otherwise describe the container's namespaces.
func startIn(cmd *exec.Cmd, joins []nsJoin) error {
	if len(joins) == 0 {
		return cmd.Start()
	}
	if joins[0].flag == unix.CLONE_NEWUSER {
		return startJoinedUser(cmd, joins, cmd.SysProcAttr.Cloneflags)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- joinAndStart(cmd, joins)
	}()
	return <-errc
}

func joinAndStart(cmd *exec.Cmd, joins []nsJoin) error {
	// Open every file first: after a mount namespace switch the paths
	// would resolve in the container.
	files := make([]*os.File, 0, len(joins))
	defer func() {
		closeFiles(files)
	}()
	for _, j := range joins {
		f, err := os.Open(j.path)
		if err != nil {
			return fmt.Errorf("namespace %s: %w", j.path, unwrapErrno(err))
		}
		files = append(files, f)
	}
	own := make([]*os.File, len(joins))
	for i, j := range joins {
		f, err := os.Open("/proc/thread-self/ns/" + nsFileName[j.flag])
		if err != nil {
			return fmt.Errorf("namespace %s: %w", nsFileName[j.flag], unwrapErrno(err))
		}
		own[i] = f
		files = append(files, f)
	}
	defer func() {
		for i := len(own) - 1; i >= 0; i-- {
			unix.Setns(int(own[i].Fd()), joins[i].flag)
		}
	}()
	for i, j := range joins {
		if j.flag == unix.CLONE_NEWNS {
			// A thread sharing its fs_struct (every Go thread) may not
			// change mount namespace.
			if err := unix.Unshare(unix.CLONE_FS); err != nil {
				return fmt.Errorf("unshare fs: %w", err)
			}
		}
		if err := unix.Setns(int(files[i].Fd()), j.flag); err != nil {
			return fmt.Errorf("namespace %s: setns: %w", j.path, err)
		}
	}
	return cmd.Start()
}

// nsFileName is the /proc/PID/ns/ file of each namespace clone flag.
var nsFileName = map[int]string{
	unix.CLONE_NEWNS:     "mnt",
	unix.CLONE_NEWUTS:    "uts",
	unix.CLONE_NEWIPC:    "ipc",
	unix.CLONE_NEWNET:    "net",
	unix.CLONE_NEWPID:    "pid_for_children",
	unix.CLONE_NEWCGROUP: "cgroup",
	unix.CLONE_NEWUSER:   "user",
}
