// Package instance is berth's engine-neutral lifecycle: the record of every
// instance (container or VM) kept on disk, its state machine, the run
// options turned into an OCI spec, logs, and the monitor that owns a
// detached instance.
package instance

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/atomicfile"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/health"
	"github.com/berth-dev/berth/internal/lockfile"
)

// Isolation is how an instance is isolated.
const (
	IsolationContainer = "container"
	IsolationVM        = "vm"
)

// Limits are the resource limits asked for on the command line.
type Limits struct {
	Memory int64   `json:"memory,omitempty"` // bytes
	CPUs   float64 `json:"cpus,omitempty"`
	Pids   int64   `json:"pids,omitempty"`
}

// Instance is the record of one instance, stored as state.json in its
// directory. Fields after Status change while it runs.
type Instance struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Image       string            `json:"image"`
	ImageID     string            `json:"image_id"`
	Isolation   string            `json:"isolation"`
	Command     []string          `json:"command"`
	Hostname    string            `json:"hostname"`
	Limits      Limits            `json:"limits"`
	Detached    bool              `json:"detached"`
	AutoRemove  bool              `json:"auto_remove"`
	Tty         bool              `json:"tty"`
	Interactive bool              `json:"interactive"`
	Init        bool              `json:"init"`                  // --init: berth's init is PID 1, else the workload is
	Cgroup      string            `json:"cgroup,omitempty"`      // a container's host cgroup
	Kernel      string            `json:"kernel,omitempty"`      // a VM's --kernel; "" for berth's default
	Accel       string            `json:"accel,omitempty"`       // a VM's accelerator: kvm or tcg
	Transport   string            `json:"transport,omitempty"`   // a VM's agent channel: vsock or virtio-serial
	VMStart     string            `json:"vm_start,omitempty"`    // how a VM started: "template" (restored) or "boot"
	VMTemplate  string            `json:"vm_template,omitempty"` // the template a VM was restored from
	LogConfig   *LogConfig        `json:"log_config,omitempty"`  // bounds a detached instance's log; nil: DefaultLogConfig
	Net         *NetConfig        `json:"net,omitempty"`         // the network asked for; nil: none
	Labels      map[string]string `json:"labels,omitempty"`      // --label K=V
	// RestartPolicy is run's --restart; nil: no.
	RestartPolicy *RestartPolicy `json:"restart_policy,omitempty"`
	// Healthcheck is the check the owner runs while the instance runs
	// (the image's HEALTHCHECK merged with run's --health-*); nil: none.
	Healthcheck *health.Config `json:"healthcheck,omitempty"`
	// HealthOnFailure is what the owner does when the instance turns
	// unhealthy: HealthNone (""), HealthKill, HealthRestart or HealthStop.
	HealthOnFailure string    `json:"health_on_failure,omitempty"`
	Created         time.Time `json:"created"`

	Status     Status    `json:"status"`
	Pid        int       `json:"pid,omitempty"`         // host pid of the container's PID 1 (init or workload) or the VM's QEMU
	PidStart   uint64    `json:"pid_start,omitempty"`   // its start time in clock ticks, against pid reuse
	MonitorPid int       `json:"monitor_pid,omitempty"` // process that waits for it (CLI or monitor)
	MonStart   uint64    `json:"monitor_start,omitempty"`
	Started    time.Time `json:"started,omitzero"`
	Finished   time.Time `json:"finished,omitzero"`
	ExitCode   *int      `json:"exit_code,omitempty"`
	Signal     int       `json:"signal,omitempty"`
	OOMKilled  bool      `json:"oom_killed"`
	Endpoint   *Endpoint `json:"endpoint,omitempty"` // where it is on its network while running
	Error      string    `json:"error,omitempty"`    // why it failed to start or was lost
	// RestartCount is how many times the instance was started again
	// (its restart policy, a health check's restart, a reconcile that
	// found its owner gone); a user's start sets it back to 0.
	RestartCount int `json:"restart_count"`
	// Restarting: stopped, and its owner (MonitorPid) starts it again
	// after its back-off.
	Restarting bool `json:"restarting,omitempty"`
	// StoppedByUser: stop, kill or rm -f ended it (recorded before the
	// signal): no restart policy starts it again until a user's start.
	StoppedByUser bool `json:"stopped_by_user,omitempty"`
	// Health is what the health check found since the last start.
	Health *health.State `json:"health,omitempty"`
	// Unreadable is set by List, never stored: the instance's record
	// could not be read, Error says why.
	Unreadable bool `json:"unreadable,omitempty"`
}

