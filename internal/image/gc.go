package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/atomicfile"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/lockfile"
)

// lock takes the store lock, shared or exclusive, and returns its release.
// A shared lock needs only read access, so a store on a read-only file
// system can still be listed and inspected.
func (s *Store) lock(exclusive bool) (func(), error) {
	var f *os.File
	err := os.ErrNotExist
	if !exclusive {
		f, err = os.Open(s.path("lock"))
	}
	if err != nil {
		f, err = os.OpenFile(s.path("lock"), os.O_RDWR|os.O_CREATE, 0o600)
	}
	if err != nil {
		return nil, fmt.Errorf("image store lock: %w", err)
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	if err := lockfile.Flock(f, how); err != nil {
		f.Close()
		return nil, fmt.Errorf("image store lock: %w", err)
	}
	return func() { f.Close() }, nil
}

// stage is a private directory under tmp/, flocked while in use so that
// GC only sweeps stages whose owner is gone.
type stage struct {
	dir string
	f   *os.File
}

// newStage creates a stage. It holds the store lock (shared) while it does,
// so a concurrent GC never sees the stage before it is locked.
func (s *Store) newStage(prefix string) (*stage, error) {
	unlock, err := s.lock(false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	dir, err := os.MkdirTemp(s.path("tmp"), prefix)
	if err != nil {
		return nil, fmt.Errorf("image store staging: %w", err)
	}
	f, err := os.Open(dir)
	if err == nil {
		err = lockfile.Flock(f, unix.LOCK_EX)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("image store staging: %w", err)
	}
	return &stage{dir: dir, f: f}, nil
}

// close removes the stage and everything left in it.
func (st *stage) close() {
	os.RemoveAll(st.dir)
	st.f.Close()
}

// Lease marks one image's manifest, config, layer blobs and snapshots as in
// use: while any process holds a lease on it, Remove and GC keep them even
// when the image has lost its names. Leases are flocks, so they end when the
// holding process dies.
type Lease struct {
	f *os.File
}

// Use takes a lease on img. The caller must Release it (or exit) when it no
// longer uses the image's snapshots.
func (s *Store) Use(img Image) (*Lease, error) {
	if err := img.Manifest.Validate(); err != nil {
		return nil, fmt.Errorf("image %s: manifest digest: %v: %w", img.ID, err, errdefs.ErrInvalid)
	}
	unlock, err := s.lock(false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, err := os.Stat(s.blobPath(img.Manifest)); err != nil {
		return nil, fmt.Errorf("image %s: manifest %s: %w", img.ID, img.Manifest, errdefs.ErrNotFound)
	}
	p := s.path("leases", img.Manifest.Algorithm().String()+"-"+img.Manifest.Encoded())
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("image lease: %w", err)
	}
	// GC (the only remover of lease files) cannot run while we hold the
	// store lock, so this file stays linked.
	if err := lockfile.Flock(f, unix.LOCK_SH); err != nil {
		f.Close()
		return nil, fmt.Errorf("image lease: %w", err)
	}
	return &Lease{f: f}, nil
}

// File returns the lease's open file, for handing the lease to a child
// process (exec.Cmd.ExtraFiles): the lock lasts while any copy is open.
func (l *Lease) File() *os.File { return l.f }

// Release ends the lease.
func (l *Lease) Release() error { return l.f.Close() }

// GC removes blobs and snapshots that no image and no lease refers to, and
// stale staging directories left by crashed imports.
func (s *Store) GC() error {
	unlock, err := s.lock(true)
	if err != nil {
		return err
	}
	defer unlock()
	r, err := s.readRefs()
	if err != nil {
		return err
	}
	return s.gcLocked(r)
}

// live is the set of blobs and snapshots to keep.
type live struct {
	blobs     map[digest.Digest]bool
	snapshots map[string]bool
}

// mark adds the closure of one manifest. A manifest that cannot be read
// keeps only what is already marked.
func (s *Store) mark(l *live, md digest.Digest) {
	l.blobs[md] = true
	m, cfg, err := s.readManifestConfig(md)
	if err != nil {
		return
	}
	l.blobs[m.Config.Digest] = true
	for _, d := range m.Layers {
		l.blobs[d.Digest] = true
	}
	for _, d := range cfg.RootFS.DiffIDs {
		l.snapshots[d.Encoded()] = true
	}
}

// gcLocked collects garbage; the caller holds the store lock exclusively.
func (s *Store) gcLocked(r *refs) error {
	l := &live{blobs: map[digest.Digest]bool{}, snapshots: map[string]bool{}}
	for _, rec := range r.Images {
		s.mark(l, rec.Manifest)
	}
	if err := s.markLeases(l); err != nil {
		return err
	}
	var errs []error
	algs, _ := os.ReadDir(s.path("blobs"))
	for _, alg := range algs {
		ents, _ := os.ReadDir(s.path("blobs", alg.Name()))
		for _, e := range ents {
			d := digest.NewDigestFromEncoded(digest.Algorithm(alg.Name()), e.Name())
			if !l.blobs[d] {
				if err := os.Remove(s.path("blobs", alg.Name(), e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
					errs = append(errs, err)
				}
			}
		}
	}
	ents, _ := os.ReadDir(s.path("snapshots"))
	for _, e := range ents {
		if !l.snapshots[e.Name()] {
			errs = append(errs, s.removeTree(s.path("snapshots", e.Name())))
		}
	}
	errs = append(errs, s.sweepTmp())
	s.sweepLocks()
	s.sweepUnsynced()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("image store gc: %w", err)
	}
	return nil
}

// markLeases keeps what held leases refer to and deletes unheld lease files.
func (s *Store) markLeases(l *live) error {
	err := s.sweepUnheld("leases", func(name string) {
		if alg, hex, ok := strings.Cut(name, "-"); ok {
			s.mark(l, digest.NewDigestFromEncoded(digest.Algorithm(alg), hex))
		}
	})
	if err != nil {
		return fmt.Errorf("image store leases: %w", err)
	}
	return nil
}

// sweepUnheld removes the flock files in the store's directory dir that
// nobody holds, and calls held (when not nil) with the names of the
// others. The caller holds the store lock exclusively: leases are taken
// under it, and a blob lock counts only while its file stays linked
// (see lockBlob).
func (s *Store) sweepUnheld(dir string, held func(name string)) error {
	ents, err := os.ReadDir(s.path(dir))
	if err != nil {
		return err
	}
	for _, e := range ents {
		p := s.path(dir, e.Name())
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		if lockfile.Flock(f, unix.LOCK_EX|unix.LOCK_NB) == nil {
			os.Remove(p)
		} else if held != nil {
			held(e.Name())
		}
		f.Close()
	}
	return nil
}

// removeTree moves dir into tmp (so it vanishes from view at once) and
// deletes it there.
func (s *Store) removeTree(dir string) error {
	grave, err := os.MkdirTemp(s.path("tmp"), "gc-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(grave)
	if err := os.Rename(dir, filepath.Join(grave, "x")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// sweepStale removes what crashed imports and unpacks left in tmp/, so a
// killed import does not keep its copy of an image for ever. It runs
// before every import and unpack; failing to sweep fails nothing.
func (s *Store) sweepStale() {
	if ents, err := os.ReadDir(s.path("tmp")); err != nil || len(ents) == 0 {
		return
	}
	unlock, err := s.lock(true)
	if err != nil {
		return
	}
	defer unlock()
	_ = s.sweepTmp()
}

// sweepTmp removes staging entries whose owner no longer holds them, and
// what a writer of refs.json killed mid-write left (the caller holds the
// store lock exclusively, so no writer runs).
func (s *Store) sweepTmp() error {
	left, _ := filepath.Glob(s.path(atomicfile.TempPattern("refs.json")))
	for _, p := range left {
		os.Remove(p)
	}
	ents, err := os.ReadDir(s.path("tmp"))
	if err != nil {
		return err
	}
	for _, e := range ents {
		p := s.path("tmp", e.Name())
		if !e.IsDir() {
			os.Remove(p)
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		if lockfile.Flock(f, unix.LOCK_EX|unix.LOCK_NB) == nil {
			os.RemoveAll(p)
		}
		f.Close()
	}
	return nil
}
