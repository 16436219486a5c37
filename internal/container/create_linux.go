package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"syscall"

	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// reexecPath is the binary a stage is started from when there is no
// berth-init (binary_linux.go): the running binary (berth itself, or a
// test binary whose TestMain calls RunStage), through the magic link
// rather than a path on disk.
var reexecPath = "/proc/self/exe"

// stageEnv is the environment of a stage (the workload's own comes from
// the spec). Two Ps while the init sets up (on one, the threads the
// setup uses, the runtime's signal thread among them, wait for each
// other: 1.5 ms more per start here); the init drops to one once the
// workload runs, for the rest of the container's life: fewer threads
// and caches, less memory per container.
//
// A stage's stderr is the workload's: were the stage to crash, a line
// or two ("fatal error: ...", the signal) would go there, not its
// goroutines and registers (GOTRACEBACK=none, from the runtime's start).
var stageEnv = []string{"GOMAXPROCS=2", "GOTRACEBACK=none"}

// Container is a created container as seen from the process that created
// it (the CLI in the foreground, the monitor when detached). Its init is
// that process's child.
type Container struct {
	cfg  *Config
	cmd  *exec.Cmd
	sock *os.File
	ch   *channel
	cg   cgroups.Manager

	mu        sync.Mutex
	started   bool // Start was called
	waiting   bool // the wait loop owns the socket
	destroyed bool

	filter  chan compiled // the workload's seccomp program, compiled during Create
	atOnce  bool          // the init starts the workload without "start" (Run)
	becomes bool          // the init execve's the workload (no KeepInit): its status is the workload's
	console *os.File      // the terminal's master, with Process.Terminal

	waitOnce sync.Once
	ended    chan struct{} // closed once exit and waitErr are known
	done     chan struct{} // closed once the init is reaped
	exit     Exit
	waitErr  error
}

// Run creates and starts a container (Create then Start). When Start
// fails the container is destroyed (and its terminal closed) before Run
// returns.
func Run(ctx context.Context, cfg *Config, stdio Stdio) (*Container, error) {
	c, err := create(ctx, cfg, stdio, true)
	if err != nil {
		return nil, err
	}
	if err := c.Start(); err != nil {
		c.Destroy()
		if c.console != nil {
			c.console.Close()
		}
		return nil, err
	}
	return c, nil
}

// Console is the master of the workload's terminal when
// Spec.Process.Terminal is set, nil otherwise. The terminal is allocated
// inside the container (the workload sees /dev/pts/N of the container's
// devpts, bound on /dev/console too) and sized by Process.ConsoleSize
// before the workload starts; resizing the master later (TIOCSWINSZ)
// signals the workload SIGWINCH. Reads end with an error (EIO) once the
// workload and everything holding the slave has ended. The caller owns
// the file and closes it; Destroy does not.
func (c *Container) Console() *os.File { return c.console }

// Create builds the container up to the point where only the workload is
// missing (steps 1-4 of docs/design.md): the cgroup exists with its
// limits, the init runs as PID 1 of the new namespaces with the root file
// system, mounts, hostname and rlimits in place, and waits for Start.
// With Spec.Process.Terminal the workload's stdio is a terminal of the
// container (stdio is not used): see Console.
// When Create fails it has undone everything: no cgroup, no process and no
// mount is left, and the error is one line naming what was wrong.
func Create(ctx context.Context, cfg *Config, stdio Stdio) (*Container, error) {
	return create(ctx, cfg, stdio, false)
}

