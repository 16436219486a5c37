package testutil

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TarEntry is one member of a hand-crafted tar. Header is written as given
// (any name, type, mode, owner, link target, device numbers or PAXRecords);
// for regular files Size defaults to len(Body) when left 0.
type TarEntry struct {
	tar.Header
	Body []byte
}

// Epoch is the fixed modification time of the entries the helpers make.
var Epoch = time.Unix(1_600_000_000, 0).UTC()

// File returns a regular file entry.
func File(name, body string, mode int64) TarEntry {
	return TarEntry{Header: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, ModTime: Epoch}, Body: []byte(body)}
}

// Dir returns a directory entry.
func Dir(name string, mode int64) TarEntry {
	return TarEntry{Header: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: mode, ModTime: Epoch}}
}

// Symlink returns a symbolic link entry name -> target.
func Symlink(name, target string) TarEntry {
	return TarEntry{Header: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777, ModTime: Epoch}}
}

// Hardlink returns a hard link entry name -> target (a path in the archive).
func Hardlink(name, target string) TarEntry {
	return TarEntry{Header: tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target, ModTime: Epoch}}
}

// CharDev returns a character device entry.
func CharDev(name string, major, minor int64) TarEntry {
	return TarEntry{Header: tar.Header{Name: name, Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: major, Devminor: minor, ModTime: Epoch}}
}

// BlockDev returns a block device entry.
func BlockDev(name string, major, minor int64) TarEntry {
	return TarEntry{Header: tar.Header{Name: name, Typeflag: tar.TypeBlock, Mode: 0o660, Devmajor: major, Devminor: minor, ModTime: Epoch}}
}

// Fifo returns a named pipe entry.
func Fifo(name string) TarEntry {
	return TarEntry{Header: tar.Header{Name: name, Typeflag: tar.TypeFifo, Mode: 0o644, ModTime: Epoch}}
}

// Whiteout returns the OCI whiteout entry that deletes name (".wh." prefix
// on its base name).
func Whiteout(name string) TarEntry {
	dir, base := filepath.Split(name)
	return File(dir+".wh."+base, "", 0o644)
}

// Opaque returns the OCI opaque whiteout entry for directory dir.
func Opaque(dir string) TarEntry {
	return File(filepath.Join(dir, ".wh..wh..opq"), "", 0o644)
}

