package image

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/lockfile"
)

// Ingest is the store's side of a pull. A puller writes each blob it has
// verified at BlobPath (and partial downloads under Partial), then Commit
// imports the image from there as Import would from an OCI layout, every
// layer unpacked and checked against the config's diffIDs, all of it
// named at once. A puller may hand a layer's bytes to Unpack as they
// arrive and say with Verified that a blob was hashed as it was written:
// Commit then neither hashes that blob again nor unpacks that layer a
// second time. Until Commit nothing of the pull is visible in the store;
// its stage is flocked while the pull runs, so GC removes what a killed
// pull left and nothing else. Close releases everything.
type Ingest struct {
	s     *Store
	st    *stage
	locks []*os.File

	mu       sync.Mutex
	verified map[digest.Digest]bool
	unpacked map[digest.Digest]unpacked // by layer blob digest
}

// unpacked is a layer that Unpack wrote into the ingest's stage.
type unpacked struct {
	dir    string
	diffID digest.Digest
}

// NewIngest starts a pull into the store.
func (s *Store) NewIngest() (*Ingest, error) {
	s.sweepStale()
	st, err := s.newStage("pull-")
	if err != nil {
		return nil, err
	}
	in := &Ingest{s: s, st: st, verified: map[digest.Digest]bool{}, unpacked: map[digest.Digest]unpacked{}}
	for _, d := range []string{"layout/blobs/sha256", "partial", "unpacked"} {
		if err := os.MkdirAll(filepath.Join(st.dir, d), 0o700); err != nil {
			in.Close()
			return nil, fmt.Errorf("image store staging: %w", err)
		}
	}
	return in, nil
}

// Close ends the ingest: its stage is removed and its blob locks released.
func (in *Ingest) Close() {
	in.st.close()
	for _, f := range in.locks {
		f.Close()
	}
	in.locks = nil
}

func (in *Ingest) layout() string { return filepath.Join(in.st.dir, "layout") }

// BlobPath is where the verified blob d goes.
func (in *Ingest) BlobPath(d digest.Digest) string {
	return filepath.Join(in.layout(), "blobs", d.Algorithm().String(), d.Encoded())
}

// Partial is where blob d is downloaded until it is verified.
func (in *Ingest) Partial(d digest.Digest) string {
	return filepath.Join(in.st.dir, "partial", d.Algorithm().String()+"-"+d.Encoded())
}

// Reuse takes blob d from the store into the ingest, when the store has
// it, and reports whether it did.
func (in *Ingest) Reuse(d digest.Digest) bool {
	if d.Validate() != nil || d.Algorithm() != digest.SHA256 {
		return false
	}
	ok := os.Link(in.s.blobPath(d), in.BlobPath(d)) == nil || fileExists(in.BlobPath(d))
	if ok {
		in.Verified(d) // the store verified it when it took it in
	}
	return ok
}

// Verified records that the file at BlobPath(d) holds blob d: the caller
// hashed it while it wrote it. Commit links it into the store without
// reading it again (its size is still checked).
func (in *Ingest) Verified(d digest.Digest) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.verified[d] = true
}

// Unpack unpacks the layer blob desc from r, the blob's bytes as they download,
// into the ingest's stage, and reads r to its end. The layer counts only
// once Verified says that those bytes were d's; Commit then checks its
// diffID against the config and moves it into the store as it is. An
// error (a hostile or broken layer) fails nothing by itself: the caller
// reports it only when the blob is verified, and a corrupt download
// otherwise.
//
// A blob whose media type is not a layer's is only read: Commit refuses
// it as an import would.
func (in *Ingest) Unpack(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	d := desc.Digest
	if d.Validate() != nil || !slices.Contains(layerMediaTypes, desc.MediaType) {
		_, err := io.Copy(io.Discard, r)
		return err
	}
	dir := filepath.Join(in.st.dir, "unpacked", d.Algorithm().String()+"-"+d.Encoded())
	diffID, err := unpackTo(ctx, r, dir, false) // see unsynced.go
	if err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	in.unpacked[d] = unpacked{dir: dir, diffID: diffID}
	return nil
}