// create is Create; with run, when nothing needs the parent between the
// init's setup and the workload's start (no create hooks, the init born
// in its cgroup or joining it itself) and the seccomp program is ready
// when the configuration is sent, the init starts the workload as soon
// as it is ready, sparing a round trip; Start then only waits for it.
func create(ctx context.Context, cfg *Config, stdio Stdio, run bool) (_ *Container, err error) {
	icfg, joins, flags, err := prepare(cfg)
	if err != nil {
		return nil, err
	}
	var undo cleanup
	defer func() {
		if err != nil {
			undo.run()
		}
	}()
	trace("create")
	filter := cfg.Init.filterFor(cfg.Spec.Linux.Seccomp)
	if filter == nil {
		filter = compileAsync(cfg.Spec.Linux.Seccomp)
	}

	// Where the init is. v2: born in the cgroup (clone3's
	// CLONE_INTO_CGROUP), or, for a hand-made fork (a user namespace to
	// join), added after. v1: never in it. The thread of the init that
	// forks or execs the workload joins the cgroup alone, through the
	// tasks files sent with the configuration, just before (and leaves
	// it again just after forking): moving one thread of one's own
	// spares the RCU grace period (7 to 20 ms here) that moving a whole
	// process waits for, the cgroup is made while the init starts (or,
	// prestarted, while the caller did its own work), and the init's
	// threads never count against the container's pids limit. On v2
	// under a pids limit the same thread joins, alone, the threaded
	// cgroup below that holds the limit (cgroups.ThreadFiles), for the
	// same reason: the init's threads stay out of it.
	v2 := cgroups.DetectMode() == cgroups.ModeV2
	rawFork := len(joins) > 0 && joins[0].flag == unix.CLONE_NEWUSER
	cmd, parent, prestarted := cfg.Init.take(icfg, joins, flags, cfg.Spec, v2)
	if prestarted {
		trace("prestarted init taken")
		undo.add(func() {
			cmd.Process.Kill()
			cmd.Wait()
			parent.Close()
		})
	}

	cg, err := cgroups.New(cfg.CgroupPath)
	if err != nil {
		return nil, err
	}
	// An init that stays keeps a place under the pids limit.
	initSlot := cfg.KeepInit
	// The cgroup is made, with its limits, while the init starts; with a
	// prestarted init there is nothing to wait for meanwhile.
	cgMade := make(chan error, 1)
	res := cgroupResources(cfg.Spec, initSlot)
	switch {
	case cfg.CgroupMade != nil && reflect.DeepEqual(*cfg.CgroupMade, res):
		cgMade <- nil
	case prestarted:
		cgMade <- cg.Create(res)
	default:
		go func() { cgMade <- cg.Create(res) }()
	}
	undo.add(func() { cg.Destroy() })
	waitCgroup := func() error {
		if cgMade == nil {
			return nil
		}
		err := <-cgMade
		cgMade = nil
		if err != nil {
			return err
		}
		return nil
	}
	defer waitCgroup() // never leave the goroutine racing a Destroy

	if !prestarted {
		cgfd := -1
		if v2 && !rawFork {
			if err := waitCgroup(); err != nil {
				return nil, err
			}
			if cgfd, _, err = cg.FD(); err != nil {
				return nil, err
			}
			defer unix.Close(cgfd)
		}
		if cmd, parent, err = launchInit(icfg.HostMount, joins, flags, cfg.Spec, stdio, cgfd); err != nil {
			return nil, err
		}
		undo.add(func() { parent.Close() })
		undo.add(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
	}
	trace("init started")
	// Whatever happens below, a cancelled context kills the init, which
	// ends any read on the socket.
	stop := context.AfterFunc(ctx, func() { cmd.Process.Kill() })
	defer stop()

	// The network is wired while the init builds the root file system.
	netDone := make(chan error, 1)
	if cfg.Network != nil {
		pid := cmd.Process.Pid
		go func() { netDone <- cfg.Network(pid) }()
	} else {
		netDone <- nil
	}
	waitNet := func() error {
		if netDone == nil {
			return nil
		}
		err := <-netDone
		netDone = nil
		return err
	}
	defer waitNet() // never leave the wiring racing the undo

	if err := waitCgroup(); err != nil {
		return nil, err
	}
	trace("cgroup ready")
	added := make(chan error, 1)
	if v2 && rawFork {
		// The move waits for a grace period: it runs while the init
		// builds the root file system, and is done before Create
		// returns, and so before the workload exists.
		pid := cmd.Process.Pid
		go func() { added <- cg.Add(pid) }()
	} else {
		added <- nil
	}
	waitAdded := func() error {
		if added == nil {
			return nil
		}
		err := <-added
		added = nil
		if err != nil {
			return fmt.Errorf("add container init: %w", err)
		}
		return nil
	}
	defer waitAdded() // never leave the move racing the undo's Destroy
	ch, err := newChannel(parent)
	if err != nil {
		return nil, err
	}
	undo.add(ch.close)
	var moves []*os.File
	if run && cfg.CreateHooks == nil && cfg.Network == nil && !(v2 && rawFork) {
		select {
		case f := <-filter:
			if f.err == nil {
				icfg.StartAtOnce, icfg.StartFilter = true, f.prog
			}
			filter = make(chan compiled, 1)
			filter <- f
		default:
		}
	}
	if !v2 || res.Pids > 0 {
		t, err := cg.ThreadFiles()
		if err != nil {
			return nil, err
		}
		defer t.Close()
		icfg.CgroupJoins = len(t.Join)
		moves = append(t.Join, t.Leave...)
	}
	if err := ch.send(icfg, moves...); err != nil {
		return nil, initGone(ctx, cmd, err)
	}
	trace("init configuration sent")
	var console *os.File
	undo.add(func() {
		if console != nil {
			console.Close()
		}
	})
	m, err := recvConsole(ch, icfg.Console, &console)
	if err == nil && m.Type == msgHooks && icfg.Hooks {
		// The root is built, pivot_root is next: the caller's create
		// hooks run now, then the init runs createContainer's.
		state, herr := cfg.CreateHooks(cmd.Process.Pid)
		if herr != nil {
			return nil, herr
		}
		if err := ch.send(message{Type: msgHooksDone, State: state}); err != nil {
			return nil, initGone(ctx, cmd, err)
		}
		m, err = recvConsole(ch, icfg.Console, &console)
	}
	if err != nil {
		return nil, initGone(ctx, cmd, err)
	}
	if m.Type != msgReady {
		return nil, errorFromMessage(m)
	}
	traceStamps("init", m.Trace)
	trace("init ready")
	if icfg.Console && console == nil {
		return nil, fmt.Errorf("container init: ready without a terminal")
	}
	if err := waitAdded(); err != nil {
		return nil, err
	}
	if !stop() {
		// Cancelled as the init got ready: it is being killed.
		return nil, initGone(ctx, cmd, ctx.Err())
	}
	if err := waitNet(); err != nil {
		return nil, err
	}
	undo.release()
	return &Container{cfg: cfg, cmd: cmd, sock: parent, ch: ch, cg: cg, filter: filter, console: console, atOnce: icfg.StartAtOnce, becomes: !cfg.KeepInit, ended: make(chan struct{}), done: make(chan struct{})}, nil
}

// launchInit starts a container's init: cloned with flags into new
// namespaces after joining joins, with stdio (unless spec has a
// terminal), spec's user mappings, the host's mount namespace as fd 4
// with hostMount, and into the v2 cgroup open at cgfd unless it is -1. It
// returns the init and the parent's end of its sync socket.
func launchInit(hostMount bool, joins []nsJoin, flags uintptr, spec *specs.Spec, stdio Stdio, cgfd int) (*exec.Cmd, *os.File, error) {
	parent, child, err := socketPair("init")
	if err != nil {
		return nil, nil, err
	}
	defer child.Close()
	var extra []*os.File
	if hostMount {
		hostns, err := os.Open("/proc/thread-self/ns/mnt")
		if err != nil {
			parent.Close()
			return nil, nil, fmt.Errorf("host mount namespace: %w", unwrapErrno(err))
		}
		defer hostns.Close()
		extra = append(extra, hostns) // hostMountNSFD
	}
	cmd, view := stageCmd(verbInit, child, extra...)
	if view != nil {
		defer view.Close()
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags, Setsid: true}
	if !spec.Process.Terminal {
		setStdio(cmd, stdio)
	}
	if l := spec.Linux; len(l.UIDMappings) > 0 {
		// The init is cloned into the new user namespace with the other
		// new ones (so they belong to it); os/exec writes uid_map and
		// gid_map from here before the child goes on. setgroups stays
		// allowed: the mappings are written by a privileged parent.
		cmd.SysProcAttr.UidMappings = idMappings(l.UIDMappings)
		cmd.SysProcAttr.GidMappings = idMappings(l.GIDMappings)
		cmd.SysProcAttr.GidMappingsEnableSetgroups = true
		// The init keeps the host's uid (unmapped in the namespace) until
		// it changes it; it must be the namespace's root when it execve's
		// itself, or it loses every capability there.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 0, Gid: 0}
	}
	if cgfd >= 0 {
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = cgfd
	}
	if err := startIn(cmd, joins); err != nil {
		parent.Close()
		return nil, nil, fmt.Errorf("start container init: %w", err)
	}
	return cmd, parent, nil
}

// recvConsole reads a stage's next message, taking the terminal's master
// (when terminal is set) from a "console" message on the way into
// *console. At end of file it returns io.EOF.
func recvConsole(ch *channel, terminal bool, console **os.File) (*message, error) {
	for {
		var m message
		files, err := ch.recvFiles(&m)
		if err != nil {
			return nil, err
		}
		if m.Type != msgConsole {
			closeFiles(files)
			return &m, nil
		}
		if !terminal || *console != nil || len(files) != 1 {
			closeFiles(files)
			return nil, fmt.Errorf("unexpected terminal message with %d files", len(files))
		}
		*console = files[0]
	}
}

// compiled is a seccomp program packed for the socket, or why it is not.
type compiled struct {
	prog []byte
	err  error
}

// compileAsync compiles the workload's seccomp profile while the init
// builds the root file system, taking the compile off the start path.
func compileAsync(p *specs.LinuxSeccomp) chan compiled {
	ch := make(chan compiled, 1)
	if p == nil {
		ch <- compiled{}
		return ch
	}
	go func() {
		prog, err := seccomp.Compile(p)
		if err != nil {
			ch <- compiled{err: fmt.Errorf("seccomp: %w", err)}
			return
		}
		ch <- compiled{prog: encodeFilter(prog)}
	}()
	return ch
}

// initGone explains a broken socket during Create: the context was
// cancelled or the init died.
func initGone(ctx context.Context, cmd *exec.Cmd, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("create container: %w", ctx.Err())
	}
	cmd.Process.Kill()
	werr := cmd.Wait()
	if werr != nil {
		return fmt.Errorf("container init died during setup: %v", stageExit(werr))
	}
	return fmt.Errorf("container init died during setup: %v", err)
}

