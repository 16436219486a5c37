package image

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/testutil"
)

// streamPull does what a pull does with the image of the OCI layout dir:
// every blob placed at BlobPath and vouched for, every layer given to
// Unpack as it would arrive, in its own place unless swap says to hand
// layer i the bytes of layer swap[i]. It returns Commit's result.
func streamPull(t *testing.T, s *Store, dir string, swap map[int]int) (Image, error) {
	t.Helper()
	var idx ocispec.Index
	var m ocispec.Manifest
	testutil.ReadJSON(t, filepath.Join(dir, "index.json"), &idx)
	blob := func(d ocispec.Descriptor) string {
		return filepath.Join(dir, "blobs", d.Digest.Algorithm().String(), d.Digest.Encoded())
	}
	testutil.ReadJSON(t, blob(idx.Manifests[0]), &m)
	in, err := s.NewIngest()
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	for _, d := range append([]ocispec.Descriptor{idx.Manifests[0], m.Config}, m.Layers...) {
		if err := os.Link(blob(d), in.BlobPath(d.Digest)); err != nil {
			t.Fatal(err)
		}
		in.Verified(d.Digest)
	}
	for i, l := range m.Layers {
		from := l
		if j, ok := swap[i]; ok {
			from = m.Layers[j]
		}
		f, err := os.Open(blob(from))
		if err != nil {
			t.Fatal(err)
		}
		err = in.Unpack(context.Background(), l, f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	return in.Commit(context.Background(), idx.Manifests[0], "x")
}

func twoLayers(t *testing.T) string {
	return testutil.RawLayout(t, []testutil.Layer{
		{Entries: []testutil.TarEntry{testutil.File("a", "1", 0o644)}, Compression: testutil.Gzip},
		{Entries: []testutil.TarEntry{testutil.File("b", "2", 0o644)}},
	}, testutil.ImageOptions{Ref: "x"})
}

// A layer unpacked while it downloaded is taken as it is, once its diffID
// is the config's: handing it another layer's bytes is caught at commit.
func TestIngestTakesStreamedLayersChecked(t *testing.T) {
	s := newStore(t)
	if _, err := streamPull(t, s, twoLayers(t), map[int]int{0: 1}); err == nil || !strings.Contains(err.Error(), "does not match diff_id") {
		t.Fatalf("commit of a layer unpacked from other bytes: %v", err)
	}
	assertEmpty(t, s)
	img, err := streamPull(t, s, twoLayers(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range img.DiffIDs {
		if _, err := os.Stat(s.snapshotPath(d)); err != nil {
			t.Errorf("layer %s not placed: %v", d, err)
		}
	}
}

// A pull's snapshots are placed unsynced, marked with the boot that
// unpacked them: Layers keeps them under that boot, and unpacks them
// again from their blobs under another (the machine went down since).
func TestUnsyncedSnapshotsDroppedAfterReboot(t *testing.T) {
	s := newStore(t)
	img, err := streamPull(t, s, twoLayers(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	d := img.DiffIDs[0]
	junk := filepath.Join(s.snapshotPath(d), "junk")
	if err := os.WriteFile(junk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Layers(context.Background(), img); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(junk); err != nil {
		t.Fatalf("the same boot dropped the snapshot: %v", err)
	}
	if err := os.WriteFile(s.unsyncedPath(d), []byte("another-boot\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dirs, err := s.Layers(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(junk); err == nil {
		t.Fatal("a snapshot left unsynced by an earlier boot was kept")
	}
	if data, err := os.ReadFile(filepath.Join(dirs[0], "a")); err != nil || string(data) != "1" {
		t.Fatalf("the layer unpacked again: %q %v", data, err)
	}
	if _, err := os.Stat(s.unsyncedPath(d)); err == nil {
		t.Fatal("the marker outlived its snapshot")
	}
	if err := s.Remove("x"); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(s.path("unsynced")); len(ents) != 0 {
		t.Fatalf("markers left after the image's removal: %v", ents)
	}
}
