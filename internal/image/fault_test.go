package image

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/testutil"
)

func smallLayout(t *testing.T, ref, content string) string {
	t.Helper()
	return testutil.RawLayout(t, []testutil.Layer{{Entries: []testutil.TarEntry{testutil.File("f", content, 0o644)}}}, testutil.ImageOptions{Ref: ref})
}

// A killed import leaves its stage in tmp/; the next import must collect
// it, and must not touch a stage whose owner still holds it.
func TestImportSweepsStagesOfKilledImports(t *testing.T) {
	s := newStore(t)
	dead := filepath.Join(s.path("tmp"), "import-dead")
	if err := os.MkdirAll(filepath.Join(dead, "in"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dead, "in", "0"), make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	live, err := s.newStage("import-")
	if err != nil {
		t.Fatal(err)
	}
	defer live.close()
	if _, err := s.Import(context.Background(), smallLayout(t, "a", "a"), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stage of a killed import survived the next import: %v", err)
	}
	if _, err := os.Stat(live.dir); err != nil {
		t.Errorf("a stage still in use was swept: %v", err)
	}
}

// An image removed while an instance held it keeps its blobs until the
// lease ends; the next import collects them.
func TestImportCollectsWhatEndedLeasesKept(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	a, err := s.Import(ctx, smallLayout(t, "a", "content of a"), "")
	if err != nil {
		t.Fatal(err)
	}
	lease, err := s.Use(a)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.blobPath(a.Layers[0])); err != nil {
		t.Fatalf("leased layer collected: %v", err)
	}
	if err := lease.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import(ctx, smallLayout(t, "b", "content of b"), ""); err != nil {
		t.Fatal(err)
	}
	for _, d := range append(a.Layers, a.Manifest, a.ID) {
		if _, err := os.Stat(s.blobPath(d)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("blob %s of the removed image is still stored after its lease ended: %v", d, err)
		}
	}
}

// The error of a path that is no image names the path once.
func TestImportNotAnImageNamesPathOnce(t *testing.T) {
	s := newStore(t)
	dir := t.TempDir()
	_, err := s.Import(context.Background(), dir, "")
	if !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("import of an empty directory: %v", err)
	}
	if n := strings.Count(err.Error(), dir); n != 1 {
		t.Errorf("error names %s %d times: %v", dir, n, err)
	}
	assertEmpty(t, s)
}

// A store on a read-only file system can still be listed and inspected.
func TestReadOnlyStoreLists(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.Missing(t, "needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if err := unix.Mount("none", dir, "tmpfs", 0, "size=8m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	s, err := Open(filepath.Join(dir, "image"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import(context.Background(), smallLayout(t, "a", "a"), ""); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	ro, err := Open(filepath.Join(dir, "image"))
	if err != nil {
		t.Fatal(err)
	}
	if imgs, err := ro.List(); err != nil || len(imgs) != 1 {
		t.Errorf("List on a read-only store = %d images, %v", len(imgs), err)
	}
	if _, err := ro.Resolve("a"); err != nil {
		t.Errorf("Resolve on a read-only store: %v", err)
	}
}

// Errors about a malformed archive speak of the archive, not of berth's
// Go types, and name the member that is missing.
func TestBrokenDockerArchiveErrors(t *testing.T) {
	s := newStore(t)
	for what, tc := range map[string]struct{ manifest, want string }{
		"manifest is an object": {`{}`, "want a list"},
		"config is a number":    {`[{"Config": 7}]`, `"Config"`},
		"missing config":        {`[{"Config": "nosuch.json", "Layers": []}]`, "nosuch.json: missing from the archive"},
		"config outside":        {`[{"Config": "../../etc/passwd", "Layers": []}]`, "missing from the archive"},
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(tc.manifest), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := s.Import(context.Background(), dir, "")
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "Go ") || strings.Contains(err.Error(), "image.") {
			t.Errorf("%s: %v; want an invalid-input error saying %q", what, err, tc.want)
		}
	}
	assertEmpty(t, s)
}