// stageExit explains a stage's exit: one of another build says so.
func stageExit(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == exitStageMismatch {
		return fmt.Errorf("%s is from another build of berth (protocol %s expected): reinstall berth: %w", stageBinary(), stageProtocol, errdefs.ErrUnavailable)
	}
	return err
}

// prepare validates cfg and derives the init's configuration, the
// namespaces the parent must join before starting the init, and the
// clone flags of the new ones.
func prepare(cfg *Config) (*initConfig, []nsJoin, uintptr, error) {
	if cfg == nil || cfg.Spec == nil || cfg.Spec.Process == nil || cfg.Spec.Linux == nil {
		return nil, nil, 0, fmt.Errorf("container config: spec with process and linux sections required: %w", errdefs.ErrInvalid)
	}
	if len(cfg.Spec.Process.Args) == 0 {
		return nil, nil, 0, fmt.Errorf("container config: no command given: %w", errdefs.ErrInvalid)
	}
	if cfg.Dir == "" || !filepath.IsAbs(cfg.Dir) {
		return nil, nil, 0, fmt.Errorf("container config: Dir %q must be an absolute path: %w", cfg.Dir, errdefs.ErrInvalid)
	}
	if cfg.CgroupPath == "" {
		return nil, nil, 0, fmt.Errorf("container config: no cgroup path: %w", errdefs.ErrInvalid)
	}
	icfg := &initConfig{
		ID:         cfg.ID,
		Spec:       initSpec(cfg.Spec),
		Layers:     cfg.Layers,
		Dir:        cfg.Dir,
		CgroupPath: cfg.CgroupPath,
		Console:    cfg.Spec.Process.Terminal,
		Hooks:      cfg.CreateHooks != nil,
		KeepInit:   cfg.KeepInit,
	}
	if len(cfg.Layers) == 0 {
		if cfg.Spec.Root == nil || cfg.Spec.Root.Path == "" {
			return nil, nil, 0, fmt.Errorf("container config: neither layers nor a root path: %w", errdefs.ErrInvalid)
		}
		p, err := filepath.Abs(cfg.Spec.Root.Path)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("root %q: %w", cfg.Spec.Root.Path, err)
		}
		icfg.RootPath = p
	}
	joins, flags, hostMount, newNet, err := namespacePlan(cfg.Spec)
	if err != nil {
		return nil, nil, 0, err
	}
	icfg.HostMount, icfg.NewNet = hostMount, newNet
	return icfg, joins, flags, nil
}

