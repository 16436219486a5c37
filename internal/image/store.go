// Package image is berth's content-addressed image store.
//
// Layout under the store root (berth passes ROOT/image):
//
//	blobs/<alg>/<hex>    verified blobs: manifests, configs, layers
//	refs.json            images by ID (config digest): manifest and names
//	snapshots/<hex>/     one unpacked layer per diffID, in overlayfs form
//	leases/<alg>-<hex>   flock files: a shared lock marks a manifest in use
//	tmp/                 staging; every entry is flocked while in use
//	locks/<alg>-<hex>    flock files: a pull downloading a blob holds its lock
//	unsynced/<hex>       boot ID under which a pull placed snapshot <hex> unsynced
//	lock                 flock serialising refs.json updates and GC
//
// Lifecycle: Import stages and verifies every blob in tmp and unpacks each
// layer that has no snapshot yet there too (so a hostile or broken layer is
// refused before anything is stored), then, under the store lock, renames
// blobs into blobs/ and layers into snapshots/ and records the image in
// refs.json (write-temp and rename), so a failed import leaves nothing
// visible. Layers unpacks a layer whose snapshot is missing (collected, or
// imported by an older berth) on first use, the same way. Remove drops
// names and collects blobs and snapshots that no image and no lease (see
// Use) still refer to.
package image

import (
	_ "crypto/sha256" // registers SHA-256 with go-digest; without it every digest is "unsupported"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/atomicfile"
	"github.com/berth-dev/berth/internal/errdefs"
)

// maxJSON bounds the manifests, indexes and configs the store reads.
const maxJSON = 8 << 20

// Image is one image in the store, as `berth image inspect` prints it.
type Image struct {
	// ID is the digest of the image config.
	ID digest.Digest `json:"id"`
	// Manifest is the digest of the (OCI) manifest the store holds.
	Manifest digest.Digest `json:"manifest"`
	// Names are the normalised names (see NormalizeName) that point here.
	Names  []string      `json:"names"`
	Config ocispec.Image `json:"config"`
	// Layers are the manifest's layer blob digests, lowest first.
	Layers []digest.Digest `json:"layers"`
	// DiffIDs are the digests of the uncompressed layers, lowest first.
	DiffIDs []digest.Digest `json:"diffIDs"`
	// Size is the sum of the layer blob sizes.
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
}

// Store is an image store rooted at a directory. Its methods are safe for
// concurrent use by goroutines and by several processes.
type Store struct {
	root string
}

// record is one image in refs.json.
type record struct {
	Manifest digest.Digest `json:"manifest"`
	Names    []string      `json:"names"`
	Imported time.Time     `json:"imported"`
}

// refs is the content of refs.json.
type refs struct {
	Version int                       `json:"version"`
	Images  map[digest.Digest]*record `json:"images"`
}

// Open opens (creating it if needed) the store rooted at root.
func Open(root string) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("image store %s: %w", root, err)
	}
	s := &Store{root: abs}
	for _, d := range []string{"blobs/sha256", "snapshots", "leases", "tmp"} {
		if err := os.MkdirAll(s.path(d), 0o700); err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
	}
	return s, nil
}

// Root returns the store's root directory.
func (s *Store) Root() string { return s.root }

func (s *Store) path(elem ...string) string {
	return filepath.Join(append([]string{s.root}, elem...)...)
}

func (s *Store) blobPath(d digest.Digest) string {
	return s.path("blobs", d.Algorithm().String(), d.Encoded())
}

func (s *Store) snapshotPath(diffID digest.Digest) string {
	return s.path("snapshots", diffID.Encoded())
}

// readRefs reads refs.json; the caller holds the store lock.
func (s *Store) readRefs() (*refs, error) {
	r := &refs{Version: 1, Images: map[digest.Digest]*record{}}
	data, err := os.ReadFile(s.path("refs.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("image store refs: %w", err)
	}
	if err := decodeJSON(data, r); err != nil {
		return nil, fmt.Errorf("image store refs.json is corrupt: %v: %w", err, errdefs.ErrInvalid)
	}
	if r.Images == nil {
		r.Images = map[digest.Digest]*record{}
	}
	return r, nil
}

// writeRefs replaces refs.json atomically; the caller holds the store lock
// exclusively.
func (s *Store) writeRefs(r *refs) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteDurable(s.path("refs.json"), data, 0o600); err != nil {
		return fmt.Errorf("image store refs: %w", err)
	}
	return nil
}

// readBlob reads a small JSON blob from the store.
func (s *Store) readBlob(d digest.Digest) ([]byte, error) {
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("blob %q: %v: %w", d, err, errdefs.ErrInvalid)
	}
	f, err := os.Open(s.blobPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("blob %s: %w", d, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxJSON))
}

// loadImage builds the Image of a record from its manifest and config.
func (s *Store) loadImage(id digest.Digest, rec *record) (Image, error) {
	img := Image{ID: id, Manifest: rec.Manifest, Names: slices.Clone(rec.Names)}
	if img.Names == nil {
		img.Names = []string{}
	}
	m, cfg, err := s.readManifestConfig(rec.Manifest)
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", id.Encoded()[:12], err)
	}
	img.Config = cfg
	for _, l := range m.Layers {
		img.Layers = append(img.Layers, l.Digest)
		img.Size += l.Size
	}
	img.DiffIDs = cfg.RootFS.DiffIDs
	if cfg.Created != nil {
		img.Created = *cfg.Created
	}
	return img, nil
}

