package vm

import (
	"bytes"
	"io"
	"os"
	"syscall"
	"time"
)

// ConsoleLogMax bounds a guest's console log: QEMU writes the serial
// console into a pipe, and the VM's owner copies it into the log, which
// it cuts to its last half (from a line's start) whenever it would grow
// past this size. So the log always holds the last half of this much of
// the console, at least, and never more.
const ConsoleLogMax = 1 << 20

// consoleLog is a file that keeps the last bytes written to it.
type consoleLog struct {
	path string
	max  int64
	f    *os.File
	size int64
	// pipe is the write end of the pipe QEMU writes the console into
	// (consolePipe), until QEMU has it.
	pipe *os.File
}

// consoleDrain bounds the wait, once QEMU has exited, for the last of
// its console output to reach the log (QEMU alone holds the pipe's write
// end, close-on-exec: the bound is a safeguard).
const consoleDrain = 2 * time.Second

func createConsoleLog(path string, max int64) (*consoleLog, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE|os.O_TRUNC|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	return &consoleLog{path: path, max: max, f: f}, nil
}

// consolePipe makes a VM's console log at path (emptied) and the pipe
// QEMU writes the console into: the log's pipe is the write end, r the
// read end to drain.
func consolePipe(path string) (c *consoleLog, r *os.File, err error) {
	c, err = createConsoleLog(path, ConsoleLogMax)
	if err != nil {
		return nil, nil, err
	}
	r, c.pipe, err = os.Pipe()
	if err != nil {
		c.f.Close()
		return nil, nil, err
	}
	return c, r, nil
}

// Write appends p; when that would take the file past max, the file is
// replaced by the last half of max of its content and p.
func (c *consoleLog) Write(p []byte) (int, error) {
	if c.size+int64(len(p)) > c.max {
		c.cut(p)
		return len(p), nil
	}
	n, err := c.f.Write(p)
	c.size += int64(n)
	return n, err
}

// cut replaces the file by one that holds the last max/2 bytes of its
// content followed by p, from the first line that starts in them:
// written aside and renamed, so a reader of the log sees either file
// whole. Should that fail, the file starts over empty instead.
func (c *consoleLog) cut(p []byte) {
	keep := c.max / 2
	var tail []byte
	if int64(len(p)) >= keep {
		tail = p[int64(len(p))-keep:]
	} else {
		tail = make([]byte, keep)
		old := keep - int64(len(p))
		n, _ := c.f.ReadAt(tail[:old], max(c.size-old, 0))
		tail = append(tail[:n], p...)
	}
	if i := bytes.IndexByte(tail, '\n'); i >= 0 && i+1 < len(tail) {
		tail = tail[i+1:]
	}
	tmp := c.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_APPEND|os.O_CREATE|os.O_TRUNC|syscall.O_CLOEXEC, 0o600)
	if err == nil {
		if _, err = f.Write(tail); err == nil {
			err = os.Rename(tmp, c.path)
		}
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}
	if err != nil {
		// No room for the copy: start over, bounded still.
		if err := c.f.Truncate(0); err == nil {
			c.size = 0
		}
		return
	}
	c.f.Close()
	c.f, c.size = f, int64(len(tail))
}

// drain copies r (the pipe QEMU writes the console into) into the log
// until QEMU and everything that inherited the pipe are gone, then closes
// both. A failed write loses that output, never stalls QEMU.
func (c *consoleLog) drain(r io.ReadCloser) {
	defer r.Close()
	defer c.f.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			_, _ = c.Write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}