// namespacePlan derives from spec the namespaces to join before the init
// starts (in order), the clone flags of the new ones, whether the
// container shares the host's mount namespace, and whether it has a
// network namespace of its own.
func namespacePlan(spec *specs.Spec) (joins []nsJoin, flags uintptr, hostMount, newNet bool, err error) {
	haveMount, newUser, joinedUser := false, false, false
	for _, ns := range spec.Linux.Namespaces {
		var flag uintptr
		switch ns.Type {
		case specs.PIDNamespace:
			flag = unix.CLONE_NEWPID
		case specs.NetworkNamespace:
			flag = unix.CLONE_NEWNET
			newNet = ns.Path == ""
		case specs.MountNamespace:
			haveMount = true
			flag = unix.CLONE_NEWNS
		case specs.IPCNamespace:
			flag = unix.CLONE_NEWIPC
		case specs.UTSNamespace:
			flag = unix.CLONE_NEWUTS
		case specs.UserNamespace:
			// Joined: by a hand-forked child (userns_unsafe.go).
			if ns.Path == "" {
				newUser = true
			} else {
				joinedUser = true
			}
			flag = unix.CLONE_NEWUSER
		case specs.CgroupNamespace:
			// New: the init unshares it once it is inside the cgroup
			// (detached: before create returns; otherwise on the thread
			// that forks the workload). Joined: below.
			if ns.Path != "" {
				flag = unix.CLONE_NEWCGROUP
			}
		default:
			return nil, 0, false, false, fmt.Errorf("namespace %s: %w", ns.Type, errdefs.ErrNotSupported)
		}
		if ns.Path != "" {
			joins = append(joins, nsJoin{flag: int(flag), path: ns.Path})
			continue
		}
		flags |= flag
	}
	// A joined user namespace comes first (joining it gives the
	// capabilities to join the others it owns); a joined mount namespace
	// last: the other files are opened before, and the switch changes how
	// paths resolve.
	slices.SortStableFunc(joins, func(a, b nsJoin) int {
		if c := cmpBool(a.flag != unix.CLONE_NEWUSER, b.flag != unix.CLONE_NEWUSER); c != 0 {
			return c
		}
		return cmpBool(a.flag == unix.CLONE_NEWNS, b.flag == unix.CLONE_NEWNS)
	})
	if (len(spec.Linux.UIDMappings) > 0 || len(spec.Linux.GIDMappings) > 0) && !newUser {
		return nil, 0, false, false, fmt.Errorf("container config: uid/gid mappings without a new user namespace: %w", errdefs.ErrInvalid)
	}
	if newUser && (len(spec.Linux.UIDMappings) == 0 || len(spec.Linux.GIDMappings) == 0) {
		return nil, 0, false, false, fmt.Errorf("container config: a new user namespace needs uidMappings and gidMappings: %w", errdefs.ErrInvalid)
	}
	if !haveMount {
		// The container shares the host's mount namespace. Nothing is
		// mounted there: the init builds the root in a scratch mount
		// namespace of its own, then moves back into the host's with a
		// detached copy of that tree as its root (hostmnt_linux.go).
		if newUser || joinedUser {
			return nil, 0, false, false, fmt.Errorf("container config: a container with a user namespace of its own needs a mount namespace: %w", errdefs.ErrInvalid)
		}
		hostMount = true
		flags |= unix.CLONE_NEWNS
	}
	return joins, flags, hostMount, newNet, nil
}

