package instance

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
)

const (
	testPasswd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
	testGroup  = "root:x:0:\nstaff:x:50:app\napp:x:1000:\n"
)

// layer makes a layer directory holding etc/passwd and etc/group as made
// by the given functions (nil: absent).
func layer(t *testing.T, passwd, group func(p string) error) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, mk := range map[string]func(string) error{"passwd": passwd, "group": group} {
		if mk != nil {
			if err := mk(filepath.Join(dir, "etc", name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

func content(s string) func(string) error {
	return func(p string) error { return os.WriteFile(p, []byte(s), 0o644) }
}

func fifo(p string) error { return unix.Mkfifo(p, 0o644) }

func TestResolveUserFromLayers(t *testing.T) {
	base := layer(t, content(testPasswd), content(testGroup))
	u, err := ResolveUser("app", LayerReader([]string{base}))
	if err != nil || u.UID != 1000 || u.GID != 1000 || u.Home != "/home/app" || !slices.Equal(u.Groups, []uint32{50}) {
		t.Fatalf("ResolveUser(app) = %+v, %v", u, err)
	}
	// An upper layer's whiteout hides the file: the user is unknown.
	wh := layer(t, nil, nil)
	if err := unix.Mknod(filepath.Join(wh, "etc", "passwd"), unix.S_IFCHR, 0); err == nil {
		if _, err := ResolveUser("app", LayerReader([]string{base, wh})); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("whited-out passwd: %v", err)
		}
	}
	// A missing file is empty; root needs no entry.
	if u, err := ResolveUser("", LayerReader([]string{layer(t, nil, nil)})); err != nil || u.UID != 0 || u.Home != "/root" {
		t.Errorf("no passwd: %+v, %v", u, err)
	}
	// A symlink is not followed: the file reads as missing.
	link := layer(t, func(p string) error { return os.Symlink("/etc/shadow", p) }, nil)
	if u, err := ResolveUser("0", LayerReader([]string{link})); err != nil || u.Home != "/root" {
		t.Errorf("symlinked passwd: %+v, %v", u, err)
	}
}

// A FIFO, a device or a huge file where the user files belong is refused
// at once with one line naming the file; nothing blocks or reads without
// end.
func TestResolveUserHostileFiles(t *testing.T) {
	huge := func(p string) error {
		return os.WriteFile(p, []byte(strings.Repeat("x:x:1:1::/:/bin/sh\n", 5<<20/19)), 0o644)
	}
	cases := map[string]struct {
		passwd, group func(string) error
		want          string
	}{
		"passwd fifo": {fifo, content(testGroup), "image's /etc/passwd is a FIFO, not a regular file"},
		"group fifo":  {content(testPasswd), fifo, "image's /etc/group is a FIFO, not a regular file"},
		"passwd huge": {huge, content(testGroup), "image's /etc/passwd is larger than 4 MiB"},
		"passwd dir":  {func(p string) error { return os.Mkdir(p, 0o755) }, nil, "image's /etc/passwd is a directory, not a regular file"},
	}
	if os.Geteuid() == 0 {
		zero := func(p string) error { return unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 5))) }
		cases["passwd /dev/zero"] = struct {
			passwd, group func(string) error
			want          string
		}{zero, nil, "image's /etc/passwd is a character device, not a regular file"}
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ResolveUser("", LayerReader([]string{layer(t, tc.passwd, tc.group)}))
			if !errors.Is(err, errdefs.ErrInvalid) || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("ResolveUser = %v, want %q", err, tc.want)
			}
		})
	}
}
