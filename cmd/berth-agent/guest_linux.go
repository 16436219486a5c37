package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/netif"
	"github.com/berth-dev/berth/internal/tty"
)

// workloadCgroup is the cgroup, in the guest's own cgroup2 hierarchy,
// that the workload and every Exec process run in.
const workloadCgroup = "/berth"

// guest is the agent.Handler of berth-agent.
type guest struct {
	reaper  *reaper
	modules *moduleSet // being inserted since boot

	// The workload cgroup is made, and the loopback brought up, at
	// boot while the host says hello; cgReady is closed once cg, sp,
	// cgErr and loErr are set.
	cgReady chan struct{}
	cgErr   error
	loErr   error

	// premounted is the root a template's guest mounted before it was
	// saved (kernel command line berth.root=); nil otherwise.
	premounted *agent.Root

	mu      sync.Mutex
	ran     bool // Run was asked for (once per guest)
	ready   bool // the root is set up
	cg      cgroups.Manager
	sp      *spawner
	running map[int]bool // pids of started processes
}

func newGuest() *guest {
	return &guest{reaper: &reaper{waiters: map[int]chan syscall.WaitStatus{}}, cgReady: make(chan struct{}), running: map[int]bool{}}
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
		tracef("run request")
		if err := g.prepare(p); err != nil {
			g.mu.Unlock()
			return nil, &agent.StartError{Code: 125, Msg: "guest: " + err.Error()}
		}
		g.ready = true
	} else if !g.ready {
		g.mu.Unlock()
		return nil, &agent.StartError{Code: 125, Msg: "guest: exec before the workload started"}
	}
	cg, sp := g.cg, g.sp
	g.mu.Unlock()
	return g.spawn(kind, p, cg, sp)
}

// prepareCgroups mounts the guest's cgroup2 file system and makes the
// workload cgroup, without limits yet, and the spawner's. /sys, and the
// cgroup2 mount on it, later move into the workload's root. It also
// brings the guest's loopback up (as a container's: up, and nothing
// else), which has nothing to wait for either.
func (g *guest) prepareCgroups() {
	defer close(g.cgReady)
	defer func() { g.loErr = netif.LoopbackUp() }()
	const mount = "/sys/fs/cgroup"
	if err := unix.Mount("cgroup2", mount, "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		g.cgErr = fmt.Errorf("mount cgroup2 on %s: %w", mount, err)
		return
	}
	cg, err := cgroups.NewV2(mount, workloadCgroup)
	if err == nil {
		err = cg.Create(cgroups.Resources{})
	}
	var sp *spawner
	if err == nil {
		sp, err = newSpawner(g.reaper, mount)
	}
	g.cg, g.sp, g.cgErr = cg, sp, err
	tracef("cgroups ready")
}

