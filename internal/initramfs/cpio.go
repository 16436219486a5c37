// Package initramfs builds the guest's initramfs: a newc cpio archive that
// is a pure function of its inputs (sorted entries, mtime 0, owner 0:0,
// inode numbers by position), so the same agent and kernel modules always
// give the same bytes and the archive can be cached by content.
package initramfs

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/berth-dev/berth/internal/errdefs"
)

// File is one entry of the archive. Exactly one kind applies: Dir, a
// Symlink target, a device (Mode has os.ModeDevice, with Major and Minor),
// or a regular file whose content is Data or, when SourcePath is set, the
// content of that host file.
type File struct {
	// Path inside the archive, e.g. "/init" or "lib/modules/erofs.ko".
	Path string
	// Mode holds the permission bits and, for devices, os.ModeDevice (and
	// os.ModeCharDevice for character devices). Zero means 0755 for
	// directories and 0644 for files.
	Mode       os.FileMode
	Data       []byte
	SourcePath string
	Symlink    string
	Dir        bool
	// Major and Minor number a device node.
	Major, Minor uint32
}

// Build writes files as a newc cpio archive to w: parents that are not
// listed are added as 0755 directories, entries are sorted by path, every
// entry has mtime 0, uid and gid 0 and its position as inode number, and
// the archive ends with the TRAILER!!! entry. Duplicate or unsafe paths
// ("..") are refused.
func Build(w io.Writer, files []File) error {
	entries := map[string]File{}
	for _, f := range files {
		p, err := cleanPath(f.Path)
		if err != nil {
			return err
		}
		if _, dup := entries[p]; dup {
			return fmt.Errorf("initramfs: %q listed twice: %w", p, errdefs.ErrInvalid)
		}
		f.Path = p
		entries[p] = f
	}
	for p := range entries {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if e, ok := entries[d]; ok {
				if !e.Dir {
					return fmt.Errorf("initramfs: %q is inside %q, which is not a directory: %w", p, d, errdefs.ErrInvalid)
				}
				continue
			}
			entries[d] = File{Path: d, Dir: true}
		}
	}
	names := make([]string, 0, len(entries))
	for p := range entries {
		names = append(names, p)
	}
	sort.Strings(names)

	bw := bufio.NewWriter(w)
	var off int64
	for i, p := range names {
		n, err := writeEntry(bw, uint32(i+1), entries[p], off)
		if err != nil {
			return err
		}
		off += n
	}
	n, err := writeHeader(bw, 0, 0, 1, "TRAILER!!!", 0, 0, 0, off)
	if err != nil {
		return err
	}
	off += n
	// Pad the whole archive to 512 bytes, as cpio(1) does.
	if pad := (512 - off%512) % 512; pad > 0 {
		if _, err := bw.Write(make([]byte, pad)); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func cleanPath(p string) (string, error) {
	c := path.Clean("/" + p)
	if c == "/" || strings.Contains(p, "\x00") {
		return "", fmt.Errorf("initramfs: bad path %q: %w", p, errdefs.ErrInvalid)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return "", fmt.Errorf("initramfs: path %q leaves the archive: %w", p, errdefs.ErrInvalid)
		}
	}
	return c[1:], nil
}

const (
	cpioDir     = 0o040000
	cpioRegular = 0o100000
	cpioSymlink = 0o120000
	cpioChar    = 0o020000
	cpioBlock   = 0o060000
)

// writeEntry writes one entry at archive offset off and returns its size.
func writeEntry(w io.Writer, ino uint32, f File, off int64) (int64, error) {
	perm := uint32(f.Mode.Perm())
	if f.Mode&os.ModeSetuid != 0 {
		perm |= 0o4000
	}
	if f.Mode&os.ModeSetgid != 0 {
		perm |= 0o2000
	}
	if f.Mode&os.ModeSticky != 0 {
		perm |= 0o1000
	}
	var data []byte
	var mode, nlink, major, minor uint32 = 0, 1, 0, 0
	switch {
	case f.Dir:
		if f.Mode.Perm() == 0 {
			perm |= 0o755
		}
		mode, nlink = cpioDir|perm, 2
	case f.Symlink != "":
		mode, data = cpioSymlink|0o777, []byte(f.Symlink)
	case f.Mode&os.ModeDevice != 0:
		mode, major, minor = cpioBlock|perm, f.Major, f.Minor
		if f.Mode&os.ModeCharDevice != 0 {
			mode = cpioChar | perm
		}
	default:
		if f.Mode.Perm() == 0 {
			perm |= 0o644
		}
		mode, data = cpioRegular|perm, f.Data
		if f.SourcePath != "" {
			b, err := os.ReadFile(f.SourcePath)
			if err != nil {
				return 0, fmt.Errorf("initramfs: %s: %w", f.Path, err)
			}
			data = b
		}
	}
	n, err := writeHeader(w, ino, mode, nlink, f.Path, len(data), major, minor, off)
	if err != nil {
		return 0, err
	}
	if _, err := w.Write(data); err != nil {
		return 0, err
	}
	pad := (4 - len(data)%4) % 4
	if _, err := w.Write(make([]byte, pad)); err != nil {
		return 0, err
	}
	return n + int64(len(data)+pad), nil
}

// writeHeader writes a newc header and the padded name; off is the
// header's offset in the archive (names are padded so that data starts
// 4-byte aligned).
func writeHeader(w io.Writer, ino, mode, nlink uint32, name string, size int, rmajor, rminor uint32, off int64) (int64, error) {
	if size > 0xffffffff {
		return 0, fmt.Errorf("initramfs: %s is too large for cpio: %w", name, errdefs.ErrInvalid)
	}
	h := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, size, 0, 0, rmajor, rminor, len(name)+1, 0)
	n := len(h) + len(name) + 1
	pad := int((4 - (off+int64(n))%4) % 4)
	if _, err := io.WriteString(w, h+name+"\x00"+strings.Repeat("\x00", pad)); err != nil {
		return 0, err
	}
	return int64(n + pad), nil
}
