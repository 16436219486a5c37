package image

import (
	"bytes"
	"context"
	_ "crypto/sha512" // sha512 digests in layouts
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/atomicfile"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/regfile"
)

// Media types of Docker's image format, which the store accepts alongside
// the OCI ones.
const (
	mediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	// annotationContainerdName is containerd's full-name annotation on
	// index.json entries (its ref.name holds only the tag).
	annotationContainerdName = "io.containerd.image.name"
)

// layerMediaTypes are the layer blob types the store can unpack.
var layerMediaTypes = []string{
	ocispec.MediaTypeImageLayer,
	ocispec.MediaTypeImageLayerGzip,
	ocispec.MediaTypeImageLayerZstd,
	"application/vnd.oci.image.layer.nondistributable.v1.tar",
	"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
	"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
	"application/vnd.docker.image.rootfs.diff.tar",
	"application/vnd.docker.image.rootfs.diff.tar.gzip",
	"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
}

// importer carries the state of one import.
type importer struct {
	ctx context.Context
	src source
	dir string // staging directory for verified blobs
	// link is the layout of a pull, whose blobs are hard-linked rather
	// than copied (see importFrom), or nil.
	link   *linked
	staged map[digest.Digest]string // verified blob -> staged file
	want   string                   // normalised name asked for, or ""
	// The image's layer blobs and their diffIDs, lowest first.
	layers  []ocispec.Descriptor
	diffIDs []digest.Digest
}

// linked is an OCI layout that a pull of berth's wrote (see Ingest).
type linked struct {
	dir string
	// verified are the blobs the pull hashed as it wrote them.
	verified map[digest.Digest]bool
	// unpacked are the layers it unpacked as they arrived, by blob digest.
	unpacked map[digest.Digest]unpacked
}

// result is what an archive format reader found.
type result struct {
	id, manifest digest.Digest
	names        []string
}

// Import copies the image in path into the store and names it name (when
// empty, the name the archive carries, if any). path is an OCI image layout
// directory, a tar of one (optionally gzip-compressed), or a `docker save`
// archive (tar or extracted directory). From a multi-platform index the
// linux/amd64 image is taken; when a layout holds several images, name picks
// the one with that ref name. Every blob's digest and size is verified while
// it is copied; any mismatch fails the import with ErrInvalid and leaves
// nothing behind.
func (s *Store) Import(ctx context.Context, path, name string) (Image, error) {
	// Collect first what crashed imports left in tmp/ and what leases
	// kept of removed images: both are garbage once their owners are gone.
	_ = s.GC()
	st, err := s.newStage("import-")
	if err != nil {
		return Image{}, err
	}
	defer st.close()
	src, err := openSource(ctx, path, filepath.Join(st.dir, "in"))
	if err != nil {
		return Image{}, err
	}
	img, err := s.importFrom(ctx, st, src, nil, name)
	if err != nil {
		return Image{}, fmt.Errorf("import %s: %w", path, err)
	}
	return img, nil
}

// importFrom imports the image src holds, staging in st. When link is not
// nil, src is an OCI layout that berth wrote itself (a pull's) and its
// blobs are hard-linked into the stage instead of copied; they are
// verified all the same, unless the pull verified them as they arrived.
func (s *Store) importFrom(ctx context.Context, st *stage, src source, link *linked, name string) (Image, error) {
	im := &importer{ctx: ctx, src: src, link: link, staged: map[digest.Digest]string{}}
	if name != "" {
		n, err := NormalizeName(name)
		if err != nil {
			return Image{}, err
		}
		im.want = n
	}
	im.dir = filepath.Join(st.dir, "blobs")
	if err := os.Mkdir(im.dir, 0o700); err != nil {
		return Image{}, err
	}
	var res *result
	var err error
	switch {
	case im.has("index.json"):
		res, err = im.importOCI()
	case im.has("manifest.json"):
		res, err = im.importDocker()
	default:
		err = fmt.Errorf("neither an OCI layout (index.json) nor a docker archive (manifest.json): %w", errdefs.ErrInvalid)
	}
	if err != nil {
		return Image{}, err
	}
	var streamed map[digest.Digest]unpacked
	if link != nil {
		streamed = link.unpacked
	}
	snapshots, err := s.unpackStaged(ctx, st, im.staged, streamed, im.layers, im.diffIDs)
	if err != nil {
		return Image{}, err
	}
	if link != nil {
		// A pull's: its blobs are synced, each, and its snapshots not
		// (see unsynced.go).
		if err := syncFiles(im.staged); err != nil {
			return Image{}, fmt.Errorf("sync: %w", err)
		}
	} else if err := unix.Syncfs(int(st.f.Fd())); err != nil {
		// One sync of the blobs and snapshots staged, before they are named.
		return Image{}, fmt.Errorf("sync: %w", err)
	}
	names := res.names
	if im.want != "" {
		names = []string{im.want}
	}
	return s.commit(im.staged, snapshots, res, names, link != nil)
}