// ShortID is the 12-character form shown by ps.
func (in *Instance) ShortID() string {
	if len(in.ID) < 12 {
		return in.ID
	}
	return in.ID[:12]
}

// Store keeps instance records under ROOT/instances.
type Store struct {
	dir string
}

// OpenStore opens (creating) the instance directory under root.
func OpenStore(root string) (*Store, error) {
	dir := filepath.Join(root, "instances")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("instance store %s: %w", dir, err)
	}
	s := &Store{dir: dir}
	s.sweep()
	return s, nil
}

// Dir is the directory of instance id.
func (s *Store) Dir(id string) string { return filepath.Join(s.dir, id) }

// Root is berth's data root, the store's parent.
func (s *Store) Root() string { return filepath.Dir(s.dir) }

// NewID returns a fresh 64-hex instance ID.
func NewID() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b[:])
}

// Create writes a new record and its directory. The name must be unused:
// names are claimed by creating NAMES/<name> exclusively, so two
// concurrent runs can never both get one.
func (s *Store) Create(in *Instance) error {
	if err := validName(in.Name); err != nil {
		return err
	}
	// The directory is made whole (reserve and record) under .new and
	// renamed into place, so a crash never leaves an instance directory
	// without its record; and it comes before the name, so a name file
	// whose instance directory is missing can only be left over from a
	// crash. The stage's name says which process made it (see sweep).
	me := os.Getpid()
	stage := filepath.Join(s.dir, newDir, fmt.Sprintf("%s.%d.%d", in.ID, me, ProcStart(me)))
	if err := os.MkdirAll(filepath.Dir(stage), 0o700); err != nil {
		return fmt.Errorf("instance %s: %w", in.ShortID(), err)
	}
	if err := os.Mkdir(stage, 0o700); err != nil {
		return fmt.Errorf("instance %s: %w", in.ShortID(), err)
	}
	err := writeReserve(filepath.Join(stage, reserveFile))
	if err == nil {
		err = writeRecord(stage, in)
	}
	if err == nil {
		err = os.Rename(stage, s.Dir(in.ID))
	}
	if err != nil {
		os.RemoveAll(stage)
		return fmt.Errorf("instance %s: %w", in.ShortID(), err)
	}
	if err := s.claimName(in.Name, in.ID); err != nil {
		s.discard(in.ID)
		return err
	}
	return nil
}

// validName accepts Docker's instance names.
func validName(name string) error {
	if len(name) > 128 {
		return fmt.Errorf("name %.20q...: longer than 128 bytes: %w", name, errdefs.ErrInvalid)
	}
	ok := name != ""
	for i, r := range name {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && (i == 0 || (r != '_' && r != '.' && r != '-')) {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("name %q: want letters, digits, '_', '.' and '-', starting with a letter or digit: %w", name, errdefs.ErrInvalid)
	}
	return nil
}

func (s *Store) namePath(name string) string { return filepath.Join(s.dir, ".names", name) }

// claimName records that name belongs to id. The name file is written
// in full under a temporary name and linked into place, so it never
// exists empty. A name whose instance directory is gone (a crash between
// the two steps of Remove) is taken over.
func (s *Store) claimName(name, id string) error {
	p := s.namePath(name)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(p), "."+id)
	defer os.Remove(tmp)
	if err := os.WriteFile(tmp, []byte(id), 0o600); err != nil {
		return fmt.Errorf("claim name %q: %w", name, err)
	}
	for attempt := 0; attempt < 2; attempt++ {
		err := os.Link(tmp, p)
		if err == nil {
			return nil
		}
		if !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("claim name %q: %w", name, err)
		}
		owner, err := os.ReadFile(p)
		if err != nil {
			continue // released meanwhile
		}
		if _, err := os.Stat(s.Dir(string(owner))); err == nil {
			return fmt.Errorf("name %q is already used by instance %.12s: %w", name, owner, errdefs.ErrConflict)
		}
		s.releaseName(name, string(owner))
	}
	return fmt.Errorf("name %q: taken while claiming it: %w", name, errdefs.ErrConflict)
}

// releaseName drops name if it still belongs to id.
func (s *Store) releaseName(name, id string) {
	if owner, err := os.ReadFile(s.namePath(name)); err == nil && string(owner) == id {
		os.Remove(s.namePath(name))
	}
}