// prepare sets up the root and the workload cgroup's limits for Run.
func (g *guest) prepare(p *agent.Process) error {
	if g.premounted != nil && !sameRoot(g.premounted, p.Root) {
		// Not what the template mounted (it cannot be, short of a
		// host that names disks otherwise): start again from the disks.
		logf("the template mounted another root; mounting the request's")
		unmountPremounted(len(g.premounted.Layers))
		g.premounted = nil
	}
	if g.premounted != nil {
		// A clone of a template: its guest mounted the root's disks
		// before it was saved.
		if err := enterRoot(p, g.modules); err != nil {
			return err
		}
	} else if err := setupRoot(p, g.modules, g.mountScratch(p.Root)); err != nil {
		return err
	}
	tracef("root ready")
	<-g.cgReady
	if g.cgErr != nil {
		return g.cgErr
	}
	if g.loErr != nil {
		return g.loErr
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
	if err := g.cg.Update(r); err != nil {
		return err
	}
	tracef("cgroup limits set")
	return nil
}

// mountScratch mounts r's scratch disk (mountScratch) in the background
// and says when it is done. The scratch disk needs only virtio_blk (ext4
// is built in): it is mounted while the other modules go in, which is
// where the guest's CPU has time while the disk is read.
func (g *guest) mountScratch(r *agent.Root) <-chan error {
	scratch := make(chan error, 1)
	go func() {
		if r != nil && r.Scratch != "" {
			if err := g.modules.WaitFor("virtio_blk"); err != nil {
				scratch <- err
				return
			}
		}
		scratch <- mountScratch(r)
	}()
	return scratch
}

// premount mounts the root of a template's guest (the disks named on its
// kernel command line) before it is saved, so that its clones do not.
func (g *guest) premount(r *agent.Root) error {
	if err := mountRoot(r, g.modules, g.mountScratch(r)); err != nil {
		return fmt.Errorf("template root: %w", err)
	}
	g.premounted = r
	return nil
}

// sameRoot says whether two roots name the same disks.
func sameRoot(a, b *agent.Root) bool {
	return a != nil && b != nil && slices.Equal(a.Layers, b.Layers) && a.Scratch == b.Scratch
}

// spawn starts p in the workload cgroup, with its stdio on pipes or a
// new terminal.
func (g *guest) spawn(kind agent.Kind, p *agent.Process, cg cgroups.Manager, sp *spawner) (agent.Task, error) {
	if len(p.Args) == 0 {
		return nil, &agent.StartError{Code: 125, Msg: "no command"}
	}
	c := credOf(p)
	cwd := p.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if _, err := os.Stat(cwd); errors.Is(err, os.ErrNotExist) {
		_ = os.MkdirAll(cwd, 0o755) // as runc does for a missing working directory
	}
	path, code, err := lookPath(p.Args[0], p.Env, cwd, c)
	if err != nil {
		return nil, &agent.StartError{Code: code, Msg: err.Error()}
	}
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
	if cg != nil && kind != agent.KindRun { // none before the workload
		if n, err := oomKills(); err == nil {
			t.oomBefore = n
		}
	}
	env := p.Env
	if env == nil {
		env = []string{} // nil would pass on the agent's own
	}
	groups := p.AdditionalGids
	if groups == nil {
		groups = []uint32{}
	}
	proc, ch, err := sp.start(path, p, kind == agent.KindRun, &os.ProcAttr{
		Dir:   cwd,
		Env:   env,
		Files: child,
		Sys: &syscall.SysProcAttr{
			Setsid: true, Setctty: p.Terminal, Ctty: 0,
			Credential: &syscall.Credential{Uid: p.UID, Gid: p.GID, Groups: groups},
		},
	})
	if err != nil {
		t.closeStdio()
		return nil, err
	}
	t.pid, t.exited = proc.Pid, ch
	_ = proc.Release()
	g.mu.Lock()
	g.running[t.pid] = true
	g.mu.Unlock()
	tracef("process started")
	return t, nil
}

// Shutdown implements agent.Handler: it kills every process of the
// workload and flushes what the workload wrote to host directories
// (virtio-fs shares). The guest's own disks need nothing: the scratch
// disk goes with the VM, so the host may stop QEMU once Shutdown is
// acknowledged; the caller still unmounts and powers off.
func (g *guest) Shutdown() error {
	tracef("shutdown")
	g.mu.Lock()
	for pid := range g.running {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	g.mu.Unlock()
	killCgroup()
	syncShares()
	tracef("shutdown done")
	return nil
}

// syncShares flushes every virtio-fs file system to the host.
func syncShares() {
	ls, _ := lines("/proc/self/mountinfo")
	for _, l := range ls {
		// ID PARENT MAJ:MIN ROOT TARGET OPTIONS [TAGS...] - FSTYPE SOURCE SUPER
		_, after, ok := strings.Cut(l, " - ")
		f := strings.Fields(l)
		if !ok || len(f) < 5 || !strings.HasPrefix(after, "virtiofs ") {
			continue
		}
		if fd, err := unix.Open(unescapeMount(f[4]), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
			_ = unix.Syncfs(fd)
			unix.Close(fd)
		}
	}
}

// oomKills is the workload cgroup's count of OOM kills (memory.events'
// oom_kill): the one figure of cgroups.Manager.Stats the agent needs,
// read alone because each file read costs the guest time.
func oomKills() (uint64, error) {
	b, err := os.ReadFile("/sys/fs/cgroup" + workloadCgroup + "/memory.events")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "oom_kill "); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, nil
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
	tracef("process exited")
	t.g.mu.Lock()
	delete(t.g.running, t.pid)
	t.g.mu.Unlock()
	st := agent.ExitStatusOf(ws)
	if t.cg != nil {
		if n, err := oomKills(); err == nil && n > t.oomBefore {
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