// syncFiles syncs the data of the files staged.
func syncFiles(staged map[digest.Digest]string) error {
	for _, p := range staged {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		err = unix.Fdatasync(int(f.Fd()))
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// openSource opens path as a directory or tar source, extracting tars into
// dir.
func openSource(ctx context.Context, path, dir string) (source, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("import %s: %w", path, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("import: %w", err)
	}
	if fi.IsDir() {
		return dirSource{dir: path}, nil
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	return openTarSource(ctx, path, dir)
}

// has reports whether the archive has name; when it has something there
// that cannot be read, readFile says what.
func (im *importer) has(name string) bool {
	rc, err := im.src.open(name)
	if err != nil {
		return !errors.Is(err, errdefs.ErrNotFound)
	}
	rc.Close()
	return true
}

// open opens a member of the archive that the image needs.
func (im *importer) open(name string) (io.ReadCloser, error) {
	rc, err := im.src.open(name)
	if err != nil && !errors.Is(err, regfile.ErrNotRegular) {
		return nil, fmt.Errorf("%s: missing from the archive: %w", name, errdefs.ErrInvalid)
	}
	return rc, err
}

// readFile reads a small file of the archive.
func (im *importer) readFile(name string) ([]byte, error) {
	rc, err := im.open(name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxJSON+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(data) > maxJSON {
		return nil, fmt.Errorf("%s: larger than %d bytes: %w", name, maxJSON, errdefs.ErrInvalid)
	}
	return data, nil
}

// readJSON reads and decodes a small JSON file of the archive.
func (im *importer) readJSON(name string, v any) error {
	data, err := im.readFile(name)
	if err != nil {
		return err
	}
	if err := decodeJSON(data, v); err != nil {
		return fmt.Errorf("%s: %v: %w", name, err, errdefs.ErrInvalid)
	}
	return nil
}

// decodeJSON is json.Unmarshal with errors that speak of the document,
// not of berth's Go types.
func decodeJSON(data []byte, v any) error {
	err := json.Unmarshal(data, v)
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		where := "the document"
		if te.Field != "" {
			where = "field " + strconv.Quote(te.Field)
		}
		return fmt.Errorf("%s is a JSON %s, want %s", where, te.Value, jsonKind(te.Type))
	}
	return err
}

// jsonKind names what a Go type holds in JSON terms.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "a number"
}

// checkDescriptor refuses descriptors whose digest or size cannot be right.
func checkDescriptor(d ocispec.Descriptor) error {
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("descriptor digest %q: %v: %w", d.Digest, err, errdefs.ErrInvalid)
	}
	if d.Size < 0 {
		return fmt.Errorf("blob %s: negative size %d: %w", d.Digest, d.Size, errdefs.ErrInvalid)
	}
	return nil
}

// stageBlob copies the blob d from the archive into staging, verifying its
// size and digest on the way, and returns the staged file.
func (im *importer) stageBlob(d ocispec.Descriptor) (string, error) {
	if err := checkDescriptor(d); err != nil {
		return "", err
	}
	if p, ok := im.staged[d.Digest]; ok {
		return p, nil
	}
	member := "blobs/" + d.Digest.Algorithm().String() + "/" + d.Digest.Encoded()
	p := filepath.Join(im.dir, d.Digest.Algorithm().String()+"-"+d.Digest.Encoded())
	got, n, err := im.copyBlob(member, p, d)
	if err != nil {
		return "", fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	if n != d.Size {
		os.Remove(p)
		return "", fmt.Errorf("blob %s: size %d, descriptor says %d: %w", d.Digest, n, d.Size, errdefs.ErrInvalid)
	}
	if got != d.Digest {
		os.Remove(p)
		return "", fmt.Errorf("blob %s: content has digest %s: %w", d.Digest, got, errdefs.ErrInvalid)
	}
	im.staged[d.Digest] = p
	return p, nil
}

// copyBlob copies the archive's member into the new file p (or, from a
// layout of berth's own, links it there) and returns the digest and
// length of what p then holds.
func (im *importer) copyBlob(member, p string, d ocispec.Descriptor) (digest.Digest, int64, error) {
	if im.link != nil {
		if err := os.Link(filepath.Join(im.link.dir, filepath.FromSlash(member)), p); err != nil {
			return "", 0, fmt.Errorf("missing from the pull: %w", errdefs.ErrInvalid)
		}
		if im.link.verified[d.Digest] {
			fi, err := os.Stat(p)
			if err != nil {
				return "", 0, err
			}
			return d.Digest, fi.Size(), nil
		}
		f, err := os.Open(p)
		if err != nil {
			return "", 0, err
		}
		defer f.Close()
		dg := d.Digest.Algorithm().Digester()
		n, err := io.Copy(dg.Hash(), &ctxReader{ctx: im.ctx, r: io.LimitReader(f, d.Size+1)})
		return dg.Digest(), n, err
	}
	rc, err := im.open(member)
	if err != nil {
		return "", 0, err
	}
	defer rc.Close()
	return writeHashed(p, &ctxReader{ctx: im.ctx, r: io.LimitReader(rc, d.Size+1)}, d.Digest.Algorithm())
}

// stageJSON stages a verified small blob and returns its content.
func (im *importer) stageJSON(d ocispec.Descriptor) ([]byte, error) {
	if d.Size > maxJSON {
		return nil, fmt.Errorf("blob %s: %d bytes is too large for JSON: %w", d.Digest, d.Size, errdefs.ErrInvalid)
	}
	p, err := im.stageBlob(d)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(p)
}

// stageBytes stages data the importer made itself (docker archives).
func (im *importer) stageBytes(data []byte) (digest.Digest, error) {
	d := digest.FromBytes(data)
	p := filepath.Join(im.dir, d.Algorithm().String()+"-"+d.Encoded())
	if err := os.WriteFile(p, data, 0o600); err != nil {
		return "", err
	}
	im.staged[d] = p
	return d, nil
}

// writeHashed copies r into a new file at p and returns the digest and
// length of what it wrote. The import syncs all it staged at once, before
// its commit.
func writeHashed(p string, r io.Reader, alg digest.Algorithm) (digest.Digest, int64, error) {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", 0, err
	}
	dg := alg.Digester()
	n, err := io.Copy(io.MultiWriter(f, dg.Hash()), r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(p)
		return "", 0, wrapTruncated(err)
	}
	return dg.Digest(), n, nil
}

// stageImage stages a manifest, its config and layers, checks they agree,
// and returns the image ID.
func (im *importer) stageImage(desc ocispec.Descriptor, data []byte) (digest.Digest, error) {
	var m ocispec.Manifest
	if err := decodeJSON(data, &m); err != nil {
		return "", fmt.Errorf("manifest %s: %v: %w", desc.Digest, err, errdefs.ErrInvalid)
	}
	if m.SchemaVersion != 2 {
		return "", fmt.Errorf("manifest %s: schema version %d, want 2: %w", desc.Digest, m.SchemaVersion, errdefs.ErrNotSupported)
	}
	cfgData, err := im.stageJSON(m.Config)
	if err != nil {
		return "", err
	}
	cfg, err := parseConfig(m.Config.Digest, cfgData, len(m.Layers))
	if err != nil {
		return "", err
	}
	for _, l := range m.Layers {
		if !slices.Contains(layerMediaTypes, l.MediaType) {
			return "", fmt.Errorf("layer %s: media type %q: %w", l.Digest, l.MediaType, errdefs.ErrNotSupported)
		}
		if _, err := im.stageBlob(l); err != nil {
			return "", err
		}
		if err := im.ctx.Err(); err != nil {
			return "", err
		}
	}
	im.layers, im.diffIDs = m.Layers, cfg.RootFS.DiffIDs
	return m.Config.Digest, nil
}

// parseConfig decodes an image config and checks its layer list.
func parseConfig(d digest.Digest, data []byte, layers int) (ocispec.Image, error) {
	var cfg ocispec.Image
	if err := decodeJSON(data, &cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %v: %w", d, err, errdefs.ErrInvalid)
	}
	if cfg.RootFS.Type != "layers" {
		return cfg, fmt.Errorf("config %s: rootfs type %q, want \"layers\": %w", d, cfg.RootFS.Type, errdefs.ErrInvalid)
	}
	if len(cfg.RootFS.DiffIDs) != layers {
		return cfg, fmt.Errorf("config %s: %d diff_ids for %d layers: %w", d, len(cfg.RootFS.DiffIDs), layers, errdefs.ErrInvalid)
	}
	for _, id := range cfg.RootFS.DiffIDs {
		if err := id.Validate(); err != nil {
			return cfg, fmt.Errorf("config %s: diff_id %q: %v: %w", d, id, err, errdefs.ErrInvalid)
		}
	}
	return cfg, nil
}

// sniffMediaType names a layer's type from its first bytes.
func sniffMediaType(head []byte) string {
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return ocispec.MediaTypeImageLayerGzip
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return ocispec.MediaTypeImageLayerZstd
	}
	return ocispec.MediaTypeImageLayer
}