// initSpec is the spec as the init needs it: the seccomp profile's
// rules stay here (the parent compiles them while the init builds the
// root), which makes the init's configuration a quarter of the size and
// quicker to decode.
func initSpec(spec *specs.Spec) *specs.Spec {
	if spec.Linux == nil || spec.Linux.Seccomp == nil {
		return spec
	}
	s, l, sc := *spec, *spec.Linux, *spec.Linux.Seccomp
	sc.Syscalls = nil
	l.Seccomp = &sc
	s.Linux = &l
	return &s
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// idMappings converts the spec's mappings for SysProcAttr.
func idMappings(ms []specs.LinuxIDMapping) []syscall.SysProcIDMap {
	out := make([]syscall.SysProcIDMap, len(ms))
	for i, m := range ms {
		out[i] = syscall.SysProcIDMap{ContainerID: int(m.ContainerID), HostID: int(m.HostID), Size: int(m.Size)}
	}
	return out
}

// setStdio gives the stage process its fds 0-2 (with a terminal they stay
// /dev/null: the stage allocates the terminal in the container).
func setStdio(cmd *exec.Cmd, stdio Stdio) {
	// A nil *os.File must stay a nil interface, which os/exec turns into
	// /dev/null.
	if stdio.Stdin != nil {
		cmd.Stdin = stdio.Stdin
	}
	if stdio.Stdout != nil {
		cmd.Stdout = stdio.Stdout
	}
	if stdio.Stderr != nil {
		cmd.Stderr = stdio.Stderr
	}
}

// socketPair makes the parent/stage socket. Both ends are close-on-exec in
// this process; os/exec passes the child's end as fd 3.
func socketPair(what string) (parent, child *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("%s socket: %w", what, err)
	}
	return os.NewFile(uintptr(fds[0]), what+"-parent"), os.NewFile(uintptr(fds[1]), what+"-child"), nil
}

