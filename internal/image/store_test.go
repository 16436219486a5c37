package image

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/testutil"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "image"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// assertEmpty checks that the store holds no image, blob, snapshot or
// staging leftover.
func assertEmpty(t *testing.T, s *Store) {
	t.Helper()
	imgs, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 0 {
		t.Errorf("store lists %d images, want none", len(imgs))
	}
	for _, d := range []string{"blobs/sha256", "snapshots", "tmp"} {
		ents, _ := os.ReadDir(s.path(d))
		if len(ents) != 0 {
			t.Errorf("%s holds %d entries, want none", d, len(ents))
		}
	}
}

func busyboxLayout(t *testing.T, ref string) string {
	return testutil.OCILayout(t, testutil.BusyboxRootfs(t), testutil.ImageOptions{
		Ref: ref, Cmd: []string{"sh"}, Env: []string{"PATH=/bin", "MARK=1"}, WorkingDir: "/home/app", User: "app",
	})
}

func TestNormalizeName(t *testing.T) {
	for in, want := range map[string]string{
		"busybox":                          "busybox:latest",
		"busybox:latest":                   "busybox:latest",
		"docker.io/library/busybox:1.36":   "busybox:1.36",
		"docker.io/foo/bar":                "foo/bar:latest",
		"localhost/x:y":                    "localhost/x:y",
		"registry.example:5000/a/b:v1.2-3": "registry.example:5000/a/b:v1.2-3",
	} {
		got, err := NormalizeName(in)
		if err != nil || got != want {
			t.Errorf("NormalizeName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "Busybox", "a:b:c", "x@sha256:00", "a//b", "-a", "a:" + strings.Repeat("t", 129)} {
		if _, err := NormalizeName(in); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("NormalizeName(%q) = %v, want ErrInvalid", in, err)
		}
	}
}

func TestImportFormats(t *testing.T) {
	testutil.NeedRoot(t, "layer ownership (lchown) in snapshots")
	layout := busyboxLayout(t, "localhost/bb:1")
	s := newStore(t)
	ctx := context.Background()

	fromDir, err := s.Import(ctx, layout, "")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(fromDir.Names, []string{"localhost/bb:1"}) {
		t.Errorf("names = %q", fromDir.Names)
	}
	c := fromDir.Config.Config
	if c.WorkingDir != "/home/app" || c.User != "app" || !slices.Contains(c.Env, "MARK=1") || !slices.Equal(c.Cmd, []string{"sh"}) {
		t.Errorf("config = %+v", c)
	}
	if len(fromDir.Layers) != 1 || len(fromDir.DiffIDs) != 1 || fromDir.Size <= 0 {
		t.Errorf("layers %v diffIDs %v size %d", fromDir.Layers, fromDir.DiffIDs, fromDir.Size)
	}

	fromTar, err := s.Import(ctx, testutil.OCIArchive(t, layout), "busybox")
	if err != nil {
		t.Fatal(err)
	}
	fromDocker, err := s.Import(ctx, testutil.DockerArchive(t, layout, "docker.io/library/other:2"), "")
	if err != nil {
		t.Fatal(err)
	}
	if fromTar.ID != fromDir.ID || fromDocker.ID != fromDir.ID {
		t.Errorf("IDs differ: dir %s tar %s docker %s", fromDir.ID, fromTar.ID, fromDocker.ID)
	}
	if fromDocker.DiffIDs[0] != fromDir.DiffIDs[0] {
		t.Errorf("docker diffID %s, oci %s", fromDocker.DiffIDs[0], fromDir.DiffIDs[0])
	}
	want := []string{"busybox:latest", "localhost/bb:1", "other:2"}
	if !slices.Equal(fromDocker.Names, want) {
		t.Errorf("names after three imports = %q, want %q", fromDocker.Names, want)
	}

	for _, ref := range []string{"busybox", "docker.io/library/busybox:latest", "other:2", fromDir.ID.String(), fromDir.ID.Encoded()[:4], fromDir.ID.Encoded()[:12]} {
		img, err := s.Resolve(ref)
		if err != nil || img.ID != fromDir.ID {
			t.Errorf("Resolve(%q) = %s, %v", ref, img.ID, err)
		}
	}
	for _, ref := range []string{"nope", "busybox:2", "ffffffff", "sha256:" + strings.Repeat("0", 64)} {
		if _, err := s.Resolve(ref); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("Resolve(%q) = %v, want ErrNotFound", ref, err)
		}
	}

	dirs, err := s.Layers(ctx, fromDocker)
	if err != nil {
		t.Fatal(err)
	}
	checkBusyboxSnapshot(t, dirs[0])

	// Every name goes, then the image, its blobs and its snapshot.
	for _, n := range want[:2] {
		if err := s.Remove(n); err != nil {
			t.Fatal(err)
		}
	}
	if imgs, _ := s.List(); len(imgs) != 1 || !slices.Equal(imgs[0].Names, []string{"other:2"}) {
		t.Fatalf("after removing two names: %+v", imgs)
	}
	if err := s.Remove(fromDir.ID.Encoded()[:8]); err != nil {
		t.Fatal(err)
	}
	assertEmpty(t, s)
}

