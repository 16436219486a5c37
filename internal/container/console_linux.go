package container

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// console is a terminal allocated inside the container for a workload
// (the init's or an exec stage's): the master goes to the parent with a
// "console" message, the slave becomes the command's stdio and
// controlling terminal.
type console struct {
	master, slave *os.File
	path          string // the slave's path in the container, /dev/pts/N
}

// openConsole allocates a pty from /dev/ptmx of the current mount
// namespace: in a container that is the devpts instance of its own
// mounted on /dev/pts (/dev/ptmx is a symlink to pts/ptmx), so the slave
// is a /dev/pts/N of the container, as with runc. size, when given, is
// set before anything runs on the terminal. As runc does, the slave is
// given to the workload's uid; its group and mode stay what the devpts
// mount gives (tty, 0620). Both files are close-on-exec.
func openConsole(size *specs.Box, uid uint32) (_ *console, err error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("terminal: open /dev/ptmx: %w", unwrapErrno(err))
	}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	rc, err := m.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("terminal: %w", err)
	}
	var n, sfd int
	var ioerr error
	err = rc.Control(func(fd uintptr) {
		mfd := int(fd)
		if ioerr = unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); ioerr != nil {
			ioerr = fmt.Errorf("terminal: unlock the pty: %w", ioerr)
			return
		}
		if n, ioerr = unix.IoctlGetInt(mfd, unix.TIOCGPTN); ioerr != nil {
			ioerr = fmt.Errorf("terminal: pty number: %w", ioerr)
			return
		}
		if size != nil {
			ws := &unix.Winsize{Row: uint16(size.Height), Col: uint16(size.Width)}
			if ioerr = unix.IoctlSetWinsize(mfd, unix.TIOCSWINSZ, ws); ioerr != nil {
				ioerr = fmt.Errorf("terminal: window size: %w", ioerr)
				return
			}
		}
		sfd, ioerr = ptyPeer(mfd)
	})
	if err == nil {
		err = ioerr
	}
	if err != nil {
		return nil, err
	}
	path := "/dev/pts/" + strconv.Itoa(n)
	var slave *os.File
	if sfd >= 0 {
		slave = os.NewFile(uintptr(sfd), path)
	} else {
		// Kernels before 4.13: open the slave by its path, which names it
		// in this mount namespace's /dev/pts.
		slave, err = os.OpenFile(path, os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("terminal: open %s: %w", path, unwrapErrno(err))
		}
	}
	if fi, err := slave.Stat(); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Uid != uid {
			if err := slave.Chown(int(uid), -1); err != nil {
				slave.Close()
				return nil, fmt.Errorf("terminal: give %s to uid %d: %w", path, uid, unwrapErrno(err))
			}
		}
	}
	return &console{master: m, slave: slave, path: path}, nil
}

// ptyPeer opens the pty's slave through its master (TIOCGPTPEER), which
// needs no path; -1 when the kernel is too old for it.
func ptyPeer(master int) (int, error) {
	fd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(master), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
	if errno != 0 {
		if errors.Is(errno, unix.EINVAL) || errors.Is(errno, unix.ENOTTY) {
			return -1, nil
		}
		return -1, fmt.Errorf("terminal: open the pty's slave: %w", errno)
	}
	return int(fd), nil
}

// bindConsole makes the container's /dev/console the terminal's slave
// (a bind mount, as runc does).
func bindConsole(c *console) error {
	dst, err := resolveIn("/", "/dev/console")
	if err != nil {
		return err
	}
	if err := makeMountpoint(dst, false); err != nil {
		return fmt.Errorf("/dev/console: %w", unwrapErrno(err))
	}
	if err := unix.Mount(c.path, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("/dev/console: bind the terminal: %w", err)
	}
	return nil
}

// close closes what is left of the terminal in this process.
func (c *console) close() {
	if c == nil {
		return
	}
	if c.master != nil {
		c.master.Close()
	}
	if c.slave != nil {
		c.slave.Close()
	}
}
