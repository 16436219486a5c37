package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
)

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
	opaqueXattr    = "trusted.overlay.opaque"
)

// decompress returns the uncompressed stream of a layer blob, detecting
// gzip and zstd by their magic numbers.
func decompress(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	head, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return gzip.NewReader(br)
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		return zr.IOReadCloser(), nil
	}
	return io.NopCloser(br), nil
}

// unpackLayer writes the layer read from blob into dir (an empty directory)
// in overlayfs form and returns the digest of the uncompressed tar. No write
// ever follows a symbolic link, so nothing lands outside dir. When synced,
// the caller will sync what it wrote: large files start their writeback
// as soon as they are written.
func unpackLayer(ctx context.Context, blob io.Reader, dir string, synced bool) (digest.Digest, error) {
	zr, err := decompress(&ctxReader{ctx: ctx, r: blob})
	if err != nil {
		return "", fmt.Errorf("decompress: %v: %w", err, errdefs.ErrInvalid)
	}
	defer zr.Close()
	dg := digest.SHA256.Digester()
	tee := io.TeeReader(zr, dg.Hash())
	root, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", dir, err)
	}
	u := &unpacker{root: root, seen: map[string]byte{}, chown: os.Geteuid() == 0, writeback: synced}
	defer unix.Close(root)
	tr := tar.NewReader(tee)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("layer tar: %w", layerReadErr(err))
		}
		if err := u.entry(hdr, tr); err != nil {
			return "", err
		}
	}
	// Hash the end-of-archive padding too: the diffID covers the whole tar.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return "", fmt.Errorf("layer tar: %w", layerReadErr(err))
	}
	if err := u.finish(); err != nil {
		return "", err
	}
	return dg.Digest(), nil
}

// layerDiffID returns the digest of the uncompressed tar of a layer blob.
func layerDiffID(ctx context.Context, blob io.Reader) (digest.Digest, error) {
	zr, err := decompress(&ctxReader{ctx: ctx, r: blob})
	if err != nil {
		return "", fmt.Errorf("decompress: %v: %w", err, errdefs.ErrInvalid)
	}
	defer zr.Close()
	dg := digest.SHA256.Digester()
	if _, err := io.Copy(dg.Hash(), zr); err != nil {
		return "", fmt.Errorf("layer tar: %w", layerReadErr(err))
	}
	return dg.Digest(), nil
}

func layerReadErr(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("truncated: %w", errdefs.ErrInvalid)
	}
	return fmt.Errorf("%v: %w", err, errdefs.ErrInvalid)
}

// unpacker applies tar entries under a root directory file descriptor.
type unpacker struct {
	root  int
	seen  map[string]byte // paths this layer created -> tar type flag
	dirs  []dirTime
	chown bool
	// writeback starts writing large files out as they are done.
	writeback bool
}

type dirTime struct {
	path         string
	atime, mtime time.Time
}

// refuse is the one-line error for a hostile or malformed entry.
func refuse(name, why string) error {
	return fmt.Errorf("layer entry %q: %s: %w", name, why, errdefs.ErrInvalid)
}

// cleanEntry maps an entry name to a clean path relative to the layer root
// ("" for the root itself). Leading slashes are dropped; a name that
// resolves outside the root is refused.
func cleanEntry(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", refuse(name, "NUL in name")
	}
	rel := path.Clean(strings.TrimLeft(name, "/"))
	if rel == ".." || strings.HasPrefix(rel, "../") {
		return "", refuse(name, "path escapes the layer root")
	}
	if rel == "." {
		return "", nil
	}
	return rel, nil
}

// openDir opens the directory rel under the root one component at a time
// with O_NOFOLLOW, creating missing components when create is set. A
// component that is a symlink or not a directory is refused.
func (u *unpacker) openDir(rel string, create bool, entry string) (int, error) {
	fd, err := unix.Dup(u.root)
	if err != nil {
		return -1, err
	}
	if rel == "" || rel == "." {
		return fd, nil
	}
	for _, c := range strings.Split(rel, "/") {
		next, err := unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOENT && create {
			if err = unix.Mkdirat(fd, c, 0o755); err == nil || err == unix.EEXIST {
				next, err = unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			}
		}
		unix.Close(fd)
		switch {
		case err == unix.ELOOP || err == unix.ENOTDIR:
			return -1, refuse(entry, "parent "+rel+" is a symlink or not a directory")
		case err != nil:
			return -1, fmt.Errorf("layer entry %q: open %s: %w", entry, rel, err)
		}
		fd = next
	}
	return fd, nil
}

