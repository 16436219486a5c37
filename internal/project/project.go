// Package project is a compose project as berth runs it: the services of
// a compose file, normalised by berth-compose (the companion binary that
// links compose-go, so that berth itself stays small), the desired state
// a project's supervisor reconciles, and the labels that tie instances
// to their project and service.
package project

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// The labels berth puts on a project's instances.
const (
	LabelProject = "dev.berth.project"
	LabelService = "dev.berth.service"
	LabelReplica = "dev.berth.replica"
	LabelHash    = "dev.berth.config-hash"
)

// Project is a compose project, normalised.
type Project struct {
	Name string `json:"name"`
	// Dir is the project's working directory (relative bind sources
	// were resolved against it); File the compose files read.
	Dir   string   `json:"dir"`
	Files []string `json:"files"`
	// Networks are the project's networks, by their names in the file
	// ("default" for the one every service without networks: gets);
	// each is the berth network NetworkName gives.
	Networks []string `json:"networks"`
	// Services, in dependency order: every service after those it
	// depends on.
	Services []Service `json:"services"`
}

// Service is one service of a project.
type Service struct {
	Name  string `json:"name"`
	Image string `json:"image"`
	// Isolation is "container" or "vm" (runtime: berth-vm, or
	// x-berth-isolation: vm).
	Isolation string `json:"isolation"`
	// Entrypoint and Command replace the image's when not nil.
	Entrypoint []string `json:"entrypoint,omitempty"`
	Command    []string `json:"command,omitempty"`
	Env        []string `json:"env,omitempty"` // K=V, env_file first, environment over it
	// Ports are published for the service as a whole, in run's -p
	// syntax, balanced across its replicas.
	Ports []string `json:"ports,omitempty"`
	// Network is the project network the service is on (its name in
	// the file); Aliases more names it answers to there.
	Network    string       `json:"network"`
	Aliases    []string     `json:"aliases,omitempty"`
	DependsOn  []Dependency `json:"depends_on,omitempty"`
	Health     *Health      `json:"health,omitempty"`
	Restart    string       `json:"restart,omitempty"` // no, always, on-failure[:N], unless-stopped
	Replicas   int          `json:"replicas"`
	Memory     int64        `json:"memory,omitempty"`
	CPUs       float64      `json:"cpus,omitempty"`
	Pids       int64        `json:"pids,omitempty"`
	Volumes    []string     `json:"volumes,omitempty"` // HOST:PATH[:ro], HOST absolute
	User       string       `json:"user,omitempty"`
	WorkingDir string       `json:"working_dir,omitempty"`
	Hostname   string       `json:"hostname,omitempty"`
	ReadOnly   bool         `json:"read_only,omitempty"`
	Init       bool         `json:"init,omitempty"`
}

// Dependency is one depends_on entry.
type Dependency struct {
	Service string `json:"service"`
	// Condition is service_started, service_healthy or
	// service_completed_successfully.
	Condition string `json:"condition"`
}

// Health is a service's healthcheck.
type Health struct {
	Test        []string      `json:"test"` // CMD ... or CMD-SHELL cmd, or NONE
	Interval    time.Duration `json:"interval,omitempty"`
	Timeout     time.Duration `json:"timeout,omitempty"`
	StartPeriod time.Duration `json:"start_period,omitempty"`
	Retries     int           `json:"retries,omitempty"`
	Disable     bool          `json:"disable,omitempty"`
}

// Hash is the hash of what a replica is made from: a replica whose
// LabelHash differs is out of date and is replaced by a rolling update.
// The replica count is not part of it.
func (s Service) Hash() string {
	c := s
	c.Replicas = 0
	b, _ := json.Marshal(c)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

// Service returns the project's service called name.
func (p *Project) Service(name string) (*Service, bool) {
	for i := range p.Services {
		if p.Services[i].Name == name {
			return &p.Services[i], true
		}
	}
	return nil, false
}

// NetworkName is the berth network of the project's network called net.
func (p *Project) NetworkName(net string) string { return p.Name + "_" + net }

// ReplicaName is the instance name of a service's replica n (from 1).
func (p *Project) ReplicaName(svc string, n int) string {
	return fmt.Sprintf("%s-%s-%d", p.Name, svc, n)
}
