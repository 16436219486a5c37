// Package runtime is berth-runtime's core: a runc-compatible OCI runtime
// over berth's container engine. Each verb of the command line is a
// separate process, so everything a container is lives on disk, in its
// state directory ROOT/ID (ROOT is --root, /run/berth-runtime by default):
//
//	ROOT/ID/state.json   the record: isolation, status, pid and its start time, bundle, cgroup, ...
//	ROOT/ID/config.json  the bundle's spec as it was at create
//	ROOT/ID/start.sock   the init's start listener while the container is created
//	ROOT/ID/lock         flocked by every verb that changes the record
//
// The status is stored (an instance.Status) and written at each
// transition a verb makes, which instance.CanMove checks. What happens
// without a verb (the process dies, the workload starts) is observed
// when the record is loaded (see reconcile): a container whose process
// died is "stopped" without anyone recording it first.
package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
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

// State is one container's record (ROOT/ID/state.json).
type State struct {
	ID          string            `json:"id"`
	Bundle      string            `json:"bundle"`
	Rootfs      string            `json:"rootfs"`
	Pid         int               `json:"pid"`
	PidStart    uint64            `json:"pidStart"` // the pid's start time, so a reused pid is not taken for it
	Cgroup      string            `json:"cgroup"`
	Created     time.Time         `json:"created"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// Isolation is instance.IsolationContainer or instance.IsolationVM.
	Isolation string `json:"isolation"`
	// Status is the status as of the last transition or observation.
	Status    instance.Status       `json:"status"`
	Resources *specs.LinuxResources `json:"resources,omitempty"` // the limits now in force
	Owner     string                `json:"owner,omitempty"`
}

// OCI is the state as the runtime spec defines it (hooks get it on stdin,
// `state` prints it with runc's extra fields).
func (s *State) OCI() specs.State {
	st := specs.State{
		Version:     specs.Version,
		ID:          s.ID,
		Status:      specs.ContainerState(s.Status),
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

// Load reads a container's record, its status brought up to date with
// what its processes say (reconcile); only a verb that holds the lock
// writes that back (loadLocked).
func (st *Store) Load(id string) (*State, error) {
	s, _, err := st.load(id)
	return s, err
}

// load is Load that also returns the status as stored.
func (st *Store) load(id string) (*State, instance.Status, error) {
	if err := CheckID(id); err != nil {
		return nil, "", err
	}
	b, err := os.ReadFile(filepath.Join(st.Dir(id), "state.json"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, "", notExist(id)
		}
		return nil, "", fmt.Errorf("container %s: %w", id, unwrap(err))
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, "", fmt.Errorf("container %s: state.json: %w", id, err)
	}
	stored := s.Status
	if err := st.upgrade(&s, b); err != nil {
		return nil, "", fmt.Errorf("container %s: state.json: %w", id, err)
	}
	st.reconcile(&s)
	return &s, stored, nil
}

// legacyRecord is what a record written by a berth-runtime older than
// the stored status had instead: whether start released the workload and
// whether it was paused.
type legacyRecord struct {
	Started bool `json:"started"`
	Paused  bool `json:"paused"`
}

// upgrade fills in the isolation and status of a record written by an
// older berth-runtime, which stored neither: a VM is the one with a VM
// record beside it; the status is what its started and paused flags said
// (reconcile does the rest). An isolation or status it does not know is
// refused.
func (st *Store) upgrade(s *State, b []byte) error {
	if s.Isolation == "" {
		s.Isolation = instance.IsolationContainer
		if _, err := os.Stat(filepath.Join(st.Dir(s.ID), vmRecordFile)); err == nil {
			s.Isolation = instance.IsolationVM
		}
	}
	if s.Isolation != instance.IsolationContainer && s.Isolation != instance.IsolationVM {
		return fmt.Errorf("isolation %q: want container or vm: %w", s.Isolation, errdefs.ErrInvalid)
	}
	switch s.Status {
	case instance.Created, instance.Running, instance.Paused, instance.Stopped:
		return nil
	case "":
	default:
		return fmt.Errorf("status %q: want created, running, paused or stopped: %w", s.Status, errdefs.ErrInvalid)
	}
	var old legacyRecord
	if err := json.Unmarshal(b, &old); err != nil {
		return err
	}
	switch {
	case old.Paused:
		s.Status = instance.Paused
	case old.Started:
		s.Status = instance.Running
	default:
		s.Status = instance.Created
	}
	return nil
}

// reconcile moves the stored status on to what the processes say
// happened without a verb: a workload whose process is gone (or whose pid
// was reused) is stopped; a created one whose workload started all the
// same (see backend.started) is running.
func (st *Store) reconcile(s *State) {
	switch {
	case s.Status == instance.Stopped:
	case !instance.Alive(s.Pid, s.PidStart):
		s.Status = instance.Stopped
	case s.Status == instance.Created && st.backend(s).started(s):
		s.Status = instance.Running
	}
}

// transitionError is a verb refused by the state machine: "container ID
// is FROM, cannot VERB", classed as a conflict.
type transitionError struct {
	id, verb string
	*instance.TransitionError
}

func (e *transitionError) Error() string {
	return fmt.Sprintf("container %s is %s, cannot %s", e.id, e.From, e.verb)
}

func (e *transitionError) Unwrap() error { return e.TransitionError }

// can checks that s may become to, for a verb described as what ("" is
// "become TO").
func (s *State) can(to instance.Status, what string) error {
	err := instance.CanMove(s.Status, to)
	if err == nil {
		return nil
	}
	if what == "" {
		what = "become " + string(to)
	}
	var te *instance.TransitionError
	errors.As(err, &te)
	return &transitionError{id: s.ID, verb: what, TransitionError: te}
}

// move makes s's status to, if the state machine allows it.
func (s *State) move(to instance.Status) error {
	if err := s.can(to, ""); err != nil {
		return err
	}
	s.Status = to
	return nil
}

// need refuses a verb in any status but those given: one that makes no
// transition (exec, update, stats), or resume, whose move (to running)
// start makes too.
func (s *State) need(what string, ok ...instance.Status) error {
	if slices.Contains(ok, s.Status) {
		return nil
	}
	return &transitionError{id: s.ID, verb: what, TransitionError: &instance.TransitionError{From: s.Status}}
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

// loadLocked takes a container's lock and loads its record, writing
// back what reconcile observed; the caller unlocks.
func (st *Store) loadLocked(id string) (*State, *Lock, error) {
	l, err := st.lock(id)
	if err != nil {
		return nil, nil, err
	}
	s, stored, err := st.load(id)
	if err == nil && s.Status != stored {
		err = st.Save(s)
	}
	if err != nil {
		l.Unlock()
		return nil, nil, err
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
