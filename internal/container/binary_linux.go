package container

import (
	"fmt"
	"os"
	"os/exec"
	"sync"

	"github.com/berth-dev/berth/internal/companion"
	"golang.org/x/sys/unix"
)

// The stage binary. Stages (the container's init, the exec stage) run
// berth-init, a small binary of the stages alone, installed next to
// berth or in ../lib/berth from it: it starts in half the time of the
// whole berth binary, whose packages (image formats, compression) take
// a millisecond to initialise, on the critical path of every start, and
// the init stays resident as long as its container. Without one, a stage
// runs berth's own binary (tests, a berth copied alone), which works as
// well: RunStage is in both.
const stageBinaryName = "berth-init"

var (
	stageOnce sync.Once
	stagePath string
)

// stageBinary is the path of the binary stages run from.
func stageBinary() string {
	stageOnce.Do(func() {
		stagePath = reexecPath
		if p, err := companion.Find(stageBinaryName); err == nil {
			stagePath = p
		}
	})
	return stagePath
}

// A process of the container that reaches a stage's /proc/PID/exe must
// not be able to write the host's binary through it (CVE-2019-5736). runc
// copies itself into a sealed memfd for every start and exec; berth
// instead executes the stage from a detached, read-only bind mount of
// the binary (open_tree + mount_setattr): /proc/PID/exe then names a
// file on a read-only mount, and opening it for writing fails with
// EROFS. Two system calls, no copy.

// readOnlyView returns a read-only, detached view of the binary at path,
// or nil where the kernel lacks open_tree (before 5.2) or mount_setattr
// (before 5.12); the stage then runs from path, protected only by being
// non-dumpable.
func readOnlyView(path string) *os.File {
	fd, err := unix.OpenTree(unix.AT_FDCWD, path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return nil
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		unix.Close(fd)
		return nil
	}
	return os.NewFile(uintptr(fd), "berth-binary")
}

// stageCmd is the command of a stage (verbInit or verbExec) with its
// sync socket as fd 3 and extra as the next fds. It executes the stage
// binary through a read-only view of it, passed as the last extra file;
// the caller closes the returned file once the stage has started (nil:
// nothing to close).
func stageCmd(verb string, sock *os.File, extra ...*os.File) (*exec.Cmd, *os.File) {
	path := stageBinary()
	cmd := &exec.Cmd{
		Path:       path,
		Args:       []string{"berth-" + verb[2:], verb, stageProtocol},
		Env:        stageEnv,
		ExtraFiles: append([]*os.File{sock}, extra...),
	}
	if Trace != nil {
		cmd.Env = append(cmd.Env[:len(cmd.Env):len(cmd.Env)], stageTraceEnv)
	}
	view := readOnlyView(path)
	if view != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, view)
		cmd.Path = fmt.Sprintf("/proc/self/fd/%d", 2+len(cmd.ExtraFiles))
	}
	return cmd, view
}
