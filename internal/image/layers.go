package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
)

// Layers returns the snapshot directories of img, lowest layer first, for
// use as overlayfs lower directories (overlayfs lists them highest first).
// Each layer is unpacked once, keyed by its diffID, on first use; concurrent
// callers (goroutines or processes) may race to unpack the same layer and
// the first rename wins. Snapshots are only guaranteed to stay while the
// caller holds a Lease (see Use) or the image keeps a name.
func (s *Store) Layers(ctx context.Context, img Image) ([]string, error) {
	if len(img.Layers) != len(img.DiffIDs) {
		return nil, fmt.Errorf("image %s: %d layers but %d diff_ids: %w", img.ID, len(img.Layers), len(img.DiffIDs), errdefs.ErrInvalid)
	}
	lease, err := s.Use(img)
	if err != nil {
		return nil, err
	}
	defer lease.Release()
	dirs := make([]string, len(img.DiffIDs))
	for i, diffID := range img.DiffIDs {
		if err := diffID.Validate(); err != nil {
			return nil, fmt.Errorf("image %s: diff_id %q: %v: %w", img.ID, diffID, err, errdefs.ErrInvalid)
		}
		if err := s.dropTorn(diffID); err != nil {
			return nil, fmt.Errorf("image %s: layer %s: %w", img.ID, img.Layers[i], err)
		}
		dirs[i] = s.snapshotPath(diffID)
		if _, err := os.Stat(dirs[i]); err == nil {
			continue
		}
		if err := s.unpack(ctx, img.Layers[i], diffID); err != nil {
			return nil, fmt.Errorf("image %s: layer %s: %w", img.ID, img.Layers[i], err)
		}
	}
	return dirs, nil
}

// unpack unpacks one layer blob into a stage and renames it into
// snapshots/ once its content matches diffID.
func (s *Store) unpack(ctx context.Context, blob, diffID digest.Digest) error {
	if err := blob.Validate(); err != nil {
		return fmt.Errorf("%v: %w", err, errdefs.ErrInvalid)
	}
	f, err := os.Open(s.blobPath(blob))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blob missing from the store: %w", errdefs.ErrNotFound)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	s.sweepStale()
	st, err := s.newStage("unpack-")
	if err != nil {
		return err
	}
	defer st.close()
	dir := filepath.Join(st.dir, "fs")
	if err := unpackVerified(ctx, f, dir, diffID); err != nil {
		return err
	}
	if err := unix.Syncfs(int(st.f.Fd())); err != nil {
		return fmt.Errorf("sync snapshot: %w", err)
	}
	return s.placeSnapshot(dir, diffID)
}

// unpackVerified unpacks the layer blob read from r into the new directory
// dir and checks that its content is diffID.
func unpackVerified(ctx context.Context, r io.Reader, dir string, diffID digest.Digest) error {
	got, err := unpackTo(ctx, r, dir, true)
	if err != nil {
		return err
	}
	return checkDiffID(got, diffID)
}

// unpackTo unpacks the layer blob read from r into the new directory dir
// and returns its diffID; synced says whether the caller syncs it after.
func unpackTo(ctx context.Context, r io.Reader, dir string, synced bool) (digest.Digest, error) {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	return unpackLayer(ctx, r, dir, synced)
}

func checkDiffID(got, want digest.Digest) error {
	if got != want {
		return fmt.Errorf("content digest %s does not match diff_id %s: %w", got, want, errdefs.ErrInvalid)
	}
	return nil
}

// placeSnapshot renames the unpacked layer dir into snapshots/. When
// another unpacker got there first, its copy (of the same content) stays.
func (s *Store) placeSnapshot(dir string, diffID digest.Digest) error {
	err := os.Rename(dir, s.snapshotPath(diffID))
	if err != nil && (errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY)) {
		return nil
	}
	return err
}

// unpackStaged unpacks into st the staged layers that have no snapshot
// yet, so that a layer berth would refuse to run is refused at import,
// before anything is stored. A layer whose snapshot exists is only checked
// against its diffID. A layer a pull unpacked while it downloaded (in
// streamed, by blob digest) is checked against its diffID and taken as it
// is. It returns the unpacked directories by diffID, for commit to move
// into snapshots/ (once the caller synced them).
func (s *Store) unpackStaged(ctx context.Context, st *stage, staged map[digest.Digest]string, streamed map[digest.Digest]unpacked, layers []ocispec.Descriptor, diffIDs []digest.Digest) (map[digest.Digest]string, error) {
	dirs := map[digest.Digest]string{}
	done := map[digest.Digest]bool{}
	for i, l := range layers {
		diffID := diffIDs[i]
		if done[diffID] {
			continue
		}
		done[diffID] = true
		if u, ok := streamed[l.Digest]; ok {
			if err := checkDiffID(u.diffID, diffID); err != nil {
				return nil, fmt.Errorf("layer %s: %w", l.Digest, err)
			}
			if _, err := os.Stat(s.snapshotPath(diffID)); err != nil {
				dirs[diffID] = u.dir
			}
			continue
		}
		f, err := os.Open(staged[l.Digest])
		if err != nil {
			return nil, err
		}
		dir := ""
		if _, serr := os.Stat(s.snapshotPath(diffID)); serr == nil {
			var got digest.Digest
			if got, err = layerDiffID(ctx, f); err == nil {
				err = checkDiffID(got, diffID)
			}
		} else {
			dir = filepath.Join(st.dir, "snapshot-"+strconv.Itoa(i))
			err = unpackVerified(ctx, f, dir, diffID)
		}
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", l.Digest, err)
		}
		if dir != "" {
			dirs[diffID] = dir
		}
	}
	return dirs, nil
}
