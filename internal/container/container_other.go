//go:build !linux

package container

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// Containers are Linux only; elsewhere every entry point says so.

var errNotLinux = fmt.Errorf("containers need Linux: %w", errdefs.ErrNotSupported)

func runInitStage() { os.Exit(125) }
func runExecStage() { os.Exit(125) }

// Container is a created container (Linux only).
type Container struct{}

// Process is a process started by Exec (Linux only).
type Process struct{}

// Init is a prestarted init (Linux only).
type Init struct{}

func Prestart(*specs.Spec, Stdio) *Init           { return nil }
func PrestartIn(*specs.Spec, Stdio, string) *Init { return nil }
func (in *Init) Close()                           {}
func (in *Init) Settle(time.Duration)             {}

func Create(context.Context, *Config, Stdio) (*Container, error) { return nil, errNotLinux }
func Run(context.Context, *Config, Stdio) (*Container, error)    { return nil, errNotLinux }
func (c *Container) Start() error                                { return errNotLinux }
func (c *Container) Pid() int                                    { return 0 }
func (c *Container) Console() *os.File                           { return nil }
func (c *Container) Wait() (Exit, error)                         { return Exit{}, errNotLinux }
func (c *Container) Signal(syscall.Signal) error                 { return errNotLinux }
func (c *Container) Destroy() error                              { return nil }
func Cleanup(string) error                                       { return errNotLinux }
func DefaultSpec(id string) *specs.Spec                          { return &specs.Spec{Hostname: id} }
func Exec(context.Context, int, bool, string, *specs.Process, Stdio) (*Process, error) {
	return nil, errNotLinux
}
func ExecWithSeccomp(context.Context, int, string, *specs.Process, *specs.LinuxSeccomp, Stdio) (*Process, error) {
	return nil, errNotLinux
}
func (p *Process) Pid() int                    { return 0 }
func (p *Process) Console() *os.File           { return nil }
func (p *Process) Wait() (Exit, error)         { return Exit{}, errNotLinux }
func (p *Process) Signal(syscall.Signal) error { return errNotLinux }

func (c *Container) Detach(*os.File) error { return errNotLinux }
func StartDetached(string, []byte) error   { return errNotLinux }

// ResourcesOf converts OCI resources to the cgroup managers' limits.
func ResourcesOf(*specs.LinuxResources, []specs.LinuxDevice) cgroups.Resources {
	return cgroups.Resources{}
}
