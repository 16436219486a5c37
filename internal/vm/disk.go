package vm

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/lockfile"
)

// LayerDisk returns the path of the read-only EROFS disk image of a layer
// snapshot directory (an unpacked layer in overlayfs form: whiteouts as 0/0
// character devices, opaque directories by xattr), building it on first use
// as cacheDir/ALGO-HEX.erofs. The image is written to a temporary file and
// renamed into place, under a per-layer flock so concurrent callers build it
// once; every image sharing the layer reuses it.
func LayerDisk(cacheDir, snapshotDir, layerDigest string) (string, error) {
	algo, hex, valid := splitDigest(layerDigest)
	if !valid {
		return "", fmt.Errorf("layer disk: digest %q: %w", layerDigest, errdefs.ErrInvalid)
	}
	name := algo + "-" + hex + ".erofs"
	final := filepath.Join(cacheDir, name)
	if _, err := os.Stat(final); err == nil {
		return final, nil
	}
	if !isDir(snapshotDir) {
		return "", fmt.Errorf("layer disk %s: snapshot %s: %w", layerDigest, snapshotDir, errdefs.ErrNotFound)
	}
	mkfs, err := exec.LookPath("mkfs.erofs")
	if err != nil {
		return "", fmt.Errorf("layer disk: mkfs.erofs not found (apt-get install erofs-utils): %w", errdefs.ErrUnavailable)
	}
	if err := os.MkdirAll(cacheDir, 0o700); err != nil {
		return "", fmt.Errorf("layer disk: %w", err)
	}
	unlock, err := lockFile(final + ".lock")
	if err != nil {
		return "", fmt.Errorf("layer disk %s: %w", layerDigest, err)
	}
	defer unlock()
	if _, err := os.Stat(final); err == nil {
		return final, nil // built by whoever held the lock
	}
	tmp, err := os.CreateTemp(cacheDir, ".tmp-"+name+"-*")
	if err != nil {
		return "", fmt.Errorf("layer disk: %w", err)
	}
	tmp.Close()
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmp.Name())
		}
	}()
	out, err := exec.Command(mkfs, "--quiet", "--preserve-mtime", tmp.Name(), snapshotDir).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("layer disk %s: mkfs.erofs: %v: %s: %w", layerDigest, err, oneLine(out), errdefs.ErrInvalid)
	}
	if err := syncFile(tmp.Name()); err != nil {
		return "", fmt.Errorf("layer disk: %w", err)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", fmt.Errorf("layer disk: %w", err)
	}
	ok = true
	return final, nil
}

// ScratchDisk creates path as a sparse file of size bytes holding an
// ext4 file system for the guest's writable layer: its root holds the
// overlay's empty "upper" and "work" directories. It fails if path
// exists.
//
// The file system has no journal: the disk lives and dies with one
// guest, so there is nothing to recover after a crash, and without one
// the guest mounts it and makes its first changes sooner (about 20 ms
// under software emulation, with the directories made here rather than
// by the guest). Nor has it blocks reserved for growing it (resize_inode),
// which leaves 200 KiB of data to copy per instance instead of 4 MiB.
func ScratchDisk(path string, size int64) error {
	if size <= 0 {
		return fmt.Errorf("scratch disk: size %d: %w", size, errdefs.ErrInvalid)
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return fmt.Errorf("scratch disk: mkfs.ext4 not found (apt-get install e2fsprogs): %w", errdefs.ErrUnavailable)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("scratch disk: %w", err)
	}
	err = f.Truncate(size)
	f.Close()
	var content string
	if err == nil {
		content, err = os.MkdirTemp(filepath.Dir(path), ".scratch-root-")
	}
	if err == nil {
		defer os.RemoveAll(content)
		err = os.Chmod(content, 0o755) // the file system root's mode
		for _, d := range []string{"upper", "work"} {
			if err == nil {
				err = os.Mkdir(filepath.Join(content, d), 0o755)
			}
		}
	}
	if err == nil {
		var out []byte
		// Lazy init: nothing but metadata is written, the file stays sparse.
		out, err = exec.Command(mkfs, "-q", "-F", "-m", "0", "-O", "^has_journal,^resize_inode",
			"-E", "lazy_itable_init=1", "-d", content, path).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("mkfs.ext4: %v: %s", err, oneLine(out))
		}
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("scratch disk %s: %w", path, err)
	}
	return nil
}

