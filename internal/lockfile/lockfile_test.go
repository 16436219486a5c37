package lockfile

import (
	"errors"
	"io/fs"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestOpenExcludes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	a, err := Open(path, unix.LOCK_EX)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("second exclusive lock while held: %v, want EWOULDBLOCK", err)
	}
	if _, err := Open(path, unix.LOCK_SH|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("shared lock while held exclusively: %v, want EWOULDBLOCK", err)
	}
	a.Close()
	b, err := Open(path, unix.LOCK_EX|unix.LOCK_NB)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	b.Close()
}

func TestOpenShared(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	a, err := Open(path, unix.LOCK_SH)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(path, unix.LOCK_SH|unix.LOCK_NB)
	if err != nil {
		t.Fatalf("second shared lock: %v", err)
	}
	b.Close()
}

func TestOpenMissingDir(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "gone", "lock"), unix.LOCK_EX)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("lock in a missing directory: %v, want ErrNotExist", err)
	}
}
