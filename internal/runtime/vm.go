package runtime

// VM isolation: a bundle whose isolation is "vm" (the io.berth.isolation
// annotation or --isolation=vm) runs in a guest of berth's VM engine
// (internal/vm) instead of a container. The pid `create` reports is a
// host process of berth-runtime's own, the VM owner (`berth-runtime
// __vm-owner DIR`), reparented to the caller's subreaper as a
// container's init is. It waits for start on start.sock, boots the guest
// and runs the workload in it, relays the signals it gets and the stdio it
// was given, and exits with the workload's status (128+N for signal N).
// QEMU dies with it (PDEATHSIG). A bundle that names a network namespace
// (dockerd's, containerd's CNI) has the owner and QEMU run there, and the
// guest takes over its eth0 (vm.Network). The owner, QEMU and virtiofsd live in
// the spec's cgroup, without limits (the guest enforces them). Besides
// the container's files, the state directory holds:
//
//	ROOT/ID/vm.json        what the owner boots: guest parts, disks, the guest's spec, work directory
//	ROOT/ID/running        made by the owner once the workload runs
//	ROOT/ID/qemu.json      QEMU's pid and start time, for delete
//	ROOT/ID/control.sock   the owner's control socket (internal/instance): signals, exec
//
// The guest's disks, QEMU's sockets and console live in a work directory
// under berth's data root (BERTH_ROOT, default /var/lib/berth), in
// vm/runtime/ID-XXXX, not under ROOT, which is usually a tmpfs: the
// scratch disk takes the workload's writes.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/tty"
	"github.com/berth-dev/berth/internal/vm"
)

// Hidden verbs of berth-runtime's binary (cmd/berth-runtime dispatches
// them before its flags are parsed).
const (
	// OwnerVerb is the VM owner: `berth-runtime __vm-owner DIR`.
	OwnerVerb = "__vm-owner"
	// ExecRelayVerb is an exec's host process: `berth-runtime __vm-exec SOCKET`.
	ExecRelayVerb = "__vm-exec"
)

// ownerMiB is the room the VM owner (a Go process of some 20 MiB) takes
// in the spec's cgroup beside QEMU.
const ownerMiB = 64

const (
	vmRecordFile  = "vm.json"
	vmRunningFile = "running"
	vmQEMUFile    = "qemu.json"
)

// vmRecord is what the owner boots (ROOT/ID/vm.json).
type vmRecord struct {
	ID     string      `json:"id"`
	Work   string      `json:"work"` // disks, QEMU's sockets and console
	Guest  vm.Guest    `json:"guest"`
	Layers []vm.Layer  `json:"layers"`
	Spec   *specs.Spec `json:"spec"`             // the guest's: mounts reduced to what a guest can take
	Cgroup string      `json:"cgroup,omitempty"` // the owner's (and QEMU's) cgroup on the host
}

// procRef names one process: a pid and its start time.
type procRef struct {
	Pid   int    `json:"pid"`
	Start uint64 `json:"start"`
}

// dataRoot is berth's data root, whose vm/ directory holds the guest
// caches (shared with `berth run --vm`) and the VMs' work directories.
func dataRoot() string {
	if r := os.Getenv("BERTH_ROOT"); r != "" {
		return r
	}
	return vm.DefaultDataRoot
}

