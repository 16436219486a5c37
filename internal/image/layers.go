package image

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	digest "github.com/opencontainers/go-digest"
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
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	got, err := unpackLayer(ctx, f, dir)
	if err != nil {
		return err
	}
	if got != diffID {
		return fmt.Errorf("content digest %s does not match diff_id %s: %w", got, diffID, errdefs.ErrInvalid)
	}
	if err := unix.Syncfs(int(st.f.Fd())); err != nil {
		return fmt.Errorf("sync snapshot: %w", err)
	}
	err = os.Rename(dir, s.snapshotPath(diffID))
	if err != nil && (errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY)) {
		return nil // another unpacker won the race; its result is the same
	}
	return err
}
