package image

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/testutil"
)

func owner(t *testing.T, p string) (int, int) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return int(st.Uid), int(st.Gid)
}

// unpackImage imports a raw layout and returns its snapshot directories.
// The error is the import's (which unpacks) or the Layers call's.
func unpackImage(t *testing.T, s *Store, layers []testutil.Layer) ([]string, error) {
	t.Helper()
	img, err := s.Import(context.Background(), testutil.RawLayout(t, layers, testutil.ImageOptions{}), "")
	if err != nil {
		return nil, err
	}
	return s.Layers(context.Background(), img)
}

func TestUnpackEntryKinds(t *testing.T) {
	testutil.NeedRoot(t, "device nodes, ownership and trusted.overlay xattrs")
	setuid := testutil.File("bin/su", "#!", 0o4755)
	setuid.Uid, setuid.Gid = 0, 0
	owned := testutil.File("home/app/f", "mine", 0o600)
	owned.Uid, owned.Gid = 1000, 50
	owned.PAXRecords = map[string]string{"SCHILY.xattr.user.note": "hi", "SCHILY.xattr.trusted.overlay.opaque": "y"}
	sticky := testutil.Dir("tmp", 0o1777)
	lower := testutil.Layer{Compression: testutil.Gzip, Entries: []testutil.TarEntry{
		testutil.Dir("./", 0o755), testutil.Dir("etc", 0o755), testutil.File("etc/a", "a", 0o644),
		testutil.Dir("opt", 0o755), testutil.File("opt/old", "old", 0o644),
		setuid, sticky, testutil.Dir("home/app", 0o755), owned,
		testutil.Hardlink("etc/a-link", "etc/a"),
		testutil.Symlink("etc/abs", "/etc/a"),
		testutil.CharDev("dev/null", 1, 3), testutil.BlockDev("dev/loop9", 7, 9), testutil.Fifo("run/fifo"),
	}}
	upper := testutil.Layer{Compression: testutil.Zstd, Entries: []testutil.TarEntry{
		testutil.Whiteout("etc/a"), testutil.Opaque("opt"), testutil.File("opt/new", "new", 0o644),
		testutil.Whiteout("gone"), testutil.Dir("gone", 0o755),
		testutil.File("mine", "x", 0o644), testutil.Whiteout("mine"),
	}}
	s := newStore(t)
	dirs, err := unpackImage(t, s, []testutil.Layer{lower, upper})
	if err != nil {
		t.Fatal(err)
	}
	lo, up := dirs[0], dirs[1]

	st := lstat(t, filepath.Join(lo, "bin/su"))
	if st.Mode&0o7777 != 0o4755 {
		t.Errorf("bin/su mode %o, want 4755", st.Mode&0o7777)
	}
	if st := lstat(t, filepath.Join(lo, "tmp")); st.Mode&0o7777 != 0o1777 {
		t.Errorf("tmp mode %o, want 1777", st.Mode&0o7777)
	}
	if uid, gid := owner(t, filepath.Join(lo, "home/app/f")); uid != 1000 || gid != 50 {
		t.Errorf("home/app/f owner %d:%d", uid, gid)
	}
	if v := getxattr(t, filepath.Join(lo, "home/app/f"), "user.note"); v != "hi" {
		t.Errorf("user.note = %q", v)
	}
	if v := getxattr(t, filepath.Join(lo, "home/app/f"), opaqueXattr); v != "" {
		t.Errorf("layer set %s itself: %q", opaqueXattr, v)
	}
	if a, l := lstat(t, filepath.Join(lo, "etc/a")), lstat(t, filepath.Join(lo, "etc/a-link")); a.Ino != l.Ino || a.Nlink != 2 {
		t.Errorf("hard link: inodes %d %d nlink %d", a.Ino, l.Ino, a.Nlink)
	}
	if l, _ := os.Readlink(filepath.Join(lo, "etc/abs")); l != "/etc/a" {
		t.Errorf("etc/abs -> %q", l)
	}
	if st := lstat(t, filepath.Join(lo, "dev/null")); st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(1, 3) {
		t.Errorf("dev/null mode %o rdev %d", st.Mode, st.Rdev)
	}
	if st := lstat(t, filepath.Join(lo, "dev/loop9")); st.Mode&unix.S_IFMT != unix.S_IFBLK {
		t.Errorf("dev/loop9 mode %o", st.Mode)
	}
	if st := lstat(t, filepath.Join(lo, "run/fifo")); st.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("run/fifo mode %o", st.Mode)
	}
	if st := lstat(t, filepath.Join(lo, "etc")); st.Mtim.Sec != testutil.Epoch.Unix() {
		t.Errorf("etc mtime %d, want %d", st.Mtim.Sec, testutil.Epoch.Unix())
	}

	if !isWhiteout(t, filepath.Join(up, "etc/a")) {
		t.Errorf("etc/a is not an overlay whiteout")
	}
	if v := getxattr(t, filepath.Join(up, "opt"), opaqueXattr); v != "y" {
		t.Errorf("opt opaque xattr = %q", v)
	}
	if _, err := os.Lstat(filepath.Join(up, "opt", opaqueMarker)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("opaque marker file left in snapshot: %v", err)
	}
	if v := getxattr(t, filepath.Join(up, "gone"), opaqueXattr); v != "y" {
		t.Errorf("dir replacing a whiteout is not opaque: %q", v)
	}
	if data, err := os.ReadFile(filepath.Join(up, "mine")); err != nil || string(data) != "x" {
		t.Errorf("a whiteout hid its own layer's file: %q %v", data, err)
	}
	checkOverlay(t, lo, up)
}

