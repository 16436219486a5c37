package image

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"

	digest "github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/atomicfile"
)

// A pull does not sync the layers it unpacked: a snapshot is a cache of
// its layer blob, which is synced, and only a crash of the machine can
// lose what the page cache holds. Such a snapshot is placed with a
// marker, unsynced/<diffID hex>, that holds the boot ID of the kernel
// that unpacked it, written durably before the snapshot is named. Layers
// finds the marker: under the same boot the snapshot is whole; under
// another, the machine went down since, and the snapshot is collected and
// unpacked again from its blob.

// bootIDFile names the running kernel's boot.
const bootIDFile = "/proc/sys/kernel/random/boot_id"

func bootID() ([]byte, error) {
	id, err := os.ReadFile(bootIDFile)
	if err != nil {
		return nil, fmt.Errorf("boot ID: %w", err)
	}
	return bytes.TrimSpace(id), nil
}

func (s *Store) unsyncedPath(diffID digest.Digest) string {
	return s.path("unsynced", diffID.Encoded())
}

// markUnsynced records, durably, that the snapshots of diffIDs are about
// to be placed without a sync.
func (s *Store) markUnsynced(diffIDs []digest.Digest) error {
	if len(diffIDs) == 0 {
		return nil
	}
	id, err := bootID()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.path("unsynced"), 0o700); err != nil {
		return err
	}
	for _, d := range diffIDs {
		if err := writeSynced(s.unsyncedPath(d), id); err != nil {
			return err
		}
	}
	return atomicfile.SyncDir(s.path("unsynced"))
}

// writeSynced writes data to the file p and syncs it.
func writeSynced(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// dropTorn removes the snapshot of diffID when it was placed unsynced
// under an earlier boot of the machine, so that it is unpacked again.
func (s *Store) dropTorn(diffID digest.Digest) error {
	if _, err := os.Stat(s.unsyncedPath(diffID)); err != nil {
		return nil // the common case: synced when it was placed
	}
	unlock, err := s.lock(true)
	if err != nil {
		return err
	}
	defer unlock()
	mark, err := os.ReadFile(s.unsyncedPath(diffID))
	if errors.Is(err, fs.ErrNotExist) {
		return nil // another process dropped it first
	}
	id, berr := bootID()
	if err == nil && berr == nil && bytes.Equal(bytes.TrimSpace(mark), id) {
		return nil
	}
	if err := s.removeTree(s.snapshotPath(diffID)); err != nil {
		return err
	}
	return os.Remove(s.unsyncedPath(diffID))
}

// sweepUnsynced removes the markers of snapshots that are gone; the
// caller holds the store lock exclusively.
func (s *Store) sweepUnsynced() {
	ents, _ := os.ReadDir(s.path("unsynced"))
	for _, e := range ents {
		if _, err := os.Stat(s.path("snapshots", e.Name())); errors.Is(err, fs.ErrNotExist) {
			os.Remove(s.path("unsynced", e.Name()))
		}
	}
}