// TarBytes returns the tar stream of entries. It fails the test when the
// archive/tar writer refuses an entry.
func TarBytes(t testing.TB, entries []TarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.Header
		if h.Typeflag == tar.TypeReg && h.Size == 0 {
			h.Size = int64(len(e.Body))
		}
		if h.Format == tar.FormatUnknown && len(h.PAXRecords) > 0 {
			h.Format = tar.FormatPAX
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %q: %v", h.Name, err)
		}
		if len(e.Body) > 0 {
			if _, err := tw.Write(e.Body); err != nil {
				t.Fatalf("tar body %q: %v", h.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Compression selects how a Layer's tar is stored.
type Compression int

// The layer compressions of the OCI spec.
const (
	Uncompressed Compression = iota
	Gzip
	Zstd
)

// Layer is one layer of a hand-crafted image.
type Layer struct {
	Entries     []TarEntry
	Compression Compression
}

// Blob is a layer blob with its uncompressed digest.
type Blob struct {
	Data   []byte
	DiffID digest.Digest
	Desc   ocispec.Descriptor
}

// LayerBlob builds the blob of l: the tar of its entries, compressed as asked.
func LayerBlob(t testing.TB, l Layer) Blob {
	t.Helper()
	raw := TarBytes(t, l.Entries)
	data, mt := raw, ocispec.MediaTypeImageLayer
	switch l.Compression {
	case Gzip:
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(raw)
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		data, mt = buf.Bytes(), ocispec.MediaTypeImageLayerGzip
	case Zstd:
		zw, err := zstd.NewWriter(nil)
		if err != nil {
			t.Fatal(err)
		}
		data, mt = zw.EncodeAll(raw, nil), ocispec.MediaTypeImageLayerZstd
		_ = zw.Close()
	}
	return Blob{
		Data:   data,
		DiffID: digest.FromBytes(raw),
		Desc:   ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(data), Size: int64(len(data))},
	}
}

// LayoutBuilder writes an OCI image layout by hand, so tests can make any
// layout, valid or not: several images, nested indexes, platforms, and
// blobs that lie about their digest or size.
type LayoutBuilder struct {
	t     testing.TB
	Dir   string
	Index ocispec.Index
}

// NewLayout starts an empty layout in a fresh temporary directory.
func NewLayout(t testing.TB) *LayoutBuilder {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		t.Fatal(err)
	}
	return &LayoutBuilder{t: t, Dir: dir, Index: ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}}
}

// BlobPath is where the blob with digest d lives in the layout.
func (b *LayoutBuilder) BlobPath(d digest.Digest) string {
	return filepath.Join(b.Dir, "blobs", d.Algorithm().String(), d.Encoded())
}

// AddBlob stores data as a blob and returns its descriptor.
func (b *LayoutBuilder) AddBlob(data []byte, mediaType string) ocispec.Descriptor {
	b.t.Helper()
	d := digest.FromBytes(data)
	if err := os.WriteFile(b.BlobPath(d), data, 0o644); err != nil {
		b.t.Fatal(err)
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
}

// AddJSON stores v marshalled as JSON and returns its descriptor.
func (b *LayoutBuilder) AddJSON(v any, mediaType string) ocispec.Descriptor {
	b.t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.AddBlob(data, mediaType)
}

// ImageConfig returns the linux/amd64 config opts describes, for diffIDs.
func ImageConfig(opts ImageOptions, diffIDs []digest.Digest) ocispec.Image {
	created := Epoch
	return ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"},
		Config: ocispec.ImageConfig{
			User: opts.User, Env: opts.Env, Entrypoint: opts.Entrypoint,
			Cmd: opts.Cmd, WorkingDir: opts.WorkingDir,
		},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	}
}

// AddImage stores the layers, a config made from opts and a manifest, and
// returns the manifest's descriptor (not yet in index.json: see Tag).
func (b *LayoutBuilder) AddImage(layers []Layer, opts ImageOptions) ocispec.Descriptor {
	b.t.Helper()
	var descs []ocispec.Descriptor
	var diffIDs []digest.Digest
	for _, l := range layers {
		blob := LayerBlob(b.t, l)
		descs = append(descs, b.AddBlob(blob.Data, blob.Desc.MediaType))
		diffIDs = append(diffIDs, blob.DiffID)
	}
	return b.AddManifest(ImageConfig(opts, diffIDs), descs)
}

// AddManifest stores cfg and a manifest over the given layer descriptors
// (which may be wrong on purpose) and returns the manifest's descriptor.
func (b *LayoutBuilder) AddManifest(cfg ocispec.Image, layers []ocispec.Descriptor) ocispec.Descriptor {
	b.t.Helper()
	if layers == nil {
		layers = []ocispec.Descriptor{}
	}
	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    b.AddJSON(cfg, ocispec.MediaTypeImageConfig),
		Layers:    layers,
	}
	return b.AddJSON(m, ocispec.MediaTypeImageManifest)
}

// AddIndex stores a nested image index over manifests and returns its
// descriptor.
func (b *LayoutBuilder) AddIndex(manifests []ocispec.Descriptor) ocispec.Descriptor {
	b.t.Helper()
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: manifests}
	return b.AddJSON(idx, ocispec.MediaTypeImageIndex)
}

// Tag appends desc to index.json, annotated with ref when ref is not empty.
func (b *LayoutBuilder) Tag(desc ocispec.Descriptor, ref string) {
	if ref != "" {
		desc.Annotations = map[string]string{ocispec.AnnotationRefName: ref}
	}
	b.Index.Manifests = append(b.Index.Manifests, desc)
}

// Write writes oci-layout and index.json and returns the layout directory.
func (b *LayoutBuilder) Write() string {
	b.t.Helper()
	layout, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err := os.WriteFile(filepath.Join(b.Dir, ocispec.ImageLayoutFile), layout, 0o644); err != nil {
		b.t.Fatal(err)
	}
	if b.Index.Manifests == nil {
		b.Index.Manifests = []ocispec.Descriptor{}
	}
	idx, _ := json.Marshal(b.Index)
	if err := os.WriteFile(filepath.Join(b.Dir, ocispec.ImageIndexFile), idx, 0o644); err != nil {
		b.t.Fatal(err)
	}
	return b.Dir
}

// RawLayout is the short form of LayoutBuilder: an OCI layout directory
// holding one image made of layers (crafted entry by entry, possibly hostile)
// with the config from opts, tagged opts.Ref when not empty.
func RawLayout(t testing.TB, layers []Layer, opts ImageOptions) string {
	t.Helper()
	b := NewLayout(t)
	b.Tag(b.AddImage(layers, opts), opts.Ref)
	return b.Write()
}

// WriteTar writes entries as a tar file in a fresh temporary directory and
// returns its path (for hand-made OCI and docker archives).
func WriteTar(t testing.TB, entries []TarEntry) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "archive.tar")
	if err := os.WriteFile(p, TarBytes(t, entries), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// ReadJSON decodes the JSON file p into v, failing the test when it
// cannot.
func ReadJSON(t testing.TB, p string, v any) {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
}
