package regfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	file := write("file", "hello")
	big := write("big", strings.Repeat("x", 11))
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink("file", link); err != nil {
		t.Fatal(err)
	}
	devLink := filepath.Join(dir, "null")
	if err := os.Symlink("/dev/null", devLink); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path    string
		resolve uint64
		want    string
		err     error
		kind    string
	}{
		{path: file, want: "hello"},
		{path: file, resolve: unix.RESOLVE_NO_SYMLINKS, want: "hello"},
		{path: link, want: "hello"},
		{path: link, resolve: unix.RESOLVE_NO_SYMLINKS, err: syscall.ELOOP},
		{path: big, err: ErrTooLarge},
		{path: fifo, err: ErrNotRegular, kind: "a FIFO"},
		{path: "/dev/null", err: ErrNotRegular, kind: "a character device"},
		{path: devLink, err: ErrNotRegular, kind: "a character device"},
		{path: dir, err: ErrNotRegular, kind: "a directory"},
		{path: filepath.Join(dir, "missing"), err: os.ErrNotExist},
	} {
		data, err := ReadFile(unix.AT_FDCWD, tc.path, tc.resolve, 10)
		if tc.err == nil {
			if err != nil || string(data) != tc.want {
				t.Errorf("ReadFile(%s) = %q, %v; want %q", tc.path, data, err, tc.want)
			}
			continue
		}
		if !errors.Is(err, tc.err) {
			t.Errorf("ReadFile(%s) = %v, want %v", tc.path, err, tc.err)
		}
		var k *KindError
		if tc.kind != "" && (!errors.As(err, &k) || k.Kind != tc.kind) {
			t.Errorf("ReadFile(%s) = %v, want kind %q", tc.path, err, tc.kind)
		}
	}
}

// Under a directory descriptor, a path is resolved there.
func TestReadFileUnderDirFD(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etc", "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if data, err := ReadFile(fd, "etc/f", unix.RESOLVE_IN_ROOT, 10); err != nil || string(data) != "x" {
		t.Errorf("ReadFile = %q, %v", data, err)
	}
}
