//go:build linux

package container

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Joining a user namespace. setns(CLONE_NEWUSER) refuses a multi-threaded
// caller, and a Go process always has several threads, so neither the
// runtime nor a stage can join one itself. startJoinedUser forks the
// calling process by hand (as package syscall does for os/exec, with the
// same runtime hooks): the child has one thread and runs only raw system
// calls. It joins the namespaces (the user namespace first, so that it
// holds the capabilities there to join the others), becomes root of the
// joined user namespace, and clones the stage with CLONE_PARENT and the
// new namespaces' flags (which then belong to the joined user namespace,
// and a joined pid namespace applies to the stage). So the stage is a
// child of the calling process, as with exec.Cmd.Start; the intermediate
// exits at once.

//go:linkname runtimeBeforeFork syscall.runtime_BeforeFork
func runtimeBeforeFork()

//go:linkname runtimeAfterFork syscall.runtime_AfterFork
func runtimeAfterFork()

//go:linkname runtimeAfterForkInChild syscall.runtime_AfterForkInChild
func runtimeAfterForkInChild()

// forkReport is what the intermediate writes back: the stage's pid, or
// the step that failed and its errno.
type forkReport struct {
	pid, step, errno int32
}

// Steps of the intermediate, for the error message.
var forkSteps = []string{"", "setns", "setgroups", "setgid", "setuid", "clone", "setsid", "dup", "execve"}

