package runtime

// The OCI verbs on a VM (see vm.go for how one is made): status, start,
// kill, delete, ps and exec.

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

// vmStatus derives a VM's status: stopped when its owner is gone,
// paused after pause (its cgroup, QEMU with it, is frozen), running once
// the owner said the workload runs, created before.
func (st *Store) vmStatus(s *State) string {
	if !instance.Alive(s.Pid, s.PidStart) {
		return Stopped
	}
	if s.Paused {
		return Paused
	}
	if _, err := os.Stat(filepath.Join(st.Dir(s.ID), vmRunningFile)); err == nil {
		return Running
	}
	return Created
}

// vmOCI is State.OCI for a VM.
func (st *Store) vmOCI(s *State) specs.State {
	o := s.OCI()
	o.Status = specs.ContainerState(st.vmStatus(s))
	o.Pid = s.Pid
	if o.Status == specs.StateStopped {
		o.Pid = 0
	}
	return o
}

// StateOf is the OCI state of a container or VM.
func (st *Store) StateOf(s *State) specs.State {
	if st.IsVM(s.ID) {
		return st.vmOCI(s)
	}
	return s.OCI()
}

// StartVM releases a created VM (the OCI "start" operation): the owner
// boots the guest and starts the workload, and answers once it runs or
// why it could not. A workload that cannot be started (127: not found,
// 126: not executable) fails start with the guest's message.
func (st *Store) StartVM(id string) error {
	s, l, err := st.loadCreated(id, st.vmStatus)
	if err != nil {
		return err
	}
	defer l.Unlock()
	spec, err := st.Spec(id)
	if err != nil {
		return err
	}
	if err := runHooks(spec, HookStartContainer, st.vmOCI(s)); err != nil {
		return err
	}
	d, err := os.Open(st.Dir(id))
	if err != nil {
		return fmt.Errorf("container %s: %w", id, unwrap(err))
	}
	defer d.Close()
	conn, err := net.Dial("unix", startAddr(int(d.Fd())))
	if err != nil {
		return fmt.Errorf("container %s: reach the VM owner: %w", id, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("start\n")); err != nil {
		return fmt.Errorf("container %s: start: %w", id, err)
	}
	line, _ := bufio.NewReader(conn).ReadString('\n')
	line = strings.TrimSpace(line)
	os.Remove(filepath.Join(st.Dir(id), "start.sock"))
	if line != "ok" {
		if msg, ok := strings.CutPrefix(line, "error "); ok {
			return errors.New(msg)
		}
		return fmt.Errorf("container %s: the VM owner exited while starting the guest: %w", id, errdefs.ErrUnavailable)
	}
	s.Started = true
	if err := st.Save(s); err != nil {
		return err
	}
	return runHooks(spec, HookPoststart, st.vmOCI(s))
}

// KillVM sends sig to the VM's owner, which relays it to the workload in
// the guest; SIGKILL kills the owner and with it QEMU.
func (st *Store) KillVM(id string, sig syscall.Signal) error {
	s, err := st.Load(id)
	if err != nil {
		return err
	}
	status := st.vmStatus(s)
	if status == Stopped {
		return fmt.Errorf("container %s is not running: %w", id, errdefs.ErrConflict)
	}
	if err := unix.Kill(s.Pid, sig); err != nil {
		return fmt.Errorf("container %s: kill %d: %w", id, s.Pid, err)
	}
	if status == Paused && (sig == unix.SIGKILL || sig == unix.SIGTERM) && s.Cgroup != "" {
		// A frozen owner only acts on the signal once thawed.
		if cg, err := cgroups.New(s.Cgroup); err == nil {
			cg.Thaw()
		}
	}
	return nil
}

// DeleteVM removes a VM (the OCI "delete" operation): a running one only
// with force. It kills the owner and QEMU, waits until both are gone,
// runs the poststop hooks and removes the state and work directories.
func (st *Store) DeleteVM(id string, force bool) error {
	l, s, err := st.lockForDelete(id, force)
	if err != nil || l == nil {
		return err
	}
	defer l.Unlock()
	dir := st.Dir(id)
	if status := st.vmStatus(s); (status == Running || status == Paused) && !force {
		return fmt.Errorf("container %s is %s: stop it first or use --force: %w", id, status, errdefs.ErrConflict)
	}
	if s.Cgroup != "" && s.Paused {
		if cg, err := cgroups.New(s.Cgroup); err == nil {
			cg.Thaw()
		}
	}
	if err := killWait(procRef{s.Pid, s.PidStart}); err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	var q procRef
	if b, err := os.ReadFile(filepath.Join(dir, vmQEMUFile)); err == nil && json.Unmarshal(b, &q) == nil {
		if err := killWait(q); err != nil {
			return fmt.Errorf("container %s: qemu: %w", id, err)
		}
	}
	if s.Cgroup != "" {
		if err := container.Cleanup(s.Cgroup); err != nil {
			return fmt.Errorf("container %s: %w", id, err)
		}
	}
	var hookErr error
	if spec, err := st.Spec(id); err == nil {
		state := st.vmOCI(s)
		state.Status = specs.StateStopped
		state.Pid = 0
		hookErr = runHooks(spec, HookPoststop, state)
	}
	if rec, err := loadVMRecord(dir); err == nil && rec.Work != "" {
		if err := os.RemoveAll(rec.Work); err != nil {
			return fmt.Errorf("container %s: remove the VM's disks: %w", id, unwrap(err))
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("container %s: remove state: %w", id, unwrap(err))
	}
	return hookErr
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

// PidsVM lists a VM's host processes: its owner (the guest's processes
// are not host processes).
func (st *Store) PidsVM(id string) ([]int, error) {
	s, err := st.Load(id)
	if err != nil {
		return nil, err
	}
	if st.vmStatus(s) == Stopped {
		return []int{}, nil
	}
	return []int{s.Pid}, nil
}

// ExecOptions are how an exec's process is run in a VM.
type ExecOptions struct {
	Detach        bool
	PidFile       string
	ConsoleSocket string
}

// ExecVM runs p in a running VM. Its host process is a relay
// (`berth-runtime __vm-exec`, a child of the caller) whose stdio are the
// caller's (or a terminal's slave whose master goes to the console
// socket) and whose exit status is the guest process's; its pid goes to
// the pid file. With Detach ExecVM returns once the relay runs (the
// caller, a subreaper, waits for it); otherwise it waits and returns the
// process's exit code.
func (st *Store) ExecVM(ctx context.Context, id string, p *specs.Process, o ExecOptions) (int, error) {
	s, err := st.Load(id)
	if err != nil {
		return 125, err
	}
	if status := st.vmStatus(s); status != Running {
		return 125, fmt.Errorf("container %s is %s: cannot exec: %w", id, status, errdefs.ErrConflict)
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
	cmd := exec.CommandContext(ctx, "/proc/self/exe", ExecRelayVerb, instance.ControlSocket(st.Dir(id)))
	cmd.Args[0] = "berth-runtime"
	cmd.Dir = "/"
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
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
		return 125, fmt.Errorf("container %s: start the exec relay: %w", id, err)
	}
	r.Close()
	if _, err := w.Write(b); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return 125, fmt.Errorf("container %s: exec relay: %w", id, err)
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
