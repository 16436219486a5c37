package runtime

// The OCI verbs' part that is a container's own (see backend in ops.go;
// create.go makes one).

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// containerBackend runs a container; dir is its state directory.
type containerBackend struct{ dir string }

// started: the init is no longer waiting for start.
func (containerBackend) started(s *State) bool { return !awaitingStart(s.Pid) }

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

// start sends the start message with the state to the init, which runs
// the startContainer hooks in the container and execve's the workload.
func (containerBackend) start(s *State, _ *specs.Spec, addr string) error {
	state, err := json.Marshal(s.OCI())
	if err != nil {
		return err
	}
	return container.StartDetached(addr, state)
}

func (containerBackend) kill(s *State, sig syscall.Signal, all bool) error {
	if !all {
		return signalPid(s, sig)
	}
	cg, err := cgroups.New(s.Cgroup)
	if err != nil {
		return err
	}
	pids, err := cg.Pids()
	if err != nil {
		return err
	}
	for _, p := range pids {
		unix.Kill(p, sig)
	}
	return nil
}

// destroy kills the container's process and everything in its cgroup
// and waits for the cgroup to empty.
func (containerBackend) destroy(s *State) error {
	if instance.Alive(s.Pid, s.PidStart) {
		unix.Kill(s.Pid, syscall.SIGKILL)
	}
	return container.Cleanup(s.Cgroup)
}

// pids: every process in the container's cgroup.
func (containerBackend) pids(s *State) ([]int, error) {
	cg, err := cgroups.New(s.Cgroup)
	if err != nil {
		return nil, err
	}
	pids, err := cg.Pids()
	if pids == nil {
		pids = []int{}
	}
	return pids, err
}

// exec starts p in the container with the container's own seccomp
// profile; a terminal's master goes to the console socket or is relayed
// to the caller's stdio.
func (b containerBackend) exec(ctx context.Context, s *State, p *specs.Process, o ExecOptions) (int, error) {
	spec, err := loadSpec(filepath.Join(b.dir, "config.json"))
	if err != nil {
		return 125, err
	}
	var seccomp *specs.LinuxSeccomp
	if spec.Linux != nil {
		seccomp = spec.Linux.Seccomp
	}
	proc, err := container.ExecWithSeccomp(ctx, s.Pid, s.Cgroup, p, seccomp, o.Stdio)
	if err != nil {
		return 125, err
	}
	var stopCopy func()
	if cons := proc.Console(); cons != nil {
		if o.ConsoleSocket != "" {
			err := SendConsole(o.ConsoleSocket, cons)
			cons.Close()
			if err != nil {
				proc.Signal(unix.SIGKILL)
				return 125, err
			}
		} else {
			stopCopy = CopyTerminal(cons, o.Stdio)
		}
	}
	if err := WritePidFile(o.PidFile, proc.Pid()); err != nil {
		proc.Signal(unix.SIGKILL)
		return 125, err
	}
	if o.Detach {
		return 0, nil
	}
	exit, err := proc.Wait()
	if stopCopy != nil {
		stopCopy()
	}
	if err != nil {
		return 125, err
	}
	return exit.Code, nil
}

// update applies the merged limits to the cgroup, and what the engine
// does not drive (cpuset, real-time, memory extras) from r again.
func (b containerBackend) update(s *State, r *specs.LinuxResources) error {
	merged := mergeResources(s.Resources, r)
	cg, err := cgroups.New(s.Cgroup)
	if err != nil {
		return err
	}
	var devices []specs.LinuxDevice // what the device rules allow besides
	if spec, err := loadSpec(filepath.Join(b.dir, "config.json")); err == nil && spec.Linux != nil {
		devices = spec.Linux.Devices
	}
	if err := cg.Update(container.ResourcesOf(merged, devices)); err != nil {
		return err
	}
	if err := applyExtraResources(s.Cgroup, r); err != nil {
		return err
	}
	s.Resources = merged
	return nil
}