// startJoinedUser starts cmd (Path, Args, Env, stdio as *os.File or nil,
// ExtraFiles, SysProcAttr.Setsid) as described above, with the new
// namespaces cloneFlags, after joining joins (a CLONE_NEWUSER entry
// first). On success cmd.Process is set; cmd.Wait works as after Start.
func startJoinedUser(cmd *exec.Cmd, joins []nsJoin, cloneFlags uintptr) error {
	// Everything the children use is made here: they may not allocate.
	argv0, err := syscall.BytePtrFromString(cmd.Path)
	if err != nil {
		return err
	}
	argv, err := syscall.SlicePtrFromStrings(cmd.Args)
	if err != nil {
		return err
	}
	envv, err := syscall.SlicePtrFromStrings(cmd.Env)
	if err != nil {
		return err
	}
	var keep []*os.File
	defer func() {
		for _, f := range keep {
			f.Close()
		}
	}()
	stdio := func(v any, write bool) (int, error) {
		if f, ok := v.(*os.File); ok && f != nil {
			return int(f.Fd()), nil
		}
		if v != nil {
			return -1, fmt.Errorf("stdio of a stage must be files")
		}
		flag := os.O_RDONLY
		if write {
			flag = os.O_WRONLY
		}
		f, err := os.OpenFile(os.DevNull, flag, 0)
		if err != nil {
			return -1, err
		}
		keep = append(keep, f)
		return int(f.Fd()), nil
	}
	fds := make([]int, 3, 3+len(cmd.ExtraFiles))
	for i, v := range []any{cmd.Stdin, cmd.Stdout, cmd.Stderr} {
		if fds[i], err = stdio(v, i > 0); err != nil {
			return err
		}
	}
	for _, f := range cmd.ExtraFiles {
		fds = append(fds, int(f.Fd()))
	}
	nsfds := make([]int, len(joins))
	nsflags := make([]int, len(joins))
	for i, j := range joins {
		f, err := os.Open(j.path)
		if err != nil {
			return fmt.Errorf("namespace %s: %w", j.path, unwrapErrno(err))
		}
		keep = append(keep, f)
		nsfds[i], nsflags[i] = int(f.Fd()), j.flag
	}
	joinedUser := len(joins) > 0 && joins[0].flag == unix.CLONE_NEWUSER
	setsid := cmd.SysProcAttr != nil && cmd.SysProcAttr.Setsid

	var report [2]int // the intermediate's report
	if err := unix.Pipe2(report[:], unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("pipe: %w", err)
	}
	// The read ends are owned by *os.File values (closed once, by them):
	// a raw close plus a File's finalizer would close the fd number twice,
	// the second time when it may already be someone else's (the stage's
	// pidfd, as it happened).
	reportR := os.NewFile(uintptr(report[0]), "report")
	defer reportR.Close()
	var execErr [2]int // the stage's execve error; end of file: it ran
	if err := unix.Pipe2(execErr[:], unix.O_CLOEXEC); err != nil {
		unix.Close(report[1])
		return fmt.Errorf("pipe: %w", err)
	}
	execErrR := os.NewFile(uintptr(execErr[0]), "exec-error")
	defer execErrR.Close()

	mid, err := forkJoined(argv0, argv, envv, fds, nsfds, nsflags, joinedUser, setsid, cloneFlags, report[1], execErr[1])
	unix.Close(report[1])
	unix.Close(execErr[1])
	if err != nil {
		return fmt.Errorf("fork: %w", err)
	}
	var rep forkReport
	buf := (*[unsafe.Sizeof(rep)]byte)(unsafe.Pointer(&rep))[:]
	_, rerr := io.ReadFull(reportR, buf)
	for {
		if _, err := unix.Wait4(mid, nil, 0, nil); err != unix.EINTR {
			break
		}
	}
	if rerr != nil {
		return fmt.Errorf("the namespace-joining child died: %v", rerr)
	}
	if rep.step != 0 {
		return fmt.Errorf("join namespaces: %s: %w", forkSteps[rep.step], syscall.Errno(rep.errno))
	}
	pid := int(rep.pid)
	var errno int32
	n, _ := io.ReadFull(execErrR, (*[4]byte)(unsafe.Pointer(&errno))[:])
	if n > 0 {
		for {
			if _, err := unix.Wait4(pid, nil, 0, nil); err != unix.EINTR {
				break
			}
		}
		return &os.PathError{Op: "fork/exec", Path: cmd.Path, Err: syscall.Errno(errno)}
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	cmd.Process = p
	return nil
}

// forkJoined forks the intermediate and returns its pid. The child's
// half never returns: it only makes raw system calls on memory prepared
// by the caller (no allocation, no stack growth, no write barrier).
//
//go:noinline
//go:norace
//go:nocheckptr
func forkJoined(argv0 *byte, argv, envv []*byte, fds, nsfds, nsflags []int, joinedUser, setsid bool, cloneFlags uintptr, report, execErr int) (int, error) {
	var (
		rep   forkReport
		errno int32
		r1    uintptr
		e     syscall.Errno
		i     int
		next  int
	)
	syscall.ForkLock.Lock()
	runtimeBeforeFork()
	r1, _, e = syscall.RawSyscall6(syscall.SYS_CLONE, uintptr(syscall.SIGCHLD), 0, 0, 0, 0, 0)
	if e != 0 || r1 != 0 {
		runtimeAfterFork()
		syscall.ForkLock.Unlock()
		if e != 0 {
			return 0, e
		}
		return int(r1), nil
	}

	// The intermediate: one thread.
	runtimeAfterForkInChild()
	for i = 0; i < len(nsfds); i++ {
		if _, _, e = syscall.RawSyscall(unix.SYS_SETNS, uintptr(nsfds[i]), uintptr(nsflags[i]), 0); e != 0 {
			rep.step = 1
			goto fail
		}
	}
	if joinedUser {
		// Root of the joined user namespace, or the execve below drops
		// every capability. setgroups fails where the namespace's
		// setgroups is "deny"; then there are no groups to drop anyway.
		syscall.RawSyscall(syscall.SYS_SETGROUPS, 0, 0, 0)
		if _, _, e = syscall.RawSyscall(syscall.SYS_SETRESGID, 0, 0, 0); e != 0 {
			rep.step = 3
			goto fail
		}
		if _, _, e = syscall.RawSyscall(syscall.SYS_SETRESUID, 0, 0, 0); e != 0 {
			rep.step = 4
			goto fail
		}
	}
	r1, _, e = syscall.RawSyscall6(syscall.SYS_CLONE, cloneFlags|unix.CLONE_PARENT|uintptr(syscall.SIGCHLD), 0, 0, 0, 0, 0)
	if e != 0 {
		rep.step = 5
		goto fail
	}
	if r1 != 0 {
		rep.pid = int32(r1)
		syscall.RawSyscall(syscall.SYS_WRITE, uintptr(report), uintptr(unsafe.Pointer(&rep)), unsafe.Sizeof(rep))
		syscall.RawSyscall(syscall.SYS_EXIT_GROUP, 0, 0, 0)
	}

	// The stage.
	if setsid {
		if _, _, e = syscall.RawSyscall(syscall.SYS_SETSID, 0, 0, 0); e != 0 {
			goto execFail
		}
	}
	// fds[i] becomes fd i. Move out of the way first the fds that a
	// lower dup would overwrite.
	next = len(fds) + len(nsfds) + 16
	if next < report+1 {
		next = report + 1
	}
	if next < execErr+1 {
		next = execErr + 1
	}
	for i = 0; i < len(fds); i++ {
		if fds[i] < i || fds[i] == execErr {
			if _, _, e = syscall.RawSyscall(syscall.SYS_DUP3, uintptr(fds[i]), uintptr(next), syscall.O_CLOEXEC); e != 0 {
				goto execFail
			}
			fds[i] = next
			next++
		}
	}
	if execErr < len(fds) {
		if _, _, e = syscall.RawSyscall(syscall.SYS_DUP3, uintptr(execErr), uintptr(next), syscall.O_CLOEXEC); e != 0 {
			goto execFail
		}
		execErr = next
	}
	for i = 0; i < len(fds); i++ {
		if fds[i] == i {
			if _, _, e = syscall.RawSyscall(syscall.SYS_FCNTL, uintptr(i), syscall.F_SETFD, 0); e != 0 {
				goto execFail
			}
			continue
		}
		if _, _, e = syscall.RawSyscall(syscall.SYS_DUP3, uintptr(fds[i]), uintptr(i), 0); e != 0 {
			goto execFail
		}
	}
	_, _, e = syscall.RawSyscall(syscall.SYS_EXECVE, uintptr(unsafe.Pointer(argv0)), uintptr(unsafe.Pointer(&argv[0])), uintptr(unsafe.Pointer(&envv[0])))
execFail:
	errno = int32(e)
	syscall.RawSyscall(syscall.SYS_WRITE, uintptr(execErr), uintptr(unsafe.Pointer(&errno)), 4)
	syscall.RawSyscall(syscall.SYS_EXIT_GROUP, 127, 0, 0)
fail:
	rep.errno = int32(e)
	syscall.RawSyscall(syscall.SYS_WRITE, uintptr(report), uintptr(unsafe.Pointer(&rep)), unsafe.Sizeof(rep))
	syscall.RawSyscall(syscall.SYS_EXIT_GROUP, 1, 0, 0)
	panic("unreachable")
}
