package instance

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/berth-dev/berth/internal/sockpath"
)

// Sockets bound in an instance directory are found, through the file they
// are bound to, also under a path too long for a socket address.
func TestBoundSockets(t *testing.T) {
	for _, dir := range []string{t.TempDir(), filepath.Join(t.TempDir(), strings.Repeat("d", 100))} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		var socks []uint64
		for _, name := range []string{"qmp.sock", "control.sock"} {
			var l net.Listener
			if err := sockpath.Do(filepath.Join(dir, name), func(p string) (err error) { l, err = net.Listen("unix", p); return err }); err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			f, err := l.(*net.UnixListener).File()
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var st os.FileInfo
			if st, err = f.Stat(); err != nil {
				t.Fatal(err)
			}
			socks = append(socks, statIno(st))
		}
		got := boundSockets(dir)
		if len(got) != 2 {
			t.Fatalf("%d-byte directory: found %v, want the two listeners %v", len(dir), got, socks)
		}
		if control, ok := got[socks[1]]; !ok || !control {
			t.Errorf("%d-byte directory: control socket %d: %v %v", len(dir), socks[1], control, ok)
		}
		if control, ok := got[socks[0]]; !ok || control {
			t.Errorf("%d-byte directory: socket %d: %v %v", len(dir), socks[0], control, ok)
		}
		mine := socketInodes(os.Getpid())
		for _, ino := range socks {
			if !slices.Contains(mine, ino) {
				t.Errorf("socket %d is not among this process's %v", ino, mine)
			}
		}
	}
}

// A process whose command line holds the marker is an owner.
func TestRemnants(t *testing.T) {
	dir := t.TempDir()
	marker := []string{"__monitor", "0123abcd"}
	// ": " keeps sh from replacing itself with sleep.
	owner := exec.Command("sh", "-c", "sleep 100; :", "__monitor", "0123abcd")
	if err := owner.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { owner.Process.Kill(); owner.Wait() }()
	for _, r := range Remnants(dir, marker, nil) {
		if r.Pid == owner.Process.Pid {
			if !r.Owner || !r.Alive() {
				t.Errorf("marked process: %+v", r)
			}
			return
		}
	}
	t.Errorf("the process whose command line holds %v was not found", marker)
}

func statIno(st os.FileInfo) uint64 {
	return st.Sys().(*syscall.Stat_t).Ino
}