func checkBusyboxSnapshot(t *testing.T, dir string) {
	t.Helper()
	if l, err := os.Readlink(filepath.Join(dir, "bin", "sh")); err != nil || l != "busybox" {
		t.Errorf("bin/sh -> %q, %v", l, err)
	}
	st, err := os.Stat(filepath.Join(dir, "tmp"))
	if err != nil || st.Mode()&os.ModeSticky == 0 {
		t.Errorf("tmp: %v %v", st, err)
	}
	out, err := exec.Command(filepath.Join(dir, "bin", "busybox"), "true").CombinedOutput()
	if err != nil {
		t.Errorf("busybox from snapshot: %v %s", err, out)
	}
	if uid, gid := owner(t, filepath.Join(dir, "home", "app")); uid != 1000 || gid != 1000 {
		t.Errorf("home/app owned by %d:%d", uid, gid)
	}
}

func TestMultiPlatformIndex(t *testing.T) {
	b := testutil.NewLayout(t)
	layer := []testutil.Layer{{Entries: []testutil.TarEntry{testutil.File("f", "x", 0o644)}}}
	arm := b.AddImage(layer, testutil.ImageOptions{Env: []string{"ARCH=arm64"}})
	arm.Platform = &ocispec.Platform{OS: "linux", Architecture: "arm64"}
	amd := b.AddImage(layer, testutil.ImageOptions{Env: []string{"ARCH=amd64"}})
	amd.Platform = &ocispec.Platform{OS: "linux", Architecture: "amd64"}
	idx := b.AddIndex([]ocispec.Descriptor{arm, amd})
	b.Tag(idx, "multi:1")
	s := newStore(t)
	img, err := s.Import(context.Background(), b.Write(), "")
	if err != nil {
		t.Fatal(err)
	}
	if img.Manifest != amd.Digest || !slices.Contains(img.Config.Config.Env, "ARCH=amd64") || !slices.Equal(img.Names, []string{"multi:1"}) {
		t.Errorf("picked %s %v %q, want amd64 manifest %s", img.Manifest, img.Config.Config.Env, img.Names, amd.Digest)
	}
	if _, err := os.Stat(s.blobPath(idx.Digest)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("index blob kept: %v", err)
	}
}

func TestLayoutWithSeveralImages(t *testing.T) {
	b := testutil.NewLayout(t)
	b.Tag(b.AddImage(nil, testutil.ImageOptions{Env: []string{"N=a"}}), "a:1")
	b.Tag(b.AddImage(nil, testutil.ImageOptions{Env: []string{"N=b"}}), "b:1")
	dir := b.Write()
	s := newStore(t)
	if _, err := s.Import(context.Background(), dir, ""); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("import of two-image layout without a name: %v, want ErrInvalid", err)
	}
	assertEmpty(t, s)
	img, err := s.Import(context.Background(), dir, "b:1")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(img.Config.Config.Env, "N=b") {
		t.Errorf("picked %v, want image b", img.Config.Config.Env)
	}
}