// readManifestConfig reads and decodes a stored manifest and its config.
func (s *Store) readManifestConfig(md digest.Digest) (ocispec.Manifest, ocispec.Image, error) {
	var m ocispec.Manifest
	var cfg ocispec.Image
	data, err := s.readBlob(md)
	if err != nil {
		return m, cfg, err
	}
	if err := decodeJSON(data, &m); err != nil {
		return m, cfg, fmt.Errorf("manifest %s: %v: %w", md, err, errdefs.ErrInvalid)
	}
	if data, err = s.readBlob(m.Config.Digest); err != nil {
		return m, cfg, err
	}
	if err := decodeJSON(data, &cfg); err != nil {
		return m, cfg, fmt.Errorf("config %s: %v: %w", m.Config.Digest, err, errdefs.ErrInvalid)
	}
	return m, cfg, nil
}

// List returns every image in the store, sorted by first name, unnamed
// images last.
func (s *Store) List() ([]Image, error) {
	unlock, err := s.lock(false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	r, err := s.readRefs()
	if err != nil {
		return nil, err
	}
	imgs := make([]Image, 0, len(r.Images))
	for id, rec := range r.Images {
		img, err := s.loadImage(id, rec)
		if err != nil {
			return nil, err
		}
		imgs = append(imgs, img)
	}
	slices.SortFunc(imgs, func(a, b Image) int {
		switch {
		case len(a.Names) == 0 && len(b.Names) == 0:
			return strings.Compare(a.ID.String(), b.ID.String())
		case len(a.Names) == 0:
			return 1
		case len(b.Names) == 0:
			return -1
		}
		return strings.Compare(a.Names[0], b.Names[0])
	})
	return imgs, nil
}

// Resolve finds an image by name (normalised as NormalizeName does), by
// name@digest of its manifest, by full ID ("sha256:<hex>") or by a unique
// prefix of at least 4 hex digits of its ID. It fails with ErrNotFound
// when nothing, or more than one image, matches.
func (s *Store) Resolve(ref string) (Image, error) {
	return s.withRefs(false, func(r *refs) (digest.Digest, error) {
		id, _, err := r.find(ref)
		return id, err
	})
}

// withRefs runs pick on refs.json under the store lock and returns the
// image whose ID pick returns. With write, the lock is exclusive and
// refs.json is written back after pick (which may change it).
func (s *Store) withRefs(write bool, pick func(r *refs) (digest.Digest, error)) (Image, error) {
	unlock, err := s.lock(write)
	if err != nil {
		return Image{}, err
	}
	defer unlock()
	r, err := s.readRefs()
	if err != nil {
		return Image{}, err
	}
	id, err := pick(r)
	if err != nil {
		return Image{}, err
	}
	if write {
		if err := s.writeRefs(r); err != nil {
			return Image{}, err
		}
	}
	return s.loadImage(id, r.Images[id])
}

// find resolves ref in r; byName reports that ref named the image (as
// opposed to its ID or manifest digest).
func (r *refs) find(ref string) (id digest.Digest, byName bool, err error) {
	notFound := fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
	if name, dg, ok := strings.Cut(ref, "@"); ok {
		if _, err := NormalizeName(name); err != nil {
			return "", false, err
		}
		for id, rec := range r.Images {
			if rec.Manifest.String() == dg {
				return id, false, nil
			}
		}
		return "", false, notFound
	}
	if strings.HasPrefix(ref, "sha256:") || strings.HasPrefix(ref, "sha512:") {
		if _, ok := r.Images[digest.Digest(ref)]; ok {
			return digest.Digest(ref), false, nil
		}
		return "", false, notFound
	}
	if name, err := NormalizeName(ref); err == nil {
		for id, rec := range r.Images {
			if slices.Contains(rec.Names, name) {
				return id, true, nil
			}
		}
	}
	if !isHexPrefix(ref) {
		return "", false, notFound
	}
	var matches []digest.Digest
	for id := range r.Images {
		if strings.HasPrefix(id.Encoded(), ref) {
			matches = append(matches, id)
		}
	}
	switch len(matches) {
	case 0:
		return "", false, notFound
	case 1:
		return matches[0], false, nil
	}
	return "", false, fmt.Errorf("image %q: prefix matches %d images: %w", ref, len(matches), errdefs.ErrNotFound)
}

func isHexPrefix(s string) bool {
	if len(s) < 4 || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Remove removes ref from the store. A name removes only that name (the
// image goes when its last name does); an ID or ID prefix removes the image
// with all its names. Blobs and snapshots that nothing refers to any more
// are then collected, except those of images held by a Lease.
func (s *Store) Remove(ref string) error {
	unlock, err := s.lock(true)
	if err != nil {
		return err
	}
	defer unlock()
	r, err := s.readRefs()
	if err != nil {
		return err
	}
	id, byName, err := r.find(ref)
	if err != nil {
		return err
	}
	rec := r.Images[id]
	if byName {
		name, _ := NormalizeName(ref)
		rec.Names = slices.DeleteFunc(rec.Names, func(n string) bool { return n == name })
	}
	if !byName || len(rec.Names) == 0 {
		delete(r.Images, id)
	}
	if err := s.writeRefs(r); err != nil {
		return err
	}
	return s.gcLocked(r)
}

// addImage records an imported image under names; the caller holds the
// store lock exclusively. A name moves from any image that had it; images
// left without names stay, reachable by ID.
func (r *refs) addImage(id, manifest digest.Digest, names []string) {
	for _, rec := range r.Images {
		rec.Names = slices.DeleteFunc(rec.Names, func(n string) bool { return slices.Contains(names, n) })
	}
	rec := r.Images[id]
	if rec == nil {
		rec = &record{Imported: time.Now().UTC()}
		r.Images[id] = rec
	}
	rec.Manifest = manifest
	for _, n := range names {
		if !slices.Contains(rec.Names, n) {
			rec.Names = append(rec.Names, n)
		}
	}
	slices.Sort(rec.Names)
}
