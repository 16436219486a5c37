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
// in joins (in order; a mount namespace must come last). The child is
// forked from that thread and so is born in them. The thread is never
// unlocked: it ends with its goroutine instead of going back to the Go
// scheduler in a foreign namespace.
func startIn(cmd *exec.Cmd, joins []nsJoin) error {
	if len(joins) == 0 {
		return cmd.Start()
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
		for _, f := range files {
			f.Close()
		}
	}()
	for _, j := range joins {
		f, err := os.Open(j.path)
		if err != nil {
			return fmt.Errorf("namespace %s: %w", j.path, unwrapErrno(err))
		}
		files = append(files, f)
	}
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