// createVM is Create for VM isolation: it checks the guest's parts,
// builds the guest's disks from the bundle's root file system, and starts
// the owner, which waits for start. On failure nothing is left.
func (st *Store) createVM(o CreateOptions, bundle string, spec *specs.Spec) (_ *CreateResult, err error) {
	if spec.Process == nil || len(spec.Process.Args) == 0 {
		return nil, fmt.Errorf("bundle config: process.args is empty: %w", errdefs.ErrInvalid)
	}
	if spec.Root == nil || spec.Root.Path == "" {
		return nil, fmt.Errorf("bundle config: root.path is empty: %w", errdefs.ErrInvalid)
	}
	if spec.Process.Terminal && o.ConsoleSocket == "" && !o.KeepConsole {
		return nil, fmt.Errorf("process.terminal is set: --console-socket is required: %w", errdefs.ErrInvalid)
	}
	var cgroupsPath string
	if spec.Linux != nil {
		cgroupsPath = spec.Linux.CgroupsPath
	}
	cgroup, err := cgroupPath(o.ID, cgroupsPath)
	if err != nil {
		return nil, err
	}
	rootfs := spec.Root.Path
	if !filepath.IsAbs(rootfs) {
		rootfs = filepath.Join(bundle, rootfs)
	}
	spec.Root.Path = rootfs
	if fi, err := os.Stat(rootfs); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("bundle root %s: not a directory: %w", rootfs, errdefs.ErrInvalid)
	}
	droot := dataRoot()
	guest, err := vm.FindGuest("", droot)
	if err != nil {
		return nil, err
	}
	if _, err := exec.LookPath("mkfs.erofs"); err != nil {
		return nil, fmt.Errorf("mkfs.erofs not found (apt-get install erofs-utils): the guest's root disk is made with it: %w", errdefs.ErrUnavailable)
	}

	dir, lk, err := st.newDir(o.ID, spec)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	defer lk.Unlock()
	runs := filepath.Join(droot, "vm", "runtime")
	if err := os.MkdirAll(runs, 0o700); err != nil {
		return nil, fmt.Errorf("VM work directory: %w", unwrap(err))
	}
	work, err := os.MkdirTemp(runs, o.ID+"-")
	if err != nil {
		return nil, fmt.Errorf("VM work directory: %w", unwrap(err))
	}
	defer func() {
		if err != nil {
			os.RemoveAll(work)
		}
	}()
	rec, err := prepareGuest(o.ID, work, guest, spec)
	if err != nil {
		return nil, err
	}
	rec.Cgroup = cgroup
	if err := writeJSON(filepath.Join(dir, vmRecordFile), rec); err != nil {
		return nil, err
	}

	listener, err := listenStart(dir)
	if err != nil {
		return nil, err
	}
	defer listener.Close()
	// A nil file is /dev/null for the owner (os/exec opens it).
	stdio := []*os.File{o.Stdio.Stdin, o.Stdio.Stdout, o.Stdio.Stderr}
	var console *os.File
	if spec.Process.Terminal {
		var slave *os.File
		console, slave, err = hostTerminal(spec.Process.ConsoleSize)
		if err != nil {
			return nil, err
		}
		defer slave.Close()
		defer func() {
			if err != nil {
				console.Close()
			}
		}()
		stdio = []*os.File{slave, slave, slave}
	}
	pid, err := startOwner(dir, listener, stdio, spec.Process.Terminal, netnsPath(spec))
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			killWait(procRef{pid, instance.ProcStart(pid)})
			container.Cleanup(cgroup)
		}
	}()
	// The owner, and so QEMU and virtiofsd, live in the spec's cgroup,
	// bounded as berth run's QEMU is (vm.HostResources: guest RAM and
	// QEMU's overhead, room for the owner, a pids limit), not by the
	// spec's limits (those are the guest's: a host limit sized for the
	// workload would kill QEMU): the shim and dockerd find the VM's host
	// usage there, pause freezes the whole guest, and delete kills
	// whatever is left.
	cg, err := cgroups.New(cgroup)
	if err == nil {
		err = cg.Create(vm.HostResourcesOf(spec, guest.Accel, ownerMiB))
	}
	if err == nil {
		err = cg.Add(pid)
	}
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", cgroup, err)
	}
	s := &State{
		ID:          o.ID,
		Bundle:      bundle,
		Rootfs:      rootfs,
		Pid:         pid,
		PidStart:    instance.ProcStart(pid),
		Cgroup:      cgroup,
		Created:     time.Now().UTC(),
		Annotations: spec.Annotations,
		Isolation:   instance.IsolationVM,
		Status:      instance.Created,
		Owner:       "root",
	}
	if spec.Linux != nil {
		s.Resources = spec.Linux.Resources
	}
	if spec.Process.OOMScoreAdj != nil {
		adj := strconv.Itoa(*spec.Process.OOMScoreAdj)
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid), []byte(adj), 0); err != nil {
			return nil, fmt.Errorf("oom_score_adj %s: %w", adj, unwrap(err))
		}
	}
	if err := st.Save(s); err != nil {
		return nil, err
	}
	state := s.OCI()
	state.Status = specs.StateCreating
	for _, point := range []string{HookPrestart, HookCreateRuntime, HookCreateContainer} {
		if err := runHooks(spec, point, state); err != nil {
			return nil, err
		}
	}
	return finishCreate(o, s, console)
}