// streamed is what Commit takes as it is: the blobs verified by the
// puller and the layers unpacked from them.
func (in *Ingest) streamed() (map[digest.Digest]bool, map[digest.Digest]unpacked) {
	in.mu.Lock()
	defer in.mu.Unlock()
	layers := map[digest.Digest]unpacked{}
	for d, u := range in.unpacked {
		if in.verified[d] {
			layers[d] = u
		}
	}
	return maps.Clone(in.verified), layers
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// LockBlobs takes the store-wide locks of blobs ds, in digest order (so
// two pulls never wait on each other in a cycle), and keeps them until
// Close: a second pull of the same blobs waits for the first to commit,
// then finds them in the store (Reuse) instead of downloading them again.
func (in *Ingest) LockBlobs(ctx context.Context, ds []digest.Digest) error {
	if err := os.MkdirAll(in.s.path("locks"), 0o700); err != nil {
		return fmt.Errorf("image store locks: %w", err)
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	for _, d := range slices.Compact(ds) {
		if err := d.Validate(); err != nil {
			return fmt.Errorf("blob %q: %v: %w", d, err, errdefs.ErrInvalid)
		}
		f, err := in.s.lockBlob(ctx, d)
		if err != nil {
			return err
		}
		in.locks = append(in.locks, f)
	}
	return nil
}

// lockBlob flocks the lock file of blob d. GC removes lock files nobody
// holds, so the lock counts only when the file locked is still the one
// the path names; otherwise it tries again.
func (s *Store) lockBlob(ctx context.Context, d digest.Digest) (*os.File, error) {
	p := s.path("locks", d.Algorithm().String()+"-"+d.Encoded())
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		f, err := lockfile.Open(p, unix.LOCK_EX)
		if err != nil {
			return nil, fmt.Errorf("image store lock of %s: %w", d, err)
		}
		var held, named unix.Stat_t
		if unix.Fstat(int(f.Fd()), &held) == nil && unix.Stat(p, &named) == nil && held.Ino == named.Ino {
			return f, nil
		}
		f.Close()
	}
}

// sweepLocks removes the blob lock files nobody holds; the caller holds
// the store lock exclusively.
func (s *Store) sweepLocks() { s.sweepUnheld("locks", nil) }

// Commit imports the image whose manifest is desc (the manifest and every
// blob it names at their BlobPath) and names it name, or leaves it unnamed
// when name is "" (a pull by digest).
func (in *Ingest) Commit(ctx context.Context, desc ocispec.Descriptor, name string) (Image, error) {
	desc = ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size}
	idx, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{desc},
	})
	if err != nil {
		return Image{}, err
	}
	layout, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return Image{}, err
	}
	if err := os.WriteFile(filepath.Join(in.layout(), ocispec.ImageIndexFile), idx, 0o600); err != nil {
		return Image{}, err
	}
	if err := os.WriteFile(filepath.Join(in.layout(), ocispec.ImageLayoutFile), layout, 0o600); err != nil {
		return Image{}, err
	}
	st, err := in.s.newStage("import-")
	if err != nil {
		return Image{}, err
	}
	defer st.close()
	verified, layers := in.streamed()
	return in.s.importFrom(ctx, st, dirSource{dir: in.layout()}, &linked{dir: in.layout(), verified: verified, unpacked: layers}, name)
}

// HasManifest reports whether an image of the store has the manifest d,
// under name when name is not "" (normalised as NormalizeName does).
func (s *Store) HasManifest(d digest.Digest, name string) (Image, bool) {
	n, _ := NormalizeName(name)
	img, err := s.withRefs(false, func(r *refs) (digest.Digest, error) {
		for id, rec := range r.Images {
			if rec.Manifest == d && (name == "" || slices.Contains(rec.Names, n)) {
				return id, nil
			}
		}
		return "", errdefs.ErrNotFound
	})
	return img, err == nil
}

// Tag gives the image src names (as Resolve finds it) the name dst too;
// dst moves from any image that had it.
func (s *Store) Tag(src, dst string) (Image, error) {
	name, err := NormalizeName(dst)
	if err != nil {
		return Image{}, err
	}
	return s.withRefs(true, func(r *refs) (digest.Digest, error) {
		id, _, err := r.find(src)
		if err == nil {
			r.addImage(id, r.Images[id].Manifest, []string{name})
		}
		return id, err
	})
}
