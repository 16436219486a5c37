package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/tty"
)

// workloadCgroup is the cgroup, in the guest's own cgroup2 hierarchy,
// that the workload and every Exec process run in.
const workloadCgroup = "/berth"

// guest is the agent.Handler of berth-agent.
type guest struct {
	reaper *reaper

	mu      sync.Mutex
	ran     bool // Run was asked for (once per guest)
	ready   bool // the root is set up
	cg      cgroups.Manager
	cgFD    int
	running map[int]bool // pids of started processes
}

func newGuest() *guest {
	return &guest{reaper: &reaper{waiters: map[int]chan syscall.WaitStatus{}}, cgFD: -1, running: map[int]bool{}}
}

// Start implements agent.Handler.
func (g *guest) Start(kind agent.Kind, p *agent.Process) (agent.Task, error) {
	g.mu.Lock()
	if kind == agent.KindRun {
		if g.ran {
			g.mu.Unlock()
			return nil, &agent.StartError{Code: 125, Msg: "this guest already runs its workload; use exec"}
		}
		g.ran = true
		if err := g.prepare(p); err != nil {
			g.mu.Unlock()
			return nil, &agent.StartError{Code: 125, Msg: "guest: " + err.Error()}
		}
		g.ready = true
	} else if !g.ready {
		g.mu.Unlock()
		return nil, &agent.StartError{Code: 125, Msg: "guest: exec before the workload started"}
	}
	cg, cgFD := g.cg, g.cgFD
	g.mu.Unlock()
	return g.spawn(kind, p, cg, cgFD)
}

// prepare sets up the root and the workload cgroup for Run.
func (g *guest) prepare(p *agent.Process) error {
	if err := setupRoot(p); err != nil {
		return err
	}
	var r cgroups.Resources
	if p.Resources != nil {
		r = cgroups.Resources{
			Memory:    p.Resources.MemoryBytes,
			CPUQuota:  p.Resources.CPUQuota,
			CPUPeriod: p.Resources.CPUPeriod,
			Pids:      p.Resources.PidsMax,
		}
	}
	cg, err := cgroups.NewV2("/sys/fs/cgroup", workloadCgroup)
	if err != nil {
		return err
	}
	if err := cg.Create(r); err != nil {
		return err
	}
	fd, _, err := cg.FD()
	if err != nil {
		return err
	}
	g.cg, g.cgFD = cg, fd
	return nil
}

// shimConfig is what the exec stage (shim_linux.go) needs to start one
// process; it travels on a pipe.
type shimConfig struct {
	Args    []string       `json:"args"`
	Env     []string       `json:"env"`
	Cwd     string         `json:"cwd"`
	UID     uint32         `json:"uid"`
	GID     uint32         `json:"gid"`
	Groups  []uint32       `json:"groups"`
	Rlimits []agent.Rlimit `json:"rlimits"`
}

// spawn starts p through the exec stage, in the workload cgroup, with its
// stdio on pipes or a new terminal.
func (g *guest) spawn(kind agent.Kind, p *agent.Process, cg cgroups.Manager, cgFD int) (agent.Task, error) {
	t := &task{g: g, kind: kind, cg: cg}
	var child []*os.File
	defer func() {
		for _, f := range child {
			f.Close()
		}
	}()
	if p.Terminal {
		m, s, err := tty.Open()
		if err != nil {
			return nil, fmt.Errorf("terminal: %w", err)
		}
		if p.Rows != 0 || p.Cols != 0 {
			_ = unix.IoctlSetWinsize(int(m.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: p.Rows, Col: p.Cols})
		}
		t.master = m
		t.stdin, t.stdout = agent.PtyStdio(m)
		child = []*os.File{s, s, s}
	} else {
		inR, inW, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		outR, outW, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		errR, errW, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		t.stdin, t.stdout, t.stderr = inW, outR, errR
		child = []*os.File{inR, outW, errW}
	}
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errPR, errPW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer errPR.Close()
	child = append(child, cfgR, errPW)

	sys := &syscall.SysProcAttr{Setsid: true, Setctty: p.Terminal, Ctty: 0}
	if cgFD >= 0 {
		sys.UseCgroupFD, sys.CgroupFD = true, cgFD
	}
	var before uint64
	if cg != nil {
		if st, err := cg.Stats(); err == nil {
			before = st.OOMKills
		}
	}
	t.oomBefore = before
	proc, ch, err := g.reaper.start("/proc/self/exe", []string{shimArg0}, &os.ProcAttr{
		Dir:   "/",
		Env:   []string{},
		Files: child,
		Sys:   sys,
	})
	if err != nil {
		cfgW.Close()
		return nil, &agent.StartError{Code: 125, Msg: fmt.Sprintf("start %q: %v", p.Args[0], err)}
	}
	t.pid, t.exited = proc.Pid, ch
	_ = proc.Release()
	for _, f := range child {
		f.Close()
	}
	child = nil
	cwd := p.Cwd
	if cwd == "" {
		cwd = "/"
	}
	groups := p.AdditionalGids
	if groups == nil {
		groups = []uint32{}
	}
	_ = json.NewEncoder(cfgW).Encode(shimConfig{Args: p.Args, Env: p.Env, Cwd: cwd, UID: p.UID, GID: p.GID, Groups: groups, Rlimits: p.Rlimits})
	cfgW.Close()
	// The exec stage closes its end on a successful exec (close-on-exec)
	// or writes why it failed.
	msg, _ := io.ReadAll(errPR)
	if len(msg) > 0 {
		<-ch
		se := &agent.StartError{}
		if json.Unmarshal(msg, se) != nil || se.Code == 0 {
			se = &agent.StartError{Code: 125, Msg: string(msg)}
		}
		t.closeStdio()
		return nil, se
	}
	g.mu.Lock()
	g.running[t.pid] = true
	g.mu.Unlock()
	return t, nil
}