// hostTerminal opens a host pty for a VM workload's terminal. The guest
// has its own pty and line discipline, so the host's slave is raw: bytes
// pass through it unchanged.
func hostTerminal(size *specs.Box) (master, slave *os.File, err error) {
	master, slave, err = tty.Open()
	if err != nil {
		return nil, nil, err
	}
	if _, err := term.MakeRaw(int(slave.Fd())); err != nil {
		master.Close()
		slave.Close()
		return nil, nil, fmt.Errorf("terminal: raw mode: %w", err)
	}
	if size != nil && size.Height > 0 && size.Width > 0 {
		_ = unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: uint16(size.Height), Col: uint16(size.Width)})
	}
	return master, slave, nil
}

// netnsPath is the network namespace the spec names by path (dockerd's),
// or "".
func netnsPath(spec *specs.Spec) string {
	if spec.Linux == nil {
		return ""
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return ns.Path
		}
	}
	return ""
}

// startOwner starts the VM owner for state directory dir with stdio as
// its fds 0-2 (a terminal's slave becomes its controlling terminal, so
// resizes reach it as SIGWINCH), the sync pipe as fd 3 and the start
// listener as fd 4, and waits until it is ready. With netns it starts in
// that network namespace (entered on a thread of its own), so the pid
// names the container's network as a container's would.
func startOwner(dir string, listener *os.File, stdio []*os.File, terminal bool, netns string) (int, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	cmd := exec.Command("/proc/self/exe", OwnerVerb, dir)
	cmd.Args[0] = "berth-runtime"
	cmd.Dir = "/"
	setStdio(cmd, stdio)
	cmd.ExtraFiles = []*os.File{w, listener}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: terminal}
	err = startIn(cmd, netns)
	w.Close()
	if err != nil {
		return 0, fmt.Errorf("start the VM owner: %w", err)
	}
	line, _ := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimSpace(line)
	if line == "ready" {
		return cmd.Process.Pid, nil
	}
	cmd.Process.Kill()
	cmd.Wait()
	if msg, ok := strings.CutPrefix(line, "error "); ok {
		return 0, fmt.Errorf("VM owner: %s", msg)
	}
	return 0, fmt.Errorf("the VM owner exited at start: %w", errdefs.ErrUnavailable)
}

// setStdio makes stdio (nil for /dev/null) cmd's fds 0-2. They are
// assigned one by one: a nil *os.File in the interface would not be
// os/exec's nil.
func setStdio(cmd *exec.Cmd, stdio []*os.File) {
	if stdio[0] != nil {
		cmd.Stdin = stdio[0]
	}
	if stdio[1] != nil {
		cmd.Stdout = stdio[1]
	}
	if stdio[2] != nil {
		cmd.Stderr = stdio[2]
	}
}

// startIn starts cmd, in the network namespace at path netns if given.
// The thread that entered the namespace is never handed back to Go's
// scheduler: it ends with its goroutine.
func startIn(cmd *exec.Cmd, netns string) error {
	if netns == "" {
		return cmd.Start()
	}
	f, err := os.Open(netns)
	if err != nil {
		return fmt.Errorf("network namespace %s: %w", netns, unwrap(err))
	}
	defer f.Close()
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter network namespace %s: %w", netns, err)
			return
		}
		errc <- cmd.Start()
	}()
	return <-errc
}

// prepareGuest builds a VM's disks in work (vm.BundleDisks) and returns
// its record: the spec as the guest runs it, with the mounts the guest
// keeps.
func prepareGuest(id, work string, guest vm.Guest, spec *specs.Spec) (*vmRecord, error) {
	guest, layers, mounts, err := vm.BundleDisks(id, work, guest, spec.Root.Path, spec.Mounts)
	if err != nil {
		return nil, err
	}
	gspec := *spec
	gspec.Mounts = mounts
	return &vmRecord{ID: id, Work: work, Guest: guest, Layers: layers, Spec: &gspec}, nil
}

func loadVMRecord(dir string) (*vmRecord, error) {
	b, err := os.ReadFile(filepath.Join(dir, vmRecordFile))
	if err != nil {
		return nil, fmt.Errorf("VM record: %w", unwrap(err))
	}
	var rec vmRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("VM record %s: %w", dir, err)
	}
	if rec.Spec == nil || rec.Spec.Process == nil {
		return nil, fmt.Errorf("VM record %s: no process: %w", dir, errdefs.ErrInvalid)
	}
	return &rec, nil
}