// entry applies one tar entry.
func (u *unpacker) entry(hdr *tar.Header, r io.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader, tar.TypeXHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
		return nil
	}
	rel, err := cleanEntry(hdr.Name)
	if err != nil {
		return err
	}
	if sparse(hdr) {
		// archive/tar reads a sparse file's holes as zeros: a few bytes of
		// layer could claim an exabyte of them and fill the disk.
		return refuse(hdr.Name, "sparse files are not supported (the OCI image spec advises against them)")
	}
	if rel == "" {
		if hdr.Typeflag != tar.TypeDir {
			return refuse(hdr.Name, "the layer root must be a directory")
		}
		return nil
	}
	dir, base := path.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	pfd, err := u.openDir(dir, true, hdr.Name)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if strings.HasPrefix(base, whiteoutPrefix) {
		return u.whiteout(pfd, dir, base, hdr.Name)
	}
	replacedWhiteout, err := u.clear(pfd, base, hdr.Typeflag == tar.TypeDir)
	if err != nil {
		return fmt.Errorf("layer entry %q: %w", hdr.Name, err)
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		err = u.mkdir(pfd, base, hdr, replacedWhiteout)
		u.dirs = append(u.dirs, dirTime{path: rel, atime: atime(hdr), mtime: hdr.ModTime})
	case tar.TypeReg:
		err = u.file(pfd, base, hdr, r)
	case tar.TypeSymlink:
		err = unix.Symlinkat(hdr.Linkname, pfd, base)
		if err == nil {
			err = u.meta(pfd, base, hdr, false)
		}
	case tar.TypeLink:
		err = u.hardlink(pfd, base, rel, hdr)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		err = u.mknod(pfd, base, hdr)
	default:
		return refuse(hdr.Name, fmt.Sprintf("unsupported entry type %q", hdr.Typeflag))
	}
	if err != nil {
		if errors.Is(err, errdefs.ErrInvalid) {
			return err
		}
		return fmt.Errorf("layer entry %q: %w", hdr.Name, err)
	}
	u.seen[rel] = hdr.Typeflag
	return nil
}

// clear removes whatever is at base unless both it and the new entry are
// directories. It reports whether it replaced an overlay whiteout.
func (u *unpacker) clear(pfd int, base string, isDir bool) (bool, error) {
	var st unix.Stat_t
	err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == unix.ENOENT {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	mode := st.Mode & unix.S_IFMT
	if mode == unix.S_IFDIR {
		if isDir {
			return false, nil
		}
		// The path goes through our own fd's magic link, never a symlink.
		return false, os.RemoveAll(fmt.Sprintf("/proc/self/fd/%d/%s", pfd, base))
	}
	whiteout := mode == unix.S_IFCHR && st.Rdev == 0
	return whiteout, unix.Unlinkat(pfd, base, 0)
}

// whiteout turns an OCI whiteout entry into its overlayfs form.
func (u *unpacker) whiteout(pfd int, dir, base, name string) error {
	if base == opaqueMarker {
		if err := unix.Fsetxattr(pfd, opaqueXattr, []byte("y"), 0); err != nil {
			return fmt.Errorf("layer entry %q: opaque directory: %w", name, err)
		}
		return nil
	}
	target := strings.TrimPrefix(base, whiteoutPrefix)
	if target == "" || target == "." || target == ".." {
		return refuse(name, "whiteout of nothing")
	}
	if _, ok := u.seen[path.Join(dir, target)]; ok {
		// Whiteouts hide lower layers only, never this layer's own files.
		return nil
	}
	if _, err := u.clear(pfd, target, false); err != nil {
		return fmt.Errorf("layer entry %q: %w", name, err)
	}
	if err := unix.Mknodat(pfd, target, unix.S_IFCHR, 0); err != nil {
		return fmt.Errorf("layer entry %q: whiteout: %w", name, err)
	}
	return nil
}

func (u *unpacker) mkdir(pfd int, base string, hdr *tar.Header, opaque bool) error {
	if err := unix.Mkdirat(pfd, base, 0o700); err != nil && err != unix.EEXIST {
		return err
	}
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if opaque {
		// It replaces a whiteout: lower contents must stay hidden.
		if err := unix.Fsetxattr(fd, opaqueXattr, []byte("y"), 0); err != nil {
			return err
		}
	}
	return u.fdMeta(fd, hdr)
}

func (u *unpacker) file(pfd int, base string, hdr *tar.Header, r io.Reader) error {
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), base)
	defer f.Close()
	if _, err := io.Copy(f, r); err != nil {
		return layerReadErr(err)
	}
	if u.writeback && hdr.Size >= 1<<20 {
		// Start writing a large file out now, while the rest unpacks:
		// the import's sync then finds most of it on disk already.
		_ = unix.SyncFileRange(fd, 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	}
	if err := u.fdMeta(int(f.Fd()), hdr); err != nil {
		return err
	}
	return unix.UtimesNanoAt(pfd, base, times(hdr), unix.AT_SYMLINK_NOFOLLOW)
}