// Shutdown implements agent.Handler: it kills every process of the
// workload, unmounts what it can and syncs. The caller powers off.
func (g *guest) Shutdown() error {
	g.mu.Lock()
	cg := g.cg
	for pid := range g.running {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	g.mu.Unlock()
	if cg != nil {
		killCgroup()
	}
	unix.Sync()
	unmountAll()
	unix.Sync()
	return nil
}

// killCgroup kills every process left in the workload cgroup.
func killCgroup() {
	_ = os.WriteFile("/sys/fs/cgroup"+workloadCgroup+"/cgroup.kill", []byte("1"), 0)
}

// task is one process berth-agent started.
type task struct {
	g         *guest
	kind      agent.Kind
	cg        cgroups.Manager
	pid       int
	exited    chan syscall.WaitStatus
	oomBefore uint64
	master    *os.File
	stdin     io.WriteCloser
	stdout    io.ReadCloser
	stderr    io.ReadCloser
}

func (t *task) Pid() int { return t.pid }

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

// Wait waits for the process. When the workload (Run) ends, whatever it
// left behind in its cgroup is killed, as a container's pid namespace
// ends with its init; that also closes its output pipes.
func (t *task) Wait() (agent.ExitStatus, error) {
	ws := <-t.exited
	t.g.mu.Lock()
	delete(t.g.running, t.pid)
	t.g.mu.Unlock()
	st := agent.ExitStatusOf(ws)
	if t.cg != nil {
		if s, err := t.cg.Stats(); err == nil && s.OOMKills > t.oomBefore {
			st.OOMKilled = true
		}
		if t.kind == agent.KindRun {
			killCgroup()
		}
	}
	return st, nil
}

func (t *task) Signal(sig syscall.Signal) error {
	t.g.mu.Lock()
	defer t.g.mu.Unlock()
	if !t.g.running[t.pid] {
		return nil // already waited for; the pid may be reused
	}
	return unix.Kill(t.pid, sig)
}

func (t *task) Resize(rows, cols uint16) error {
	if t.master == nil {
		return nil
	}
	return unix.IoctlSetWinsize(int(t.master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
}

// reaper is PID 1's child reaping: it waits for every child, orphans
// included, and hands the statuses of the processes it started to their
// waiters. Starting holds the lock so a child cannot be reaped before its
// waiter is registered.
type reaper struct {
	mu      sync.Mutex
	waiters map[int]chan syscall.WaitStatus
}

func (r *reaper) start(path string, args []string, attr *os.ProcAttr) (*os.Process, chan syscall.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := os.StartProcess(path, args, attr)
	if err != nil {
		return nil, nil, err
	}
	ch := make(chan syscall.WaitStatus, 1)
	r.waiters[p.Pid] = ch
	return p, ch, nil
}

func (r *reaper) loop() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGCHLD)
	for range sigs {
		r.reap()
	}
}

func (r *reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if ch, ok := r.waiters[pid]; ok {
			ch <- ws
			delete(r.waiters, pid)
		}
	}
}
