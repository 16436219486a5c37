// Package runtime is berth-runtime's core: a runc-compatible OCI runtime
// over berth's container engine. Each verb of the command line is a
// separate process, so everything a container is lives on disk, in its
// state directory ROOT/ID (ROOT is --root, /run/berth-runtime by default):
//
//	ROOT/ID/state.json   the record: pid and its start time, bundle, cgroup, ...
//	ROOT/ID/config.json  the bundle's spec as it was at create
//	ROOT/ID/start.sock   the init's start listener while the container is created
//	ROOT/ID/lock         flocked by every verb that changes the record
//
// The status is never stored: it is derived from the process (see
// State.Status), so a container whose process died is "stopped" without
// anyone recording it.
package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/atomicfile"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/lockfile"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// DefaultRoot is where container state lives unless --root says otherwise.
const DefaultRoot = "/run/berth-runtime"

// The statuses of the OCI state, plus paused (runc's too).
const (
	Creating = "creating"
	Created  = "created"
	Running  = "running"
	Paused   = "paused"
	Stopped  = "stopped"
)

// State is one container's record (ROOT/ID/state.json).
type State struct {
	ID          string                `json:"id"`
	Bundle      string                `json:"bundle"`
	Rootfs      string                `json:"rootfs"`
	Pid         int                   `json:"pid"`
	PidStart    uint64                `json:"pidStart"` // the pid's start time, so a reused pid is not taken for it
	Cgroup      string                `json:"cgroup"`
	Created     time.Time             `json:"created"`
	Annotations map[string]string     `json:"annotations,omitempty"`
	Started     bool                  `json:"started"` // start released the workload
	Paused      bool                  `json:"paused"`
	Resources   *specs.LinuxResources `json:"resources,omitempty"` // the limits now in force
	Owner       string                `json:"owner,omitempty"`
}

// Status derives the container's status from its process: stopped when
// the process is gone (or its pid was reused), created while the init
// still waits for start, paused when frozen, running otherwise.
func (s *State) Status() string {
	if !instance.Alive(s.Pid, s.PidStart) {
		return Stopped
	}
	if s.Paused {
		return Paused
	}
	if !s.Started && awaitingStart(s.Pid) {
		return Created
	}
	return Running
}

// awaitingStart reports whether pid is still berth's init (before the
// execve of the workload): its command line is the init stage's.
func awaitingStart(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(string(b), "\x00")
	return len(args) >= 2 && args[0] == "berth-init" && args[1] == "__init"
}

// OCI is the state as the runtime spec defines it (hooks get it on stdin,
// `state` prints it with runc's extra fields).
func (s *State) OCI() specs.State {
	st := specs.State{
		Version:     specs.Version,
		ID:          s.ID,
		Status:      specs.ContainerState(s.Status()),
		Bundle:      s.Bundle,
		Annotations: s.Annotations,
	}
	if st.Status != specs.StateStopped {
		st.Pid = s.Pid
	}
	return st
}

// Store is the state directory (--root).
type Store struct {
	Root string
}

// NewStore opens (creating it, mode 0700) the state root.
func NewStore(root string) (*Store, error) {
	if root == "" {
		root = DefaultRoot
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("state root %q: %w", root, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("state root %q: %w", abs, unwrap(err))
	}
	return &Store{Root: abs}, nil
}

var validID = regexp.MustCompile(`^[\w+\-.]+$`)

// CheckID refuses IDs that could escape the state root.
func CheckID(id string) error {
	if id == "" || id == "." || id == ".." || !validID.MatchString(id) {
		return fmt.Errorf("container ID %q: only letters, digits, '_', '+', '-' and '.' are allowed: %w", id, errdefs.ErrInvalid)
	}
	return nil
}

// Dir is the container's state directory.
func (st *Store) Dir(id string) string { return filepath.Join(st.Root, id) }

// Lock is a held container lock.
type Lock struct{ f *os.File }

// Unlock releases it.
func (l *Lock) Unlock() {
	if l != nil && l.f != nil {
		lockfile.Flock(l.f, unix.LOCK_UN)
		l.f.Close()
	}
}

// lock takes the container's exclusive lock; ErrNotFound when there is no
// such container.
func (st *Store) lock(id string) (*Lock, error) {
	if err := CheckID(id); err != nil {
		return nil, err
	}
	f, err := lockfile.Open(filepath.Join(st.Dir(id), "lock"), unix.LOCK_EX)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, notExist(id)
		}
		return nil, fmt.Errorf("container %s: lock: %w", id, unwrap(err))
	}
	// The directory may have been removed while we waited.
	if _, err := os.Stat(filepath.Join(st.Dir(id), "state.json")); err != nil {
		f.Close()
		return nil, notExist(id)
	}
	return &Lock{f: f}, nil
}