// ScratchDiskCached is ScratchDisk through a pre-formatted template kept in
// cacheDir (built once per size, under a flock) and copied with a reflink
// where the file system has them, else sparsely. Measured here (ext4, 4 GiB):
// 5 ms for the sparse copy against 14 ms for mkfs.ext4.
func ScratchDiskCached(cacheDir, path string, size int64) error {
	if size <= 0 {
		return fmt.Errorf("scratch disk: size %d: %w", size, errdefs.ErrInvalid)
	}
	// v2: no journal, no resize_inode, upper and work made
	// (scratch-SIZE.ext4 had a journal).
	tmpl := filepath.Join(cacheDir, "scratch-v2-"+strconv.FormatInt(size, 10)+".ext4")
	if _, err := os.Stat(tmpl); err != nil {
		if err := os.MkdirAll(cacheDir, 0o700); err != nil {
			return fmt.Errorf("scratch disk: %w", err)
		}
		unlock, err := lockFile(tmpl + ".lock")
		if err != nil {
			return fmt.Errorf("scratch disk: %w", err)
		}
		if _, err := os.Stat(tmpl); err != nil {
			tmp := filepath.Join(cacheDir, fmt.Sprintf(".tmp-scratch-%d-%d", size, os.Getpid()))
			os.Remove(tmp)
			if err := ScratchDisk(tmp, size); err != nil {
				unlock()
				return err
			}
			if err := os.Rename(tmp, tmpl); err != nil {
				os.Remove(tmp)
				unlock()
				return fmt.Errorf("scratch disk: %w", err)
			}
			// The first version's template of this size, if any, is
			// never used again.
			old := filepath.Join(cacheDir, "scratch-"+strconv.FormatInt(size, 10)+".ext4")
			os.Remove(old)
			os.Remove(old + ".lock")
		}
		unlock()
	}
	if err := copySparse(tmpl, path); err != nil {
		return fmt.Errorf("scratch disk %s: %w", path, err)
	}
	return nil
}

// copySparse copies src to the new file dst, by reflink if possible, else
// copying only the data extents (SEEK_DATA/SEEK_HOLE).
func copySparse(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) == nil {
		return nil
	}
	size := st.Size()
	if err := out.Truncate(size); err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		} else if err != nil {
			return fmt.Errorf("seek data: %w", err)
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole: %w", err)
		}
		if _, err := io.CopyBuffer(io.NewOffsetWriter(out, data), io.NewSectionReader(in, data, hole-data), buf); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// lockFile takes an exclusive flock on path (created if missing) and
// returns its release.
func lockFile(path string) (func(), error) {
	f, err := lockfile.Open(path, unix.LOCK_EX)
	if err != nil {
		return nil, err
	}
	return func() { f.Close() }, nil
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// oneLine squeezes a tool's output into one line for an error message.
func oneLine(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// splitDigest splits "ALGO:HEX": ALGO of a-z and 0-9, HEX of 32 to 128
// lowercase hex digits, so that both are safe in a file name. (A parser
// rather than a regular expression: compiling one at start-up costs every
// berth process, the container init included, a third of a millisecond.)
func splitDigest(d string) (algo, hex string, ok bool) {
	algo, hex, found := strings.Cut(d, ":")
	if !found || algo == "" || len(hex) < 32 || len(hex) > 128 {
		return "", "", false
	}
	for _, c := range algo {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return "", "", false
		}
	}
	for _, c := range hex {
		if !('a' <= c && c <= 'f' || '0' <= c && c <= '9') {
			return "", "", false
		}
	}
	return algo, hex, true
}
