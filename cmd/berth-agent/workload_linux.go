package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
)

// The workload runs through berth's container engine (internal/container)
// on the guest's kernel, as a container runs on the host's: the spec the
// host built (agent.Process.Spec) with the assembled root as its root
// path, in new pid, mount, uts, ipc, network and cgroup namespaces, with
// the spec's capabilities, no_new_privs, seccomp filter, masked and
// read-only paths, rlimits, mounts and device rules (a BPF program on the
// workload cgroup). The engine's stages run from the agent's own binary
// (/init: main calls container.RunStage first). The agent stays outside:
// the workload cannot see, signal, trace or freeze it.

// ctrDir is the container engine's own directory for the workload.
const ctrDir = stageDir + "/ctr"

// sharesDir is where the guest mounts the host's shares (virtio-fs)
// before the engine binds them into the root.
const sharesDir = stageDir + "/shares"

// guestSpec is the spec the engine runs in the guest: p.Spec (or, for a
// host that sent none, one made from p's fields on berth's defaults) with
// the assembled root, the shares (mounted at srcs, by target) as its
// bind mounts' sources, and no namespace paths (they name the host's).
func guestSpec(p *agent.Process, srcs map[string]string) *specs.Spec {
	var s specs.Spec
	if p.Spec != nil {
		s = *p.Spec
	} else {
		s = *container.DefaultSpec(p.Hostname)
		s.Process = processSpec(s.Process, p)
		if r := p.Resources; r != nil {
			s.Linux.Resources = &specs.LinuxResources{}
			if r.MemoryBytes != 0 {
				s.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &r.MemoryBytes}
			}
			if r.CPUQuota != 0 {
				s.Linux.Resources.CPU = &specs.LinuxCPU{Quota: &r.CPUQuota, Period: &r.CPUPeriod}
			}
			if r.PidsMax != 0 {
				s.Linux.Resources.Pids = &specs.LinuxPids{Limit: &r.PidsMax}
			}
		}
	}
	ro := p.Root != nil && p.Root.ReadOnly
	if s.Root != nil {
		ro = ro || s.Root.Readonly
	}
	s.Root = &specs.Root{Path: newRoot, Readonly: ro}
	lin := *s.Linux
	lin.Namespaces = nil
	for _, ns := range s.Linux.Namespaces {
		ns.Path = ""
		lin.Namespaces = append(lin.Namespaces, ns)
	}
	lin.CgroupsPath = ""
	s.Linux = &lin
	// Hooks are the host's (berth-runtime runs them there); the guest
	// has none of their programs.
	s.Hooks = nil
	// A spec whose mounts the host took out (berth-runtime keeps only its
	// binds for a guest) gets berth's standard ones in front.
	var mounts []specs.Mount
	if !hasDest(s.Mounts, "/proc") {
		mounts = append(mounts, container.DefaultSpec("").Mounts...)
	}
	for _, m := range s.Mounts {
		if agent.IsBindMount(m) {
			src, ok := srcs[path.Clean(m.Destination)]
			if !ok {
				logf("mount %s: no share for it in the guest; left out", m.Destination)
				continue
			}
			m.Source = src
		}
		mounts = append(mounts, m)
	}
	s.Mounts = mounts
	return &s
}

func hasDest(ms []specs.Mount, dst string) bool {
	for _, m := range ms {
		if path.Clean(m.Destination) == dst {
			return true
		}
	}
	return false
}

// processSpec is base (the workload's process: capabilities,
// no_new_privs, ...) with p's command, environment, directory, user,
// terminal and rlimits.
func processSpec(base *specs.Process, p *agent.Process) *specs.Process {
	sp := specs.Process{}
	if base != nil {
		sp = *base
	}
	sp.Args, sp.Env, sp.Cwd = p.Args, p.Env, p.Cwd
	if sp.Cwd == "" {
		sp.Cwd = "/"
	}
	sp.User = specs.User{UID: p.UID, GID: p.GID, AdditionalGids: p.AdditionalGids}
	sp.Terminal = p.Terminal
	sp.ConsoleSize = nil
	if p.Terminal && (p.Rows != 0 || p.Cols != 0) {
		sp.ConsoleSize = &specs.Box{Height: uint(p.Rows), Width: uint(p.Cols)}
	}
	if len(p.Rlimits) > 0 {
		sp.Rlimits = nil
		for _, rl := range p.Rlimits {
			sp.Rlimits = append(sp.Rlimits, specs.POSIXRlimit{Type: rl.Type, Hard: rl.Hard, Soft: rl.Soft})
		}
	}
	return &sp
}

