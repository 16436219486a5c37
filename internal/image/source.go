package image

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/klauspost/compress/gzip"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/regfile"
)

// source gives read access to the files of an archive being imported, by
// slash-separated path relative to the archive's root.
type source interface {
	open(name string) (io.ReadCloser, error)
}

// cleanArchivePath turns an archive member name into a clean relative path,
// or "" when it is the root or would leave the archive.
func cleanArchivePath(name string) string {
	rel := path.Clean(strings.TrimLeft(name, "/"))
	if rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return ""
	}
	return rel
}

// dirSource reads from an archive unpacked in a directory (an OCI layout, or
// an extracted docker save).
type dirSource struct{ dir string }

func (d dirSource) open(name string) (io.ReadCloser, error) {
	rel := cleanArchivePath(name)
	if rel == "" {
		return nil, fmt.Errorf("archive path %q: %w", name, errdefs.ErrInvalid)
	}
	// Only a regular file is opened: a FIFO in the layout would block the
	// import, a device could act on being opened.
	f, err := regfile.Open(unix.AT_FDCWD, filepath.Join(d.dir, filepath.FromSlash(rel)), 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s not in archive: %w", rel, errdefs.ErrNotFound)
	}
	var kind *regfile.KindError
	if errors.As(err, &kind) {
		return nil, fmt.Errorf("%s is %w: %w", rel, kind, errdefs.ErrInvalid)
	}
	return f, err
}

// tarSource holds the regular members of a tar archive, extracted under
// flat names into a staging directory; member names are only map keys and
// never reach the file system. Symbolic and hard links between members are
// followed inside the archive.
type tarSource struct {
	files map[string]string // member path -> staged file
	links map[string]string // member path -> member path it points to
}

// openTarSource extracts the archive at p (plain or gzip-compressed tar)
// into dir.
func openTarSource(ctx context.Context, p, dir string) (*tarSource, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("open archive: %w", err)
	}
	defer f.Close()
	return readTarSource(ctx, f, p, dir)
}

// readTarSource extracts the archive (plain or gzip-compressed tar) that
// in streams into dir; p names it in errors.
func readTarSource(ctx context.Context, in io.Reader, p, dir string) (*tarSource, error) {
	br := bufio.NewReader(in)
	var r io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("archive %s: %v: %w", p, err, errdefs.ErrInvalid)
		}
		defer zr.Close()
		r = zr
	}
	src := &tarSource{files: map[string]string{}, links: map[string]string{}}
	tr := tar.NewReader(&ctxReader{ctx: ctx, r: r})
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil && n == 0 {
			return nil, fmt.Errorf("%s is not an OCI image layout or docker-save archive (%v): %w", p, err, errdefs.ErrInvalid)
		}
		if err != nil {
			return nil, fmt.Errorf("archive %s: %v: %w", p, err, errdefs.ErrInvalid)
		}
		name := cleanArchivePath(hdr.Name)
		if name == "" {
			continue
		}
		if sparse(hdr) {
			return nil, fmt.Errorf("archive %s: member %s: sparse files are not supported: %w", p, name, errdefs.ErrInvalid)
		}
		switch hdr.Typeflag {
		case tar.TypeReg:
			staged := filepath.Join(dir, strconv.Itoa(n))
			if err := copyToFile(staged, tr); err != nil {
				return nil, fmt.Errorf("archive %s: member %s: %w", p, name, wrapTruncated(err))
			}
			src.files[name] = staged
			delete(src.links, name)
		case tar.TypeSymlink:
			if t := cleanArchivePath(path.Join(path.Dir(name), hdr.Linkname)); t != "" && !path.IsAbs(hdr.Linkname) {
				src.links[name] = t
			}
		case tar.TypeLink:
			if t := cleanArchivePath(hdr.Linkname); t != "" {
				src.links[name] = t
			}
		}
	}
	if len(src.files) == 0 {
		return nil, fmt.Errorf("archive %s: no files: %w", p, errdefs.ErrInvalid)
	}
	return src, nil
}

// sparse reports whether archive/tar reads the entry as a sparse file
// (the GNU formats, old and PAX).
func sparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

func (t *tarSource) open(name string) (io.ReadCloser, error) {
	rel := cleanArchivePath(name)
	for range 16 {
		if staged, ok := t.files[rel]; ok {
			return os.Open(staged)
		}
		target, ok := t.links[rel]
		if !ok {
			break
		}
		rel = target
	}
	return nil, fmt.Errorf("%s not in archive: %w", name, errdefs.ErrNotFound)
}

// wrapTruncated marks a short read of an archive as invalid input.
func wrapTruncated(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("truncated: %w", errdefs.ErrInvalid)
	}
	return err
}

func copyToFile(p string, r io.Reader) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ctxReader fails reads once its context is done, so long copies stop.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