// Get finds an instance by full ID, name or unique ID prefix.
func (s *Store) Get(ref string) (*Instance, error) {
	if ref == "" {
		return nil, fmt.Errorf("empty instance reference: %w", errdefs.ErrInvalid)
	}
	var corrupt *CorruptError
	in, err := s.read(ref)
	if err == nil || errors.As(err, &corrupt) {
		return in, err
	}
	if validName(ref) == nil {
		if id, err := os.ReadFile(s.namePath(ref)); err == nil {
			if in, err := s.read(string(id)); err == nil || errors.As(err, &corrupt) {
				return in, err
			}
		}
	}
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("instance store: %w", err)
	}
	found := ""
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") && strings.HasPrefix(e.Name(), ref) {
			if found != "" {
				return nil, fmt.Errorf("instance %q: prefix matches more than one instance: %w", ref, errdefs.ErrInvalid)
			}
			found = e.Name()
		}
	}
	if found == "" {
		return nil, fmt.Errorf("instance %q: %w", ref, errdefs.ErrNotFound)
	}
	return s.read(found)
}

// List returns every record, newest first. An unreadable record is
// listed as a stopped instance whose Error says so.
func (s *Store) List() ([]*Instance, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("instance store: %w", err)
	}
	var out []*Instance
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		in, err := s.read(e.Name())
		var corrupt *CorruptError
		if errors.As(err, &corrupt) {
			// Shown, so that it can be found and removed.
			in, err = &Instance{ID: e.Name(), Status: Stopped, Error: corrupt.Error(), Unreadable: true}, nil
		}
		if err == nil {
			out = append(out, in)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

// Update applies fn to the current record under the instance's lock and
// writes it back. A status change must be one the state machine allows.
func (s *Store) Update(id string, fn func(*Instance) error) (*Instance, error) {
	var out *Instance
	err := s.Locked(id, func(in *Instance, write func(*Instance) error) error {
		if err := fn(in); err != nil {
			return err
		}
		out = in
		return write(in)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Locked calls fn with the current record of instance id under the
// instance's lock, so that what fn does to the instance (freeze it,
// signal it) and to its record is one step for every other process that
// takes the lock (Update, Locked). fn may change the record and write
// it with write, which checks the status change against the state
// machine; what fn does not write is not kept.
func (s *Store) Locked(id string, fn func(in *Instance, write func(*Instance) error) error) error {
	unlock, err := lockFile(filepath.Join(s.Dir(id), "lock"))
	if err != nil {
		return err
	}
	defer unlock()
	in, err := s.read(id)
	if err != nil {
		return err
	}
	before := in.Status
	return fn(in, func(x *Instance) error {
		if x.Status != before {
			if err := CanMove(before, x.Status); err != nil {
				return fmt.Errorf("instance %s: %w", x.ShortID(), err)
			}
		}
		if err := s.write(x); err != nil {
			return err
		}
		before = x.Status
		return nil
	})
}

// Remove deletes the record, its name and everything in its directory.
// The directory is first renamed out of sight, so a remover killed
// midway leaves no half-removed instance (visible without its record,
// or unremovable), only trash that the next OpenStore deletes.
func (s *Store) Remove(id string) error {
	if strings.ContainsAny(id, "/") || id == "" || strings.HasPrefix(id, ".") {
		return fmt.Errorf("instance %q: %w", id, errdefs.ErrNotFound)
	}
	in, readErr := s.read(id)
	if err := s.discard(id); err != nil {
		return fmt.Errorf("remove instance %.12s: %w", id, err)
	}
	if readErr == nil {
		s.releaseName(in.Name, id)
	} else {
		// The record cannot say its name: find it among the claims.
		ents, _ := os.ReadDir(filepath.Join(s.dir, ".names"))
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), ".") {
				s.releaseName(e.Name(), id)
			}
		}
	}
	if err := os.RemoveAll(filepath.Join(s.dir, trashDir, id)); err != nil {
		return fmt.Errorf("remove instance %.12s: %w", id, err)
	}
	return nil
}

// discard moves the directory of id into the trash.
func (s *Store) discard(id string) error {
	trash := filepath.Join(s.dir, trashDir)
	if err := os.MkdirAll(trash, 0o700); err != nil {
		return err
	}
	if err := os.Rename(s.Dir(id), filepath.Join(trash, id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

const (
	// trashDir holds the directories of instances being removed.
	trashDir = ".trash"
	// newDir holds the directories of instances being created, named
	// ID.PID.START after the process creating them.
	newDir = ".new"
)

// sweep deletes what removers killed midway left in the trash, and what
// creators that died midway left in .new.
func (s *Store) sweep() {
	ents, _ := os.ReadDir(filepath.Join(s.dir, trashDir))
	for _, e := range ents {
		os.RemoveAll(filepath.Join(s.dir, trashDir, e.Name()))
	}
	ents, _ = os.ReadDir(filepath.Join(s.dir, newDir))
	for _, e := range ents {
		f := strings.Split(e.Name(), ".")
		if len(f) == 3 {
			pid, _ := strconv.Atoi(f[1])
			start, _ := strconv.ParseUint(f[2], 10, 64)
			if Alive(pid, start) {
				continue
			}
		}
		os.RemoveAll(filepath.Join(s.dir, newDir, e.Name()))
	}
}

func (s *Store) read(id string) (*Instance, error) {
	if strings.ContainsAny(id, "/.") {
		return nil, fmt.Errorf("instance %q: %w", id, errdefs.ErrNotFound)
	}
	b, err := os.ReadFile(filepath.Join(s.Dir(id), "state.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("instance %q: %w", id, errdefs.ErrNotFound)
	} else if err != nil {
		return nil, err
	}
	var in Instance
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, &CorruptError{ID: id, Err: err}
	}
	if in.ID != id {
		return nil, &CorruptError{ID: id, Err: fmt.Errorf("it names instance %q", in.ID)}
	}
	return &in, nil
}

// CorruptError is returned for an instance whose record cannot be read.
// The instance can only be removed (rm -f).
type CorruptError struct {
	ID  string
	Err error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("instance %.12s: unreadable record (state.json: %v); rm -f removes it", e.ID, e.Err)
}

// Unwrap classes the error as invalid data.
func (e *CorruptError) Unwrap() error { return errdefs.ErrInvalid }

func (s *Store) write(in *Instance) error {
	if err := writeRecord(s.Dir(in.ID), in); err != nil {
		return fmt.Errorf("instance %s: record: %w", in.ShortID(), err)
	}
	return nil
}

// writeRecord writes in as dir/state.json.
func writeRecord(dir string, in *Instance) error {
	b, err := json.MarshalIndent(in, "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(dir, "state.json")
	err = atomicfile.Write(p, b, 0o600)
	if noSpace(err) && os.Remove(filepath.Join(dir, reserveFile)) == nil {
		// The file system filled up while the instance ran: its reserve
		// makes room to record how it ended.
		err = atomicfile.Write(p, b, 0o600)
	}
	return err
}

// reserveSize is the space each instance keeps aside (see writeReserve).
const (
	reserveFile = "reserve"
	reserveSize = 32 << 10
)

// writeReserve writes the instance's reserve: space set aside when it is
// created and given back when its record cannot otherwise be written, so
// a workload that fills the data root's file system cannot keep berth
// from recording its end.
func writeReserve(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(make([]byte, reserveSize))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

func noSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// lockFile takes an exclusive flock on path, creating it.
func lockFile(path string) (func(), error) {
	f, err := lockfile.Open(path, syscall.LOCK_EX)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", filepath.Dir(path), errdefs.ErrNotFound)
		}
		return nil, err
	}
	return func() { f.Close() }, nil
}

// Bundle is what an instance runs: the OCI spec and the overlay layers
// (lowest first). It is written once, before the instance starts, and read
// by the monitor and by exec.
type Bundle struct {
	Spec   *specs.Spec `json:"spec"`
	Layers []string    `json:"layers"`
}

// SaveBundle writes b as bundle.json of instance id.
func (s *Store) SaveBundle(id string, b *Bundle) error {
	data, err := json.Marshal(b)
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(s.Dir(id), "bundle.json"), data, 0o600)
}

// LoadBundle reads bundle.json of instance id.
func (s *Store) LoadBundle(id string) (*Bundle, error) {
	data, err := os.ReadFile(filepath.Join(s.Dir(id), "bundle.json"))
	if err != nil {
		return nil, fmt.Errorf("instance %s: bundle: %w", id, err)
	}
	var b Bundle
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("instance %s: corrupt bundle.json: %v", id, err)
	}
	return &b, nil
}

// LogPath is where a detached instance's output goes.
func (s *Store) LogPath(id string) string { return filepath.Join(s.Dir(id), "log.json") }
