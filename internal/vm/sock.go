package vm

import (
	"net"
	"os"
	"sync"

	"github.com/berth-dev/berth/internal/sockpath"
)

// listenFile creates a listening unix socket at path and returns it as a
// file for a child process to inherit. The socket file stays on disk.
func listenFile(path string) (*os.File, error) {
	os.Remove(path)
	var f *os.File
	err := sockpath.Do(path, func(p string) error {
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
		if err != nil {
			return err
		}
		l.SetUnlinkOnClose(false)
		f, err = l.File()
		l.Close()
		return err
	})
	return f, err
}

// dialUnix connects to the unix socket at path.
func dialUnix(path string) (net.Conn, error) {
	var c net.Conn
	err := sockpath.Do(path, func(p string) error {
		var err error
		c, err = net.Dial("unix", p)
		return err
	})
	return c, err
}

// tailBuffer keeps the last bytes written to it (a child's stderr).
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

const tailMax = 8 << 10

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > tailMax {
		b.buf = append([]byte(nil), b.buf[len(b.buf)-tailMax:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
