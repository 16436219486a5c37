package image

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/testutil"
)

// Import unpacks every layer, so a run needs no unpacking; Layers unpacks
// again a snapshot that went missing.
func TestImportUnpacksLayers(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	layers := []testutil.Layer{
		{Entries: []testutil.TarEntry{testutil.File("a", "1", 0o644)}, Compression: testutil.Gzip},
		{Entries: []testutil.TarEntry{testutil.File("b", "2", 0o644)}},
	}
	img, err := s.Import(ctx, testutil.RawLayout(t, layers, testutil.ImageOptions{Ref: "x"}), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range img.DiffIDs {
		if _, err := os.Stat(s.snapshotPath(d)); err != nil {
			t.Errorf("layer %s not unpacked by the import: %v", d, err)
		}
	}
	if ents, _ := os.ReadDir(s.path("tmp")); len(ents) != 0 {
		t.Errorf("tmp holds %d leftovers", len(ents))
	}
	if err := os.RemoveAll(s.snapshotPath(img.DiffIDs[1])); err != nil {
		t.Fatal(err)
	}
	dirs, err := s.Layers(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dirs[1], "b")); string(b) != "2" {
		t.Errorf("re-unpacked layer holds b = %q", b)
	}
}

// A layer whose diffID already has a snapshot is still checked against its
// diffID: a blob that lies about its content is refused.
func TestImportChecksLayerWithSnapshot(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	good := testutil.Layer{Entries: []testutil.TarEntry{testutil.File("f", "good", 0o644)}}
	if _, err := s.Import(ctx, testutil.RawLayout(t, []testutil.Layer{good}, testutil.ImageOptions{Ref: "good"}), ""); err != nil {
		t.Fatal(err)
	}
	// Another blob, claiming the good layer's diffID.
	diffID := testutil.LayerBlob(t, good).DiffID
	b := testutil.NewLayout(t)
	bad := testutil.LayerBlob(t, testutil.Layer{Entries: []testutil.TarEntry{testutil.File("f", "evil", 0o644)}, Compression: testutil.Gzip})
	l := b.AddBlob(bad.Data, bad.Desc.MediaType)
	b.Tag(b.AddManifest(testutil.ImageConfig(testutil.ImageOptions{}, []digest.Digest{diffID}), []ocispec.Descriptor{l}), "bad")
	_, err := s.Import(ctx, b.Write(), "")
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "does not match diff_id") {
		t.Fatalf("Import = %v, want a diff_id mismatch", err)
	}
	if imgs, _ := s.List(); len(imgs) != 1 {
		t.Errorf("store lists %d images, want the good one only", len(imgs))
	}
}

// A docker archive's compressed layer is checked against its diffID at
// import (an uncompressed one by its digest, as before).
func TestDockerCompressedLayerCheckedAtImport(t *testing.T) {
	layer := testutil.LayerBlob(t, testutil.Layer{Entries: []testutil.TarEntry{testutil.File("f", "x", 0o644)}, Compression: testutil.Gzip})
	cfg := testutil.ImageConfig(testutil.ImageOptions{}, []digest.Digest{"sha256:" + digest.Digest(strings.Repeat("2", 64))})
	cfgJSON, _ := json.Marshal(cfg)
	archive := testutil.WriteTar(t, []testutil.TarEntry{
		testutil.File("manifest.json", `[{"Config":"c.json","RepoTags":["x:1"],"Layers":["l.tar.gz"]}]`, 0o644),
		testutil.File("c.json", string(cfgJSON), 0o644),
		{Header: testutil.File("l.tar.gz", "", 0o644).Header, Body: layer.Data},
	})
	s := newStore(t)
	_, err := s.Import(context.Background(), archive, "")
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "does not match diff_id") {
		t.Fatalf("Import = %v, want a diff_id mismatch", err)
	}
	assertEmpty(t, s)
}

// A layout directory whose members are FIFOs or devices is refused at
// once, naming the member: nothing is opened for reading but regular files.
func TestLayoutMembersMustBeRegular(t *testing.T) {
	for _, member := range []string{"index.json", "blob"} {
		t.Run(member, func(t *testing.T) {
			layout := testutil.RawLayout(t, []testutil.Layer{{Entries: []testutil.TarEntry{testutil.File("f", "x", 0o644)}}}, testutil.ImageOptions{Ref: "x"})
			p := filepath.Join(layout, "index.json")
			if member == "blob" {
				ents, _ := os.ReadDir(filepath.Join(layout, "blobs", "sha256"))
				p = filepath.Join(layout, "blobs", "sha256", ents[0].Name())
			}
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mkfifo(p, 0o644); err != nil {
				t.Fatal(err)
			}
			s := newStore(t)
			// A read of the FIFO would block: the import must not.
			_, err := s.Import(context.Background(), layout, "")
			if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "is a FIFO, not a regular file") {
				t.Fatalf("Import = %v, want a FIFO refused", err)
			}
			assertEmpty(t, s)
		})
	}
}

// An archive given to import with a sparse member is refused before the
// member's holes are written out as zeros.
func TestArchiveWithSparseMemberRefused(t *testing.T) {
	archive := filepath.Join(t.TempDir(), "archive.tar")
	if err := os.WriteFile(archive, sparseLayer(t, 1<<30), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newStore(t)
	_, err := s.Import(context.Background(), archive, "")
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "sparse") {
		t.Fatalf("Import = %v, want the sparse member refused", err)
	}
	assertEmpty(t, s)
}