// checkOverlay mounts the two snapshots as overlayfs and checks what the
// merged view shows.
func checkOverlay(t *testing.T, lo, up string) {
	t.Helper()
	mnt := t.TempDir()
	if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, "lowerdir="+up+":"+lo); err != nil {
		t.Fatalf("mount the snapshots as overlayfs: %v", err)
	}
	defer unix.Unmount(mnt, unix.MNT_DETACH)
	for p, want := range map[string]bool{"etc/a": false, "etc/a-link": true, "opt/old": false, "opt/new": true, "gone": true, "mine": true, "bin/su": true} {
		_, err := os.Lstat(filepath.Join(mnt, p))
		if (err == nil) != want {
			t.Errorf("merged %s: exists=%v, want %v", p, err == nil, want)
		}
	}
}

func lstat(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func isWhiteout(t *testing.T, p string) bool {
	st := lstat(t, p)
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

func getxattr(t *testing.T, p, name string) string {
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(p, name, buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

// hostileSetup returns a store inside a directory that also holds a
// sentinel file, and a check that the directory holds nothing else and the
// sentinel is untouched.
func hostileSetup(t *testing.T) (*Store, string, func()) {
	t.Helper()
	base := t.TempDir()
	sentinel := filepath.Join(base, "sentinel")
	if err := os.WriteFile(sentinel, []byte("safe"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Open(filepath.Join(base, "store"))
	if err != nil {
		t.Fatal(err)
	}
	return s, sentinel, func() {
		t.Helper()
		data, err := os.ReadFile(sentinel)
		if err != nil || string(data) != "safe" {
			t.Errorf("sentinel changed: %q %v", data, err)
		}
		ents, _ := os.ReadDir(base)
		for _, e := range ents {
			if e.Name() != "sentinel" && e.Name() != "store" {
				t.Errorf("written outside the store: %s", e.Name())
			}
		}
		if ents, _ := os.ReadDir(filepath.Join(base, "..")); len(ents) > 0 {
			for _, e := range ents {
				if strings.Contains(e.Name(), "pwned") {
					t.Errorf("written above the test directory: %s", e.Name())
				}
			}
		}
		if ents, _ := os.ReadDir(s.path("tmp")); len(ents) != 0 {
			t.Errorf("tmp holds %d leftovers", len(ents))
		}
	}
}

func TestHostileLayers(t *testing.T) {
	f := testutil.File
	cases := map[string][]testutil.TarEntry{
		"dotdot":             {f("../pwned", "x", 0o644)},
		"dotdot deep":        {f("a/../../../pwned", "x", 0o644)},
		"dotdot to sentinel": {f("../../../sentinel", "x", 0o644)},
		"hardlink outside":   {testutil.Hardlink("l", "../../../sentinel")},
		"hardlink absolute":  {testutil.Hardlink("l", "/etc/passwd")},
		"hardlink later":     {testutil.Hardlink("l", "x"), f("x", "x", 0o644)},
		"hardlink to dir":    {testutil.Dir("d", 0o755), testutil.Hardlink("l", "d")},
		"symlink then write": {testutil.Symlink("evil", "SENTINEL_DIR"), f("evil/pwned", "x", 0o644)},
		"relative symlink":   {testutil.Symlink("evil", "../../../.."), f("evil/pwned", "x", 0o644)},
		"symlink then dir":   {testutil.Symlink("evil", "SENTINEL_DIR"), testutil.Dir("evil/sub", 0o755)},
		"symlink then link":  {f("x", "x", 0o644), testutil.Symlink("evil", "SENTINEL_DIR"), testutil.Hardlink("evil/pwned", "x")},
		"symlink whiteout":   {testutil.Symlink("evil", "SENTINEL_DIR"), testutil.Whiteout("evil/sentinel")},
		"symlink opaque":     {testutil.Symlink("evil", "SENTINEL_DIR"), testutil.Opaque("evil")},
		"file root":          {f(".", "x", 0o644)},
	}
	for name, entries := range cases {
		t.Run(name, func(t *testing.T) {
			s, sentinel, check := hostileSetup(t)
			defer check()
			for i := range entries {
				if entries[i].Linkname == "SENTINEL_DIR" {
					entries[i].Linkname = filepath.Dir(sentinel)
				}
			}
			// Refused by the import, which then stores nothing.
			_, err := s.Import(context.Background(), testutil.RawLayout(t, []testutil.Layer{{Entries: entries}}, testutil.ImageOptions{}), "")
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("Import = %v, want ErrInvalid", err)
			}
			if testing.Verbose() {
				t.Log(err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			assertEmpty(t, s)
		})
	}
}

func TestSymlinksAreData(t *testing.T) {
	s, sentinel, check := hostileSetup(t)
	defer check()
	// A symlink to the sentinel, then a file at the same path: the file
	// replaces the link instead of writing through it.
	dirs, err := unpackImage(t, s, []testutil.Layer{{Entries: []testutil.TarEntry{
		testutil.Symlink("s", sentinel), testutil.File("s", "pwned", 0o644),
		testutil.Symlink("t", "../../../sentinel"), testutil.Hardlink("u", "t"),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(filepath.Join(dirs[0], "s")); string(data) != "pwned" {
		t.Errorf("s = %q", data)
	}
	if l, _ := os.Readlink(filepath.Join(dirs[0], "u")); l != "../../../sentinel" {
		t.Errorf("hard link to a symlink: %q", l)
	}
}

func TestBrokenBlobs(t *testing.T) {
	layers := []testutil.Layer{{Entries: []testutil.TarEntry{testutil.File("f", strings.Repeat("data", 1000), 0o644)}, Compression: testutil.Gzip}}
	corrupt := map[string]func(p string) error{
		"bad digest": func(p string) error {
			data, _ := os.ReadFile(p)
			data[len(data)/2] ^= 0xff
			return os.WriteFile(p, data, 0o644)
		},
		"truncated": func(p string) error { fi, _ := os.Stat(p); return os.Truncate(p, fi.Size()/2) },
		"too long":  func(p string) error { return appendFile(p, "extra") },
		"missing":   os.Remove,
	}
	for name, fn := range corrupt {
		t.Run(name, func(t *testing.T) {
			b := testutil.NewLayout(t)
			b.Tag(b.AddImage(layers, testutil.ImageOptions{}), "x")
			dir := b.Write()
			layerHex := testutil.LayerBlob(t, layers[0]).Desc.Digest.Encoded()
			if _, err := os.Stat(b.BlobPath(testutil.LayerBlob(t, layers[0]).Desc.Digest)); err != nil {
				t.Fatalf("layer blob not where expected: %v", err)
			}
			if err := fn(filepath.Join(dir, "blobs", "sha256", layerHex)); err != nil {
				t.Fatal(err)
			}
			s := newStore(t)
			for _, src := range []string{dir, testutil.OCIArchive(t, dir)} {
				_, err := s.Import(context.Background(), src, "")
				if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), layerHex) {
					t.Errorf("import: %v, want ErrInvalid naming the blob", err)
				}
				assertEmpty(t, s)
			}
		})
	}
}

func appendFile(p, s string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString(s)
	return err
}

func TestTruncatedArchiveThenRetry(t *testing.T) {
	layout := testutil.RawLayout(t, []testutil.Layer{{Entries: []testutil.TarEntry{testutil.File("f", strings.Repeat("z", 1<<16), 0o644)}}}, testutil.ImageOptions{Ref: "t"})
	full := testutil.OCIArchive(t, layout)
	data, err := os.ReadFile(full)
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(t.TempDir(), "cut.tar")
	if err := os.WriteFile(cut, data[:len(data)/2+100], 0o644); err != nil {
		t.Fatal(err)
	}
	s := newStore(t)
	if _, err := s.Import(context.Background(), cut, ""); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("truncated archive: %v, want ErrInvalid", err)
	}
	assertEmpty(t, s)
	if _, err := s.Import(context.Background(), full, ""); err != nil {
		t.Fatalf("retry with the full archive: %v", err)
	}
}

func TestTruncatedLayerAndWrongDiffID(t *testing.T) {
	good := testutil.LayerBlob(t, testutil.Layer{Entries: []testutil.TarEntry{testutil.File("f", strings.Repeat("q", 4096), 0o644)}})
	for name, tc := range map[string]struct {
		data   []byte
		diffID string
	}{
		"truncated tar": {good.Data[:1000], ""},
		"wrong diffID":  {good.Data, "sha256:" + strings.Repeat("1", 64)},
	} {
		t.Run(name, func(t *testing.T) {
			b := testutil.NewLayout(t)
			l := b.AddBlob(tc.data, "application/vnd.oci.image.layer.v1.tar")
			diffID := l.Digest
			if tc.diffID != "" {
				diffID = digest.Digest(tc.diffID)
			}
			cfg := testutil.ImageConfig(testutil.ImageOptions{}, []digest.Digest{diffID})
			b.Tag(b.AddManifest(cfg, []ocispec.Descriptor{l}), "x")
			s := newStore(t)
			_, err := s.Import(context.Background(), b.Write(), "")
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("Import = %v, want ErrInvalid", err)
			}
			if testing.Verbose() {
				t.Log(err)
			}
			assertEmpty(t, s)
		})
	}
}

func TestCleanEntry(t *testing.T) {
	for in, want := range map[string]string{"/etc/x": "etc/x", "./a/b/": "a/b", "a/../b": "b", "/": "", "./": ""} {
		if got, err := cleanEntry(in); err != nil || got != want {
			t.Errorf("cleanEntry(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"..", "../x", "a/../../x", "/../x/../../y"} {
		if _, err := cleanEntry(in); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("cleanEntry(%q) = %v, want ErrInvalid", in, err)
		}
	}
}

// sparseLayer is a layer of one GNU sparse file (PAX format 0.1) whose
// few bytes claim size bytes of holes. archive/tar writes no sparse
// records, so they are patched in under keys of the same lengths.
func sparseLayer(t testing.TB, size int64) []byte {
	t.Helper()
	e := testutil.File("big", "", 0o644)
	e.PAXRecords = map[string]string{
		"SCHILY.xattr.user.n1": "1",                         // GNU.sparse.numblocks
		"SCHILY.xattr.u":       "0,0",                       // GNU.sparse.map
		"SCHILY.xattr.us":      strconv.FormatInt(size, 10), // GNU.sparse.size
	}
	data := testutil.TarBytes(t, []testutil.TarEntry{e})
	for from, to := range map[string]string{"SCHILY.xattr.user.n1": "GNU.sparse.numblocks", "SCHILY.xattr.u=": "GNU.sparse.map=", "SCHILY.xattr.us=": "GNU.sparse.size="} {
		if len(from) != len(to) || !bytes.Contains(data, []byte(from)) {
			t.Fatalf("cannot patch %q into the tar", to)
		}
		data = bytes.ReplaceAll(data, []byte(from), []byte(to))
	}
	return data
}

// A sparse file is refused: archive/tar reads its holes as zeros, so a
// few bytes of layer could fill the disk.
func TestSparseFileRefused(t *testing.T) {
	dir := t.TempDir()
	_, err := unpackLayer(context.Background(), bytes.NewReader(sparseLayer(t, 1<<30)), dir, false)
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "sparse") {
		t.Fatalf("unpackLayer = %v, want a sparse file refused", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "big")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the sparse file was written: %v", err)
	}
}
