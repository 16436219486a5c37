package userdb

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/regfile"
)

// Real files, as Debian's base image and busybox images ship them.
const (
	debianPasswd = `root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bin:x:2:2:bin:/bin:/usr/sbin/nologin
sys:x:3:3:sys:/dev:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
_apt:x:42:65534::/nonexistent:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
`
	debianGroup = `root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
staff:x:50:
users:x:100:
nogroup:x:65534:
`
	busyboxPasswd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
	busyboxGroup  = "root:x:0:\nstaff:x:50:app\napp:x:1000:\nwheel:x:10:root,app\n"
)

func TestLookup(t *testing.T) {
	data := []byte(debianPasswd + "# comment:x:7:7:c:/c:/c\n\n  spaced:x:8:8::/s:/bin/sh  \r\nshort:x:9\nshell:x:11:11::/h:/bin/sh:with:colons\n")
	for _, tc := range []struct {
		idx       int
		val, name string
		home      string
	}{
		{0, "root", "root", "/root"},
		{2, "33", "www-data", "/var/www"},
		{0, "spaced", "spaced", "/s"},
		{0, "shell", "shell", "/h"},
		{0, "# comment", "", ""},
		{0, "short", "", ""},
		{2, "9", "", ""},
		{7, "x", "", ""},
		{-1, "x", "", ""},
	} {
		f, ok := Lookup(data, tc.idx, tc.val)
		if tc.name == "" {
			if ok {
				t.Errorf("Lookup(%d, %q) = %q, want none", tc.idx, tc.val, f)
			}
			continue
		}
		if !ok || len(f) != 7 || f[0] != tc.name || f[5] != tc.home {
			t.Errorf("Lookup(%d, %q) = %q, %v", tc.idx, tc.val, f, ok)
		}
	}
	if f, ok := Lookup([]byte(debianGroup), 0, "staff"); !ok || len(f) != 7 || f[2] != "50" {
		t.Errorf("group lookup = %q, %v", f, ok)
	}
	// A line longer than a bufio.Scanner's token does not hide the rest.
	long := []byte("x:" + strings.Repeat("y", 1<<17) + ":1:1::/:/bin/sh\nafter:x:5:5::/a:/bin/sh\n")
	if _, ok := Lookup(long, 0, "after"); !ok {
		t.Error("an entry after a long line is not found")
	}
}

func TestGroups(t *testing.T) {
	if got := Groups([]byte(busyboxGroup), "app", 1000); !slices.Equal(got, []uint32{50, 10}) {
		t.Errorf("Groups(app) = %v", got)
	}
	if got := Groups([]byte(busyboxGroup), "app", 50); !slices.Equal(got, []uint32{10}) {
		t.Errorf("Groups(app) without primary 50 = %v", got)
	}
	if got := Groups([]byte("g:x:7:a,a,a\n"), "a", 0); !slices.Equal(got, []uint32{7}) {
		t.Errorf("a member listed thrice = %v", got)
	}
}

func TestLoad(t *testing.T) {
	files := func(passwd, group error) ReadFunc {
		return func(path string, limit int64) ([]byte, error) {
			if limit != MaxSize {
				t.Errorf("limit %d", limit)
			}
			err := passwd
			if path == GroupPath {
				err = group
			}
			if err != nil {
				return nil, &os.PathError{Op: "open", Path: "/host/layer" + path, Err: err}
			}
			return []byte(path), nil
		}
	}
	db, err := Load(files(nil, nil), "image's")
	if err != nil || string(db.Passwd) != PasswdPath || string(db.Group) != GroupPath {
		t.Fatalf("Load = %+v, %v", db, err)
	}
	for _, absent := range []error{os.ErrNotExist, syscall.ENOENT, syscall.ENOTDIR, syscall.ELOOP} {
		db, err := Load(files(absent, nil), "image's")
		if err != nil || db.Passwd != nil || string(db.Group) != GroupPath {
			t.Errorf("Load with passwd %v = %+v, %v; want it empty", absent, db, err)
		}
	}
	for _, tc := range []struct {
		passwd, group error
		want          string
	}{
		{passwd: &regfile.KindError{Kind: "a FIFO"}, want: "image's /etc/passwd is a FIFO, not a regular file"},
		{group: &regfile.KindError{Kind: "a character device"}, want: "image's /etc/group is a character device, not a regular file"},
		{passwd: fmt.Errorf("more: %w", regfile.ErrTooLarge), want: "image's /etc/passwd is larger than 4 MiB"},
		{group: syscall.EACCES, want: "read image's /etc/group: permission denied"},
	} {
		_, err := Load(files(tc.passwd, tc.group), "image's")
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "/host/") {
			t.Errorf("Load = %v, want %q", err, tc.want)
		}
		if tc.passwd != nil && !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("Load = %v, want ErrInvalid", err)
		}
	}
}