// mountShares mounts p's mounts (virtio-fs shares, disks) under
// sharesDir and returns their sources by target, for guestSpec.
func mountShares(p *agent.Process) (map[string]string, error) {
	srcs := map[string]string{}
	for i, m := range p.Mounts {
		if !path.IsAbs(m.Target) {
			return nil, fmt.Errorf("mount target %q must be an absolute path: %w", m.Target, errdefs.ErrInvalid)
		}
		dir := filepath.Join(sharesDir, strconv.Itoa(i))
		if err := mountAt(m, dir); err != nil {
			return nil, err
		}
		srcs[path.Clean(m.Target)] = dir
	}
	if len(p.Files) > 0 {
		if err := os.MkdirAll(filesDir, 0o700); err != nil {
			return nil, err
		}
	}
	for i, f := range p.Files {
		if !path.IsAbs(f.Target) {
			return nil, fmt.Errorf("file target %q must be an absolute path: %w", f.Target, errdefs.ErrInvalid)
		}
		name := filepath.Join(filesDir, strconv.Itoa(i))
		if err := os.WriteFile(name, f.Data, os.FileMode(f.Mode&0o7777)); err != nil {
			return nil, fmt.Errorf("file %s: %w", f.Target, err)
		}
		srcs[path.Clean(f.Target)] = name
	}
	return srcs, nil
}

// filesDir holds the copies of the host files the spec binds in
// (agent.File), in the agent's own root, out of the workload's view but
// for the binds.
const filesDir = stageDir + "/files"

// engineProc is what the engine started: the workload (a
// *container.Container) or an exec (*container.Process).
type engineProc interface {
	Pid() int
	Console() *os.File
	Wait() (container.Exit, error)
	Signal(syscall.Signal) error
}

// runWorkload starts the workload of p through the container engine in
// the workload cgroup.
func (g *guest) runWorkload(p *agent.Process, srcs map[string]string) (agent.Task, error) {
	spec := guestSpec(p, srcs)
	if spec.Process == nil || len(spec.Process.Args) == 0 {
		g.pre.Close()
		return nil, &agent.StartError{Code: 125, Msg: "no command"}
	}
	if err := os.MkdirAll(ctrDir, 0o700); err != nil {
		g.pre.Close()
		return nil, err
	}
	var (
		t     *task
		stdio container.Stdio
		err   error
	)
	pre := g.pre
	if pre != nil && !spec.Process.Terminal {
		t, stdio = g.preTask, g.preStdio // the init has them
	} else {
		if t, stdio, err = newTask(agent.KindRun, spec.Process.Terminal); err != nil {
			pre.Close()
			return nil, err
		}
	}
	keep := spec.Annotations[instance.AnnotationInit] == "true"
	restore := defaultUncaught()
	c, err := container.Run(context.Background(), &container.Config{
		ID: spec.Hostname, Spec: spec, Dir: ctrDir, CgroupPath: workloadCgroup, KeepInit: keep, Init: pre,
		CgroupMade: &g.cgMade, CreateHooks: netHook(p.Net),
	}, stdio)
	if pre != nil && stdio != g.preStdio {
		closeStdio(g.preStdio)
		g.preTask.closeStdio()
	}
	restore()
	closeStdio(stdio)
	if err != nil {
		t.closeStdio()
		return nil, startError(err)
	}
	g.mu.Lock()
	g.ctr, g.spec, g.keepInit = c, spec, keep
	g.mu.Unlock()
	t.attach(c)
	t.destroy = func() { _ = c.Destroy() }
	tracef("process started")
	return t, nil
}