// claimStart marks the container started (Start and Detach may each be
// called once, before Wait and Destroy) and returns the workload's
// seccomp program compiled during Create.
func (c *Container) claimStart() ([]byte, error) {
	c.mu.Lock()
	if c.started || c.waiting || c.destroyed {
		c.mu.Unlock()
		return nil, fmt.Errorf("container %s: already started, waited for or destroyed: %w", c.cfg.ID, errdefs.ErrConflict)
	}
	c.started = true
	c.mu.Unlock()
	f := <-c.filter
	return f.prog, f.err
}

// Pid is the host pid of the container's PID 1: the init, which becomes
// the workload unless Config.KeepInit.
func (c *Container) Pid() int { return c.cmd.Process.Pid }

// Start runs the workload (step 5): the init applies capabilities,
// no_new_privs and seccomp and execs the command (with KeepInit: forks
// it). It returns once the command runs. A command that is not
// found or cannot be invoked comes back as an *ExecError. After a failed
// Start the init has exited; call Destroy.
func (c *Container) Start() error {
	prog, err := c.claimStart()
	if err != nil {
		return err
	}
	trace("seccomp program ready")
	if !c.atOnce {
		if err := c.ch.send(message{Type: msgStart, Filter: prog}); err != nil {
			return fmt.Errorf("container %s: start: %w", c.cfg.ID, err)
		}
	}
	var m message
	if err := c.ch.recv(&m); err != nil {
		return fmt.Errorf("container %s: init died before starting the workload", c.cfg.ID)
	}
	traceStamps("init", m.Trace)
	switch {
	case m.Type == msgStarted && !c.becomes:
		return nil
	case m.Type != msgExecing || !c.becomes:
		return errorFromMessage(&m)
	}
	// The socket is close-on-exec: end of file once the execve is past
	// the point of no return.
	m = message{}
	switch err := c.ch.recv(&m); err {
	case io.EOF:
		return nil
	case nil:
		return errorFromMessage(&m)
	default:
		return fmt.Errorf("container %s: start: %w", c.cfg.ID, err)
	}
}

