package project

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/berth-dev/berth/internal/atomicfile"
	"github.com/berth-dev/berth/internal/errdefs"
)

// Store keeps projects under ROOT/projects: per project NAME/project.json
// (the desired state, with its generation), NAME/status.json (what its
// supervisor last saw) and NAME/supervisor.json (who supervises it).
type Store struct {
	dir string
}

// Desired is a project as `up` and `scale` left it: the project and the
// generation, bumped at each change, that the supervisor reports it
// reconciled.
type Desired struct {
	Project    *Project `json:"project"`
	Generation int      `json:"generation"`
}

// Status is what the supervisor last saw.
type Status struct {
	Generation int                      `json:"generation"`
	Converged  bool                     `json:"converged"`
	Services   map[string]ServiceStatus `json:"services"`
	Error      string                   `json:"error,omitempty"`
}

// ServiceStatus is one service's count of replicas.
type ServiceStatus struct {
	Want    int    `json:"want"`
	Ready   int    `json:"ready"`   // running, healthy if checked, of the current configuration
	Running int    `json:"running"` // running, whatever their configuration or health
	Waiting string `json:"waiting,omitempty"`
	// Ports are the service's published ports as `berth port` prints
	// them ("80/tcp -> 0.0.0.0:8080"), host ports resolved.
	Ports []string `json:"ports,omitempty"`
}

// Supervisor is the process that supervises a project.
type Supervisor struct {
	Pid   int    `json:"pid"`
	Start uint64 `json:"start"`
}

// Open opens (creating) the project store under root.
func Open(root string) (*Store, error) {
	dir := filepath.Join(root, "projects")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("project store %s: %w", dir, err)
	}
	return &Store{dir: dir}, nil
}

// Dir is project name's directory.
func (s *Store) Dir(name string) string { return filepath.Join(s.dir, name) }

func (s *Store) readJSON(name, file string, v any) error {
	b, err := os.ReadFile(filepath.Join(s.Dir(name), file))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("project %s: %w", name, errdefs.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("project %s: %w", name, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("project %s: %s unreadable: %v", name, file, err)
	}
	return nil
}

func (s *Store) writeJSON(name, file string, v any) error {
	if err := os.MkdirAll(s.Dir(name), 0o700); err != nil {
		return fmt.Errorf("project %s: %w", name, err)
	}
	b, _ := json.MarshalIndent(v, "", "  ")
	if err := atomicfile.Write(filepath.Join(s.Dir(name), file), b, 0o600); err != nil {
		return fmt.Errorf("project %s: %w", name, err)
	}
	return nil
}

// Desired reads a project's desired state.
func (s *Store) Desired(name string) (*Desired, error) {
	var d Desired
	if err := s.readJSON(name, "project.json", &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// SetDesired records p as the desired state with the next generation,
// which it returns.
func (s *Store) SetDesired(p *Project) (int, error) {
	gen := 1
	if d, err := s.Desired(p.Name); err == nil {
		gen = d.Generation + 1
	}
	return gen, s.writeJSON(p.Name, "project.json", &Desired{Project: p, Generation: gen})
}

// Status reads what a project's supervisor last saw.
func (s *Store) Status(name string) (*Status, error) {
	var st Status
	if err := s.readJSON(name, "status.json", &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// SetStatus records what the supervisor saw.
func (s *Store) SetStatus(name string, st *Status) error {
	return s.writeJSON(name, "status.json", st)
}

// Supervisor reads who supervises a project.
func (s *Store) Supervisor(name string) (Supervisor, error) {
	var sv Supervisor
	err := s.readJSON(name, "supervisor.json", &sv)
	return sv, err
}

// SetSupervisor records who supervises a project.
func (s *Store) SetSupervisor(name string, sv Supervisor) error {
	return s.writeJSON(name, "supervisor.json", sv)
}

// LockPath is the file a project's supervisor holds locked while it
// lives: one supervisor per project.
func (s *Store) LockPath(name string) string { return filepath.Join(s.Dir(name), "supervisor.lock") }

// LogPath is where a project's supervisor writes what it does.
func (s *Store) LogPath(name string) string { return filepath.Join(s.Dir(name), "supervisor.log") }

// Remove removes a project's directory.
func (s *Store) Remove(name string) error {
	if err := os.RemoveAll(s.Dir(name)); err != nil {
		return fmt.Errorf("project %s: %w", name, err)
	}
	return nil
}

// List names the projects recorded.
func (s *Store) List() ([]string, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("project store: %w", err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			if _, err := os.Stat(filepath.Join(s.dir, e.Name(), "project.json")); err == nil {
				out = append(out, e.Name())
			}
		}
	}
	sort.Strings(out)
	return out, nil
}