func (u *unpacker) hardlink(pfd int, base, rel string, hdr *tar.Header) error {
	target, err := cleanEntry(hdr.Linkname)
	if err != nil {
		return refuse(hdr.Name, "hard link target "+hdr.Linkname+" escapes the layer root")
	}
	if t, ok := u.seen[target]; !ok || t == tar.TypeDir || target == rel {
		return refuse(hdr.Name, "hard link target "+hdr.Linkname+" is not an earlier file of this layer")
	}
	tdir, tbase := path.Split(target)
	tfd, err := u.openDir(strings.TrimSuffix(tdir, "/"), false, hdr.Name)
	if err != nil {
		return err
	}
	defer unix.Close(tfd)
	// Flags 0: a symlink target is linked itself, never followed.
	return unix.Linkat(tfd, tbase, pfd, base, 0)
}

func (u *unpacker) mknod(pfd int, base string, hdr *tar.Header) error {
	mode := uint32(unix.S_IFIFO)
	switch hdr.Typeflag {
	case tar.TypeChar:
		mode = unix.S_IFCHR
	case tar.TypeBlock:
		mode = unix.S_IFBLK
	}
	dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	if err := unix.Mknodat(pfd, base, mode|uint32(hdr.Mode&0o7777), int(dev)); err != nil {
		return err
	}
	return u.meta(pfd, base, hdr, true)
}

// fdMeta sets owner, mode and xattrs through an open file descriptor.
func (u *unpacker) fdMeta(fd int, hdr *tar.Header) error {
	if u.chown {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	if err := unix.Fchmod(fd, uint32(hdr.Mode&0o7777)); err != nil {
		return err
	}
	for k, v := range xattrs(hdr) {
		if err := unix.Fsetxattr(fd, k, []byte(v), 0); err != nil && err != unix.ENOTSUP {
			return fmt.Errorf("xattr %s: %w", k, err)
		}
	}
	return nil
}

// meta sets owner, mode (unless a symlink), xattrs and times of base in pfd
// without following a symlink at base.
func (u *unpacker) meta(pfd int, base string, hdr *tar.Header, chmod bool) error {
	if u.chown {
		if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	if chmod {
		// base was just made by mknod, so it is no symlink.
		if err := unix.Fchmodat(pfd, base, uint32(hdr.Mode&0o7777), 0); err != nil {
			return err
		}
	}
	p := fmt.Sprintf("/proc/self/fd/%d/%s", pfd, base)
	for k, v := range xattrs(hdr) {
		if err := unix.Lsetxattr(p, k, []byte(v), 0); err != nil && err != unix.ENOTSUP && err != unix.EPERM {
			return fmt.Errorf("xattr %s: %w", k, err)
		}
	}
	return unix.UtimesNanoAt(pfd, base, times(hdr), unix.AT_SYMLINK_NOFOLLOW)
}

// xattrs returns the entry's extended attributes that a layer may set:
// user.* and security.capability. trusted.* (overlayfs's own) and the rest
// are ignored.
func xattrs(hdr *tar.Header) map[string]string {
	out := map[string]string{}
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if ok && (strings.HasPrefix(name, "user.") || name == "security.capability") {
			out[name] = v
		}
	}
	return out
}

func atime(hdr *tar.Header) time.Time {
	if hdr.AccessTime.IsZero() {
		return hdr.ModTime
	}
	return hdr.AccessTime
}

func times(hdr *tar.Header) []unix.Timespec {
	return []unix.Timespec{unix.NsecToTimespec(atime(hdr).UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
}

// finish sets directory times, last, since creating entries changes them.
func (u *unpacker) finish() error {
	for _, d := range u.dirs {
		dir, base := path.Split(d.path)
		pfd, err := u.openDir(strings.TrimSuffix(dir, "/"), false, d.path)
		if err != nil {
			return err
		}
		ts := []unix.Timespec{unix.NsecToTimespec(d.atime.UnixNano()), unix.NsecToTimespec(d.mtime.UnixNano())}
		err = unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW)
		unix.Close(pfd)
		if err != nil && err != unix.ENOENT {
			return fmt.Errorf("layer entry %q: times: %w", d.path, err)
		}
	}
	return nil
}