// Wait waits for the workload to end and reports how: its exit status,
// 128+N for signal N, and whether the cgroup's OOM killer fired. An init
// that stays reports the workload's end (it then exits, and Destroy
// reaps it); otherwise the init is the workload, and its own status is
// the workload's. When an init that stays was killed, its own status is
// reported.
func (c *Container) Wait() (Exit, error) {
	c.startWaiting()
	<-c.ended
	return c.exit, c.waitErr
}

func (c *Container) startWaiting() {
	c.waitOnce.Do(func() {
		c.mu.Lock()
		c.waiting = true
		c.mu.Unlock()
		go c.waitLoop()
	})
}

// waitLoop reads the init's last messages until the socket closes, then
// reaps the init.
func (c *Container) waitLoop() {
	defer close(c.done)
	ended := false
	end := func(ws syscall.WaitStatus) {
		c.exit = exitOf(ws)
		if n, err := c.cg.OOMKills(); err == nil && n > 0 {
			c.exit.OOMKilled = true
		}
		ended = true
		close(c.ended)
	}
	for {
		var m message
		if err := c.ch.recv(&m); err != nil {
			break
		}
		if m.Type == msgExit && !ended {
			traceStamps("init", m.Trace)
			end(syscall.WaitStatus(m.Status))
		}
	}
	err := c.cmd.Wait()
	c.ch.close()
	c.sock.Close()
	if ended {
		return
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		end(c.cmd.ProcessState.Sys().(syscall.WaitStatus))
	case errors.As(err, &ee):
		end(ee.Sys().(syscall.WaitStatus))
	default:
		c.waitErr = fmt.Errorf("container %s: wait: %w", c.cfg.ID, err)
		close(c.ended)
	}
}

// exitOf turns a wait status into the command line's terms.
func exitOf(ws syscall.WaitStatus) Exit {
	if ws.Signaled() {
		return Exit{Code: 128 + int(ws.Signal()), Signal: int(ws.Signal())}
	}
	return Exit{Code: ws.ExitStatus()}
}

// Signal sends sig to the container's PID 1: the workload, which the
// kernel spares the signals it has no handler for (but SIGKILL and
// SIGSTOP), or, with KeepInit, berth's init, which forwards it to the
// workload (SIGKILL and SIGSTOP act on the init itself and so on the
// whole container).
func (c *Container) Signal(sig syscall.Signal) error {
	if err := c.cmd.Process.Signal(sig); err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("container %s: not running: %w", c.cfg.ID, errdefs.ErrConflict)
		}
		return fmt.Errorf("container %s: signal %v: %w", c.cfg.ID, sig, err)
	}
	return nil
}

// Destroy kills whatever is left of the container and removes its cgroup.
// The mounts die with the init's mount namespace. Destroy is idempotent.
func (c *Container) Destroy() error {
	c.mu.Lock()
	if c.destroyed {
		c.mu.Unlock()
		return nil
	}
	c.destroyed = true
	c.mu.Unlock()

	// On v1, where the init is not in the cgroup, the cgroup goes while
	// the init exits (its mount namespace's teardown takes a while); on
	// v2 the init leaves it only when it is reaped.
	c.cmd.Process.Kill()
	c.startWaiting()
	if cgroups.DetectMode() == cgroups.ModeV2 {
		<-c.done
	}
	err := c.cg.Destroy()
	<-c.done
	if err != nil {
		return fmt.Errorf("container %s: %w", c.cfg.ID, err)
	}
	return nil
}

// Cleanup removes the cgroup of a container that is gone (its init dead or
// never reaped by this process), killing any process still in it.
func Cleanup(cgroupPath string) error {
	cg, err := cgroups.New(cgroupPath)
	if err != nil {
		return err
	}
	if err := cg.Destroy(); err != nil {
		return err
	}
	return nil
}