// prestart starts the workload's init ahead of the run request, for
// berth's usual namespaces without a terminal (container.PrestartIn):
// the exec of the stage and its Go runtime's start, a third of a
// second under software emulation, are then part of a template.
func (g *guest) prestart() {
	if err := os.MkdirAll(ctrDir, 0o700); err != nil {
		return
	}
	t, stdio, err := newTask(agent.KindRun, false)
	if err != nil {
		return
	}
	// berth's default seccomp profile is compiled meanwhile; a request
	// with another has its own compiled.
	skel := container.DefaultSpec("")
	restore := defaultUncaught()
	g.pre = container.PrestartIn(skel, stdio, workloadCgroup)
	restore()
	g.preTask, g.preStdio = t, stdio
	tracef("workload init prestarted")
}

// premountInit has the prestarted init build the workload's root with
// berth's standard mounts (container.Init.Premount) in a template's
// guest, whose root is mounted: its clones then make only their own
// mounts. A spec that does not begin with those mounts gets an init of
// its own, as does any spec when this fails.
func (g *guest) premountInit() {
	if g.pre == nil {
		return
	}
	spec := container.DefaultSpec("")
	spec.Root = &specs.Root{Path: newRoot}
	restore := defaultUncaught()
	err := g.pre.Premount(spec, workloadCgroup)
	restore()
	if err != nil {
		logf("workload init: %v", err)
		return
	}
	tracef("workload init premounted")
}

// execWorkload starts p in the running workload's namespaces and cgroup.
func (g *guest) execWorkload(p *agent.Process) (agent.Task, error) {
	g.mu.Lock()
	c, spec, keep := g.ctr, g.spec, g.keepInit
	g.mu.Unlock()
	if c == nil {
		return nil, &agent.StartError{Code: 125, Msg: "guest: exec before the workload started"}
	}
	if len(p.Args) == 0 && p.OCI == nil {
		return nil, &agent.StartError{Code: 125, Msg: "no command"}
	}
	sp := p.OCI
	if sp == nil {
		sp = processSpec(spec.Process, p)
	}
	t, stdio, err := newTask(agent.KindExec, sp.Terminal)
	if err != nil {
		return nil, err
	}
	if n, err := oomKills(); err == nil {
		t.oomBefore = n
	}
	restore := defaultUncaught()
	proc, err := container.Exec(context.Background(), c.Pid(), keep, workloadCgroup, sp, stdio)
	restore()
	closeStdio(stdio)
	if err != nil {
		t.closeStdio()
		return nil, startError(err)
	}
	t.attach(proc)
	return t, nil
}

// startError gives the engine's error Docker's exit codes.
func startError(err error) error {
	var ee *container.ExecError
	if errors.As(err, &ee) {
		return &agent.StartError{Code: ee.Code, Msg: ee.Error()}
	}
	return &agent.StartError{Code: 125, Msg: err.Error()}
}

// newTask makes a task's stdio: pipes, or, with a terminal, none yet
// (the engine allocates the terminal in the container and hands over
// its master). It returns the child's ends, which the caller closes once
// the process started.
func newTask(kind agent.Kind, terminal bool) (*task, container.Stdio, error) {
	t := &task{kind: kind}
	if terminal {
		return t, container.Stdio{}, nil
	}
	var child container.Stdio
	var ends [3][2]*os.File
	for i := range ends {
		r, w, err := os.Pipe()
		if err != nil {
			for _, e := range ends[:i] {
				e[0].Close()
				e[1].Close()
			}
			return nil, child, err
		}
		ends[i] = [2]*os.File{r, w}
	}
	t.stdin, t.stdout, t.stderr = ends[0][1], ends[1][0], ends[2][0]
	child = container.Stdio{Stdin: ends[0][0], Stdout: ends[1][1], Stderr: ends[2][1]}
	return t, child, nil
}

func closeStdio(s container.Stdio) {
	for _, f := range []*os.File{s.Stdin, s.Stdout, s.Stderr} {
		if f != nil {
			f.Close()
		}
	}
}