// commit moves the staged blobs and unpacked layers (by diffID) into the
// store and records the image, under the store lock. When unsynced, the
// layers were not synced: they are marked so first (see unsynced.go).
func (s *Store) commit(staged, snapshots map[digest.Digest]string, res *result, names []string, unsynced bool) (Image, error) {
	unlock, err := s.lock(true)
	if err != nil {
		return Image{}, err
	}
	defer unlock()
	if unsynced {
		var fresh []digest.Digest
		for diffID := range snapshots {
			if _, err := os.Stat(s.snapshotPath(diffID)); err != nil {
				fresh = append(fresh, diffID)
			}
		}
		if err := s.markUnsynced(fresh); err != nil {
			return Image{}, fmt.Errorf("image store: %w", err)
		}
	}
	for d, p := range staged {
		dst := s.blobPath(d)
		if _, err := os.Stat(dst); err == nil {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return Image{}, fmt.Errorf("image store: %w", err)
		}
		if err := os.Rename(p, dst); err != nil {
			return Image{}, fmt.Errorf("image store: %w", err)
		}
	}
	for diffID, dir := range snapshots {
		if err := s.placeSnapshot(dir, diffID); err != nil {
			return Image{}, fmt.Errorf("image store: %w", err)
		}
	}
	// The renames, durable before refs.json names what they placed.
	dirs := map[string]bool{s.path("snapshots"): len(snapshots) > 0}
	for d := range staged {
		dirs[filepath.Dir(s.blobPath(d))] = true
	}
	for dir, renamed := range dirs {
		if !renamed {
			continue
		}
		if err := atomicfile.SyncDir(dir); err != nil {
			return Image{}, fmt.Errorf("image store: %w", err)
		}
	}
	r, err := s.readRefs()
	if err != nil {
		return Image{}, err
	}
	old := r.Images[res.id]
	replaced := old != nil && old.Manifest != res.manifest
	r.addImage(res.id, res.manifest, names)
	if err := s.writeRefs(r); err != nil {
		return Image{}, err
	}
	if replaced {
		if err := s.gcLocked(r); err != nil {
			return Image{}, err
		}
	}
	return s.loadImage(res.id, r.Images[res.id])
}
