package runtime

// The OCI verbs' part that is a VM's own (see backend in ops.go; vm.go
// makes one).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// vmBackend runs a VM; dir is its state directory.
type vmBackend struct{ dir string }

// started: the owner said the workload runs.
func (v vmBackend) started(*State) bool {
	_, err := os.Stat(filepath.Join(v.dir, vmRunningFile))
	return err == nil
}

// start runs the startContainer hooks, then has the owner boot the guest
// and start the workload; it answers once it runs or why it could not. A
// workload that cannot be started (127: not found, 126: not executable)
// fails start with the guest's message.
func (vmBackend) start(s *State, spec *specs.Spec, addr string) error {
	if err := runHooks(spec, HookStartContainer, s.OCI()); err != nil {
		return err
	}
	conn, err := net.Dial("unix", addr)
	if err != nil {
		return fmt.Errorf("container %s: reach the VM owner: %w", s.ID, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("start\n")); err != nil {
		return fmt.Errorf("container %s: start: %w", s.ID, err)
	}
	line, _ := bufio.NewReader(conn).ReadString('\n')
	line = strings.TrimSpace(line)
	if line != "ok" {
		if msg, ok := strings.CutPrefix(line, "error "); ok {
			return errors.New(msg)
		}
		return fmt.Errorf("container %s: the VM owner exited while starting the guest: %w", s.ID, errdefs.ErrUnavailable)
	}
	return nil
}

// kill signals the owner, which relays the signal to the workload in the
// guest (SIGKILL kills the owner and with it QEMU). all reaches nothing
// more: the guest's processes are not the host's.
func (vmBackend) kill(s *State, sig syscall.Signal, _ bool) error {
	return signalPid(s, sig)
}

// destroy kills the owner and QEMU, waits until both are gone, empties
// and removes the cgroup and removes the guest's work directory.
func (v vmBackend) destroy(s *State) error {
	if s.Cgroup != "" {
		cgroups.SetFrozen(s.Cgroup, false) // a frozen owner cannot die
	}
	if err := killWait(procRef{s.Pid, s.PidStart}); err != nil {
		return err
	}
	var q procRef
	if b, err := os.ReadFile(filepath.Join(v.dir, vmQEMUFile)); err == nil && json.Unmarshal(b, &q) == nil {
		if err := killWait(q); err != nil {
			return fmt.Errorf("qemu: %w", err)
		}
	}
	if s.Cgroup != "" {
		if err := container.Cleanup(s.Cgroup); err != nil {
			return err
		}
	}
	if rec, err := loadVMRecord(v.dir); err == nil && rec.Work != "" {
		if err := os.RemoveAll(rec.Work); err != nil {
			return fmt.Errorf("remove the VM's disks: %w", unwrap(err))
		}
	}
	return nil
}

// killWait kills the process p names and waits (up to 30 s) until it is
// gone (a zombie counts as gone: its parent reaps it).
func killWait(p procRef) error {
	if !instance.Alive(p.Pid, p.Start) {
		return nil
	}
	unix.Kill(p.Pid, unix.SIGKILL)
	for deadline := time.Now().Add(30 * time.Second); instance.Alive(p.Pid, p.Start); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d survived SIGKILL for 30 s", p.Pid)
		}
	}
	return nil
}

// pids: the owner (the guest's processes are not host processes).
func (vmBackend) pids(s *State) ([]int, error) {
	return []int{s.Pid}, nil
}

// update is not supported: the limits are the guest's.
func (vmBackend) update(s *State, _ *specs.LinuxResources) error {
	return fmt.Errorf("container %s: update is not supported for VM isolation: %w", s.ID, errdefs.ErrNotSupported)
}

// exec runs p in a running VM. Its host process is a relay
// (`berth-runtime __vm-exec`, a child of the caller) whose stdio are
// o.Stdio (or a terminal's slave whose master goes to the console
// socket) and whose exit status is the guest process's; its pid goes to
// the pid file.
func (v vmBackend) exec(ctx context.Context, s *State, p *specs.Process, o ExecOptions) (int, error) {
	if err := s.need("exec", instance.Running); err != nil {
		return 125, err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return 125, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return 125, err
	}
	defer r.Close()
	defer w.Close()
	cmd := exec.CommandContext(ctx, "/proc/self/exe", ExecRelayVerb, instance.ControlSocket(v.dir))
	cmd.Args[0] = "berth-runtime"
	cmd.Dir = "/"
	setStdio(cmd, []*os.File{o.Stdio.Stdin, o.Stdio.Stdout, o.Stdio.Stderr})
	cmd.ExtraFiles = []*os.File{r}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if p.Terminal && o.ConsoleSocket != "" {
		master, slave, err := hostTerminal(p.ConsoleSize)
		if err != nil {
			return 125, err
		}
		defer master.Close()
		defer slave.Close()
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		cmd.SysProcAttr.Setctty = true
		if err := SendConsole(o.ConsoleSocket, master); err != nil {
			return 125, err
		}
	}
	if err := cmd.Start(); err != nil {
		return 125, fmt.Errorf("container %s: start the exec relay: %w", s.ID, err)
	}
	r.Close()
	if _, err := w.Write(b); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return 125, fmt.Errorf("container %s: exec relay: %w", s.ID, err)
	}
	w.Close()
	if err := WritePidFile(o.PidFile, cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return 125, err
	}
	if o.Detach {
		return 0, nil
	}
	cmd.Wait()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ws.ExitStatus(), nil
}