// task is one process the agent started through the engine.
type task struct {
	kind      agent.Kind
	proc      engineProc
	destroy   func() // after the workload's end: kill what is left, remove the cgroup
	oomBefore uint64
	master    *os.File
	stdin     io.WriteCloser
	stdout    io.ReadCloser
	stderr    io.ReadCloser
}

// attach makes p the task's process, taking its terminal's master.
func (t *task) attach(p engineProc) {
	t.proc = p
	if m := p.Console(); m != nil {
		t.master = m
		t.stdin, t.stdout = agent.PtyStdio(m)
	}
}

func (t *task) Pid() int { return t.proc.Pid() }

func (t *task) Stdio() (io.WriteCloser, io.ReadCloser, io.ReadCloser) {
	if t.stderr == nil {
		return t.stdin, t.stdout, nil
	}
	return t.stdin, t.stdout, t.stderr
}

func (t *task) closeStdio() {
	for _, c := range []io.Closer{t.stdin, t.stdout, t.stderr} {
		if c != nil {
			c.Close()
		}
	}
}

// Wait waits for the process. When the workload ends the kernel ends its
// pid namespace; destroy kills whatever else is left in its cgroup.
func (t *task) Wait() (agent.ExitStatus, error) {
	e, err := t.proc.Wait()
	tracef("process exited")
	if err != nil {
		return agent.ExitStatus{}, err
	}
	st := agent.ExitStatus{Code: e.Code, Signal: e.Signal, OOMKilled: e.OOMKilled}
	if t.kind != agent.KindRun {
		if n, err := oomKills(); err == nil && n > t.oomBefore {
			st.OOMKilled = true
		}
	}
	if t.destroy != nil {
		t.destroy()
	}
	return st, nil
}

// Signal sends sig to the process; one that has ended is no error.
func (t *task) Signal(sig syscall.Signal) error {
	if err := t.proc.Signal(sig); err != nil && !errors.Is(err, errdefs.ErrConflict) {
		return err
	}
	return nil
}

func (t *task) Resize(rows, cols uint16) error {
	if t.master == nil {
		return nil
	}
	return unix.IoctlSetWinsize(int(t.master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
}

// prefetchMax bounds how much of the command prefetch reads ahead.
const prefetchMax = 8 << 20

// prefetch has the kernel start reading the command p will run (up to
// prefetchMax bytes) from its disk, so that the reading goes on while
// the engine starts, and the exec finds the pages in memory. The command
// is looked up lexically in the root; failures are ignored: the start
// itself reports them.
func prefetch(p *agent.Process) {
	args := p.Args
	env := p.Env
	if p.Spec != nil && p.Spec.Process != nil {
		args, env = p.Spec.Process.Args, p.Spec.Process.Env
	}
	if len(args) == 0 {
		return
	}
	cands := []string{args[0]}
	if !strings.Contains(args[0], "/") {
		cands = nil
		pathEnv := defaultPath
		for _, kv := range env {
			if v, ok := strings.CutPrefix(kv, "PATH="); ok {
				pathEnv = v
			}
		}
		for _, dir := range filepath.SplitList(pathEnv) {
			if path.IsAbs(dir) {
				cands = append(cands, path.Join(dir, args[0]))
			}
		}
	}
	go func() {
		root, err := unix.Open(newRoot, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return
		}
		defer unix.Close(root)
		for _, c := range cands {
			if prefetchFile(root, c) {
				return
			}
		}
	}()
}

// prefetchFile reads ahead the file at name in the root open at root,
// resolving symlinks inside it; only a regular file is opened for reading.
func prefetchFile(root int, name string) bool {
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT}
	fd, err := unix.Openat2(root, name, &how)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return false
	}
	rd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return false
	}
	defer unix.Close(rd)
	_ = unix.Fadvise(rd, 0, min(st.Size, prefetchMax), unix.FADV_WILLNEED)
	return true
}

// defaultPath is the PATH used to find a command when its env has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
