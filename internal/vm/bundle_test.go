package vm

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"
)

// TestGuestMounts: dockerd's mounts sorted for a guest: file binds copied
// at their destination, directory binds kept as binds, the rest dropped.
func TestGuestMounts(t *testing.T) {
	src := t.TempDir()
	hosts := filepath.Join(src, "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(src, "data")
	shm := filepath.Join(src, "shm")
	for _, d := range []string{data, shm} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mounts := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs"},
		{Destination: "/etc/hosts", Type: "bind", Source: hosts, Options: []string{"rbind", "rprivate"}},
		{Destination: "/dev/shm", Type: "bind", Source: shm, Options: []string{"rbind"}},
		{Destination: "/data", Type: "none", Source: data, Options: []string{"rbind", "ro"}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup"},
	}
	files := filepath.Join(t.TempDir(), "files")
	keep, n, err := guestMounts(mounts, files)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || len(keep) != 1 || keep[0].Destination != "/data" || keep[0].Type != "bind" {
		t.Fatalf("guestMounts: %d files, kept %+v", n, keep)
	}
	b, err := os.ReadFile(filepath.Join(files, "etc", "hosts"))
	if err != nil || string(b) != "127.0.0.1 localhost\n" {
		t.Fatalf("copied /etc/hosts: %q %v", b, err)
	}
	if _, _, err := guestMounts([]specs.Mount{{Destination: "/x", Type: "bind", Source: filepath.Join(src, "missing")}}, files); err == nil {
		t.Fatal("a bind of a missing source was accepted")
	}
}

func TestSkipInGuest(t *testing.T) {
	for dst, want := range map[string]bool{
		"/dev": true, "/dev/shm": true, "/proc": true, "/sys/fs/cgroup": true,
		"/etc/hosts": false, "/devices": false, "/data": false,
	} {
		if got := skipInGuest(dst); got != want {
			t.Errorf("skipInGuest(%q) = %v, want %v", dst, got, want)
		}
	}
}