func TestFindByPrefix(t *testing.T) {
	id := func(hex string) digest.Digest {
		return digest.Digest("sha256:" + hex + strings.Repeat("0", 64-len(hex)))
	}
	r := &refs{Images: map[digest.Digest]*record{
		id("abcd1"): {Names: []string{"one:latest"}},
		id("abcd2"): {},
		id("beef"):  {Names: []string{"abcd:latest"}},
	}}
	for ref, want := range map[string]digest.Digest{"abcd1": id("abcd1"), "beef": id("beef"), "abcd": id("beef"), "one": id("abcd1"), id("abcd2").String(): id("abcd2")} {
		got, _, err := r.find(ref)
		if err != nil || got != want {
			t.Errorf("find(%q) = %s, %v; want %s", ref, got, err, want)
		}
	}
	for _, ref := range []string{"abc1", "abcd0", "bee", "sha256:abcd"} {
		if _, _, err := r.find(ref); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("find(%q) = %v, want ErrNotFound", ref, err)
		}
	}
	delete(r.Images, id("beef"))
	if _, _, err := r.find("abcd"); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "2 images") {
		t.Errorf("ambiguous prefix: %v", err)
	}
}

func TestHostileDockerArchive(t *testing.T) {
	s, _, check := hostileSetup(t)
	defer check()
	layer := testutil.LayerBlob(t, testutil.Layer{Entries: []testutil.TarEntry{testutil.File("f", "x", 0o644)}})
	cfg, _ := json.Marshal(testutil.ImageConfig(testutil.ImageOptions{}, []digest.Digest{layer.DiffID}))
	wrongCfg, _ := json.Marshal(testutil.ImageConfig(testutil.ImageOptions{}, []digest.Digest{digest.FromString("other")}))
	manifest := func(config, layer string) testutil.TarEntry {
		m, _ := json.Marshal([]dockerEntry{{Config: config, RepoTags: []string{"evil:1"}, Layers: []string{layer}}})
		return testutil.File("manifest.json", string(m), 0o644)
	}
	for name, entries := range map[string][]testutil.TarEntry{
		"config outside": {manifest("../../sentinel", "l.tar"), testutil.File("l.tar", string(layer.Data), 0o644)},
		"link outside":   {manifest("c.json", "l.tar"), testutil.File("c.json", string(cfg), 0o644), testutil.Symlink("l.tar", "../../../sentinel")},
		"wrong diff_id":  {manifest("c.json", "l.tar"), testutil.File("c.json", string(wrongCfg), 0o644), testutil.File("l.tar", string(layer.Data), 0o644)},
		"member escapes": {testutil.File("../../pwned", "x", 0o644), manifest("c.json", "../../pwned"), testutil.File("c.json", string(cfg), 0o644)},
	} {
		if _, err := s.Import(context.Background(), testutil.WriteTar(t, entries), ""); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
		assertEmpty(t, s)
	}
	good := []testutil.TarEntry{manifest("c.json", "l.tar"), testutil.File("c.json", string(cfg), 0o644), testutil.File("l.tar", string(layer.Data), 0o644)}
	img, err := s.Import(context.Background(), testutil.WriteTar(t, good), "")
	if err != nil || !slices.Equal(img.Names, []string{"evil:1"}) {
		t.Fatalf("hand-made docker archive: %+v, %v", img.Names, err)
	}
	if _, err := s.Layers(context.Background(), img); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("evil:1"); err != nil {
		t.Fatal(err)
	}
}