func notExist(id string) error {
	return fmt.Errorf("container %s does not exist: %w", id, errdefs.ErrNotFound)
}

// Load reads a container's record.
func (st *Store) Load(id string) (*State, error) {
	if err := CheckID(id); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(st.Dir(id), "state.json"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, notExist(id)
		}
		return nil, fmt.Errorf("container %s: %w", id, unwrap(err))
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("container %s: state.json: %w", id, err)
	}
	return &s, nil
}

// Save writes a container's record atomically.
func (st *Store) Save(s *State) error {
	return writeJSON(filepath.Join(st.Dir(s.ID), "state.json"), s)
}

// Spec reads the spec the container was created with.
func (st *Store) Spec(id string) (*specs.Spec, error) {
	return loadSpec(filepath.Join(st.Dir(id), "config.json"))
}

// List returns every container's record, sorted by ID.
func (st *Store) List() ([]*State, error) {
	ents, err := os.ReadDir(st.Root)
	if err != nil {
		return nil, fmt.Errorf("state root %q: %w", st.Root, unwrap(err))
	}
	var out []*State
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		s, err := st.Load(e.Name())
		if err != nil {
			continue // being created or deleted
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// loadLocked takes a container's lock and loads its record; the caller
// unlocks.
func (st *Store) loadLocked(id string) (*State, *Lock, error) {
	l, err := st.lock(id)
	if err != nil {
		return nil, nil, err
	}
	s, err := st.Load(id)
	if err != nil {
		l.Unlock()
		return nil, nil, err
	}
	return s, l, nil
}

// loadCreated is loadLocked for a container that must be created (and
// not yet started): status is its status as the caller sees it.
func (st *Store) loadCreated(id string, status func(*State) string) (*State, *Lock, error) {
	s, l, err := st.loadLocked(id)
	if err != nil {
		return nil, nil, err
	}
	if now := status(s); now != Created {
		l.Unlock()
		return nil, nil, fmt.Errorf("container %s is %s: only a created container can be started: %w", id, now, errdefs.ErrConflict)
	}
	return s, l, nil
}

// update changes a container's record under its lock.
func (st *Store) update(id string, fn func(s *State) error) (*State, error) {
	s, l, err := st.loadLocked(id)
	if err != nil {
		return nil, err
	}
	defer l.Unlock()
	if err := fn(s); err != nil {
		return nil, err
	}
	return s, st.Save(s)
}

// writeJSON writes v to path by atomic rename.
func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, unwrap(err))
	}
	return nil
}

// loadSpec reads a config.json.
func loadSpec(path string) (*specs.Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bundle config %s: %w", path, unwrap(err))
	}
	s, err := parseSpec(b)
	if err != nil {
		return nil, fmt.Errorf("bundle config %s: %w", path, err)
	}
	return s, nil
}

// parseSpec decodes the bytes of a config.json.
func parseSpec(b []byte) (*specs.Spec, error) {
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%v: %w", err, errdefs.ErrInvalid)
	}
	return &s, nil
}

// unwrap drops the *PathError/*SyscallError wrapper when the error already
// names its path.
func unwrap(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// WritePidFile writes pid to path atomically, as runc does (the shim
// reads it as soon as the verb exits).
func WritePidFile(path string, pid int) error {
	if path == "" {
		return nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(abs, []byte(fmt.Sprint(pid)), 0o644); err != nil {
		return fmt.Errorf("pid file %s: %w", abs, unwrap(err))
	}
	return nil
}
