package sockpath

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLongPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 120))
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "s.sock")
	var l net.Listener
	if err := Do(path, func(p string) (err error) { l, err = net.Listen("unix", p); return err }); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("socket not at its long path: %v", err)
	}
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Write([]byte("x"))
			c.Close()
		}
	}()
	var c net.Conn
	if err := Do(path, func(p string) (err error) { c, err = net.Dial("unix", p); return err }); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := c.Read(b); err != nil || b[0] != 'x' {
		t.Fatalf("read %q %v", b, err)
	}
	c.Close()
}