func TestRemoveKeepsSharedAndLeased(t *testing.T) {
	shared := testutil.Layer{Entries: []testutil.TarEntry{testutil.File("shared", "s", 0o644)}, Compression: testutil.Gzip}
	layoutA := testutil.RawLayout(t, []testutil.Layer{shared, {Entries: []testutil.TarEntry{testutil.File("a", "a", 0o644)}}}, testutil.ImageOptions{Ref: "a"})
	layoutB := testutil.RawLayout(t, []testutil.Layer{shared, {Entries: []testutil.TarEntry{testutil.File("b", "b", 0o644)}, Compression: testutil.Zstd}}, testutil.ImageOptions{Ref: "b"})
	s := newStore(t)
	ctx := context.Background()
	a, err := s.Import(ctx, layoutA, "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Import(ctx, layoutB, "")
	if err != nil {
		t.Fatal(err)
	}
	dirsA, err := s.Layers(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	dirsB, err := s.Layers(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if dirsA[0] != dirsB[0] {
		t.Fatalf("shared layer unpacked twice: %s %s", dirsA[0], dirsB[0])
	}
	lease, err := s.Use(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("b:latest"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dirsA[1]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("unused snapshot of a kept: %v", err)
	}
	for _, d := range dirsB {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("leased snapshot %s collected: %v", d, err)
		}
	}
	if _, err := s.Layers(ctx, b); err != nil {
		t.Errorf("Layers of a removed but leased image: %v", err)
	}
	if err := lease.Release(); err != nil {
		t.Fatal(err)
	}
	if err := s.GC(); err != nil {
		t.Fatal(err)
	}
	assertEmpty(t, s)
}

func TestConcurrentImportAndLayers(t *testing.T) {
	layers := []testutil.Layer{
		{Entries: []testutil.TarEntry{testutil.Dir("d", 0o755), testutil.File("d/1", strings.Repeat("1", 1<<16), 0o644)}, Compression: testutil.Gzip},
		{Entries: []testutil.TarEntry{testutil.File("d/2", "2", 0o644)}, Compression: testutil.Zstd},
	}
	layout := testutil.RawLayout(t, layers, testutil.ImageOptions{Ref: "conc"})
	archive := testutil.OCIArchive(t, layout)
	root := filepath.Join(t.TempDir(), "image")
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	// Two other processes do the same as the goroutines below.
	var procs []*exec.Cmd
	for range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
		cmd.Env = append(os.Environ(), "BERTH_IMAGE_HELPER="+root+"\n"+archive)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, cmd)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := layout
			if i%2 == 1 {
				src = archive
			}
			errs <- importAndUnpack(s, src)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for _, p := range procs {
		if err := p.Wait(); err != nil {
			t.Errorf("helper process: %v", err)
		}
	}
	imgs, err := s.List()
	if err != nil || len(imgs) != 1 {
		t.Fatalf("List = %d images, %v; want 1", len(imgs), err)
	}
	dirs, err := s.Layers(context.Background(), imgs[0])
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dirs[1], "d", "2"))
	if err != nil || string(data) != "2" {
		t.Errorf("d/2 = %q, %v", data, err)
	}
	if ents, _ := os.ReadDir(s.path("tmp")); len(ents) != 0 {
		t.Errorf("tmp holds %d leftovers", len(ents))
	}
}

func importAndUnpack(s *Store, src string) error {
	img, err := s.Import(context.Background(), src, "")
	if err != nil {
		return err
	}
	_, err = s.Layers(context.Background(), img)
	return err
}

// TestHelperProcess is the second process of TestConcurrentImportAndLayers.
func TestHelperProcess(t *testing.T) {
	env := os.Getenv("BERTH_IMAGE_HELPER")
	if env == "" {
		t.Skip("helper process for TestConcurrentImportAndLayers")
	}
	root, archive, _ := strings.Cut(env, "\n")
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := importAndUnpack(s, archive); err != nil {
			t.Fatal(err)
		}
	}
}
