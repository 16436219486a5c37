package container

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/netif"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The init stage: the container's PID 1 until it becomes the workload
// (execve, the default) or, with KeepInit, for the container's life, the
// workload its child. It is started by Create with fd 3 the sync socket
// and fds 0-2 the workload's stdio (/dev/null with a terminal, which the
// init allocates in the container's devpts).

// stageSocketFD is the sync socket's fd in a stage process.
const stageSocketFD = 3

// buildRoot makes / private (slave when the spec asks for slave or
// shared propagation, so the container still sees the host's later
// mounts: nothing mounted from here on may reach the host), mounts the
// root and the spec's mounts, and makes /dev's nodes. It returns the
// root's path.
func buildRoot(cfg *initConfig) (string, error) {
	spec := cfg.Spec
	unix.Umask(0)
	rootProp, err := rootPropagation(spec.Linux.RootfsPropagation)
	if err != nil {
		return "", err
	}
	first := uintptr(unix.MS_REC | unix.MS_PRIVATE)
	if rootProp&(unix.MS_SLAVE|unix.MS_SHARED) != 0 {
		first = unix.MS_REC | unix.MS_SLAVE
	}
	if err := unix.Mount("", "/", "", first, ""); err != nil {
		return "", fmt.Errorf("make / private: %w", err)
	}
	root, err := mountRoot(cfg)
	if err != nil {
		return "", err
	}
	note("root mounted")
	if err := mountMounts(cfg, root, spec.Mounts); err != nil {
		return "", err
	}
	if hasMount(spec.Mounts, "/dev") {
		if err := populateDev(root, spec.Mounts, spec.Linux.Devices); err != nil {
			return "", err
		}
	}
	return root, nil
}

// premount is buildRoot for a premount configuration (Init.Premount).
func premount(cfg *initConfig) error {
	if len(cfg.Layers) > 0 || cfg.HostMount || cfg.RootPath == "" {
		return fmt.Errorf("premount: a root path of its own only: %w", errdefs.ErrInvalid)
	}
	_, err := buildRoot(cfg)
	return err
}

// runInitStage is the init's main; it never returns.
func runInitStage() {
	// The main goroutine keeps the process's first thread for all of the
	// setup, so every step sees the same thread state.
	runtime.LockOSThread()
	note("main")
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	setProcessName("berth-init")
	ch, err := newChannel(os.NewFile(stageSocketFD, "sync"))
	if err != nil {
		os.Exit(1)
	}
	closeExtraFDs()

	// Signals are caught from the start so that none (SIGTERM) takes its
	// default action on the init; they are forwarded once the workload
	// runs. The Go runtime enables them one by one, each a round trip to
	// a thread of its own (a millisecond or more in all): that happens
	// while the init waits for its configuration and builds the root.
	caught := make(chan chan os.Signal, 1)
	go func() { caught <- catchSignals() }()
	go warmDecoder()
	var cfg initConfig
	moves, err := ch.recvFiles(&cfg)
	if err != nil {
		os.Exit(1) // the parent is gone before sending anything
	}
	var pre *initConfig
	if cfg.Premount {
		// Init.Premount: the root and its standard mounts first; the
		// real configuration follows.
		closeFiles(moves)
		if err := premount(&cfg); err != nil {
			ch.send(errorMessage(err))
			os.Exit(1)
		}
		note("premounted")
		if ch.send(message{Type: msgPremounted, Trace: takeStamps()}) != nil {
			os.Exit(1)
		}
		premounted := cfg
		pre = &premounted
		cfg = initConfig{}
		if moves, err = ch.recvFiles(&cfg); err != nil {
			os.Exit(1)
		}
	}
	note("configuration received")
	var cgroupMoves *cgroups.ThreadFiles
	if cfg.CgroupJoins > 0 && cfg.CgroupJoins <= len(moves) {
		cgroupMoves = &cgroups.ThreadFiles{Join: moves[:cfg.CgroupJoins], Leave: moves[cfg.CgroupJoins:]}
	} else {
		closeFiles(moves)
	}
	fail := func(err error) {
		ch.send(errorMessage(err))
		os.Exit(1)
	}
	// Starting at once with the program at hand, the thread that forks
	// the workload gets ready while the root is built.
	var sp *spawner
	if cfg.StartAtOnce && !cfg.HostMount && cfg.KeepInit {
		prog, err := decodeFilter(cfg.StartFilter)
		if err != nil {
			fail(err)
		}
		if cfg.Spec.Linux.Seccomp != nil && len(prog) == 0 {
			fail(fmt.Errorf("seccomp: no program came with the configuration: %w", errdefs.ErrInvalid))
		}
		sp = newSpawner(&cfg, cgroupMoves, true, prog)
	}

	// With create hooks, the init stops before pivot_root for the
	// parent's (prestart, createRuntime), then runs createContainer's
	// itself: in the container's namespaces, the host's paths in view.
	var atHooks func() error
	if cfg.Hooks {
		atHooks = func() error {
			if err := ch.send(message{Type: msgHooks}); err != nil {
				os.Exit(1)
			}
			var m message
			if err := ch.recv(&m); err != nil || m.Type != msgHooksDone {
				os.Exit(1) // the parent's hooks failed: it kills the init
			}
			var hooks []specs.Hook
			if cfg.Spec.Hooks != nil {
				hooks = cfg.Spec.Hooks.CreateContainer
			}
			return RunHooks("createContainer", hooks, m.State)
		}
	}
	w, err := setupContainer(&cfg, pre, atHooks)
	if err != nil {
		fail(err)
	}
	w.cgroupMoves = cgroupMoves
	if w.console != nil {
		// The parent gets the master; the slave stays for the workload.
		if err := ch.send(message{Type: msgConsole}, w.console.master); err != nil {
			os.Exit(1)
		}
		w.console.master.Close()
		w.console.master = nil
	}
	note("ready")
	if err := ch.send(message{Type: msgReady, Trace: takeStamps()}); err != nil {
		os.Exit(1)
	}
	// Run's containers start at once, with the program that came with
	// the configuration; Create's wait for "start".
	m := message{Type: msgStart, Filter: cfg.StartFilter}
	if !cfg.StartAtOnce {
		m = message{}
		files, err := ch.recvFiles(&m)
		if err == nil && m.Type == msgAwaitStart {
			<-caught                           // awaitStart resets them
			awaitStart(ch, &cfg, w, &m, files) // detached (berth-runtime): never returns
		}
		closeFiles(files)
		if err != nil || m.Type != msgStart {
			os.Exit(1) // the parent went away or destroyed the container
		}
	}
	note("start received")
	if sp == nil {
		prog, err := decodeFilter(m.Filter)
		if err != nil {
			fail(err)
		}
		// The configuration carries the profile without its rules: only
		// the program the parent compiled can filter the workload.
		if cfg.Spec.Linux.Seccomp != nil && len(prog) == 0 {
			fail(fmt.Errorf("seccomp: no program came with the start: %w", errdefs.ErrInvalid))
		}
		w.filter = prog
	}
	if !cfg.KeepInit {
		becomeWorkload(ch, &cfg, w) // never returns
	}
	sigs := <-caught
	pid, err := startWorkload(&cfg, w, sp)
	note("workload forked")
	// The workload holds the slave now: the master reads end of file (EIO)
	// once the workload and its children have closed theirs.
	w.console.close()
	if err != nil {
		if ee, ok := err.(*ExecError); ok {
			errno, _ := ee.Err.(unix.Errno)
			ch.send(message{Type: msgExecError, Path: ee.Path, Errno: int(errno), Err: ee.Err.Error(), Code: ee.Code})
			os.Exit(1)
		}
		fail(err)
	}
	ch.send(message{Type: msgStarted, Pid: pid, Trace: takeStamps()})
	// Setup is over: one P, and the heap it needed back to the kernel,
	// since the init idles for the rest of the container's life. Not at
	// once: a short workload would wait for the collection to be reaped.
	time.AfterFunc(time.Second, func() {
		runtime.GOMAXPROCS(1)
		debug.FreeOSMemory()
	})
	status := supervise(pid, sigs)
	// Out of the cgroup before the init exits: the exit waits for the
	// mount namespace's teardown, which Destroy must not wait for.
	w.pidsSlot.free()
	note("workload reaped")
	ch.send(message{Type: msgExit, Status: int(status), Trace: takeStamps()})
	os.Exit(0)
}

// closeExtraFDs marks every inherited fd above the socket close-on-exec,
// so nothing of the parent's leaks into the workload; the socket itself
// is close-on-exec too.
func closeExtraFDs() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd >= stageSocketFD {
			unix.CloseOnExec(fd)
		}
	}
}

// workload is what setup resolved for starting the workload.
type workload struct {
	cred    credential
	env     []string
	filter  []unix.SockFilter // the seccomp program compiled by the parent
	console *console          // the terminal, with Process.Terminal
	tree    int               // the root's detached copy, with HostMount (hostmnt_linux.go)
	// cgroupMoves move a thread of the init into the container's cgroup
	// and back (initConfig.CgroupJoins); nil when the init is in it.
	cgroupMoves *cgroups.ThreadFiles
	// pidsSlot, when set: the thread that forked the workload stayed in
	// the cgroup's pids hierarchy (leaveCgroup).
	pidsSlot *pidsSlot
}

// setupContainer builds the container around the init: step 3 of the
// design's start sequence.
func setupContainer(cfg *initConfig, pre *initConfig, atHooks func() error) (*workload, error) {
	spec := cfg.Spec
	rootProp, err := rootPropagation(spec.Linux.RootfsPropagation)
	if err != nil {
		return nil, err
	}
	var root string
	if pre == nil {
		if root, err = buildRoot(cfg); err != nil {
			return nil, err
		}
	} else {
		// What Premount built (the parent checked it fits; so does the
		// init, which must not run a container with a mount too many).
		if err := premountFits(pre, cfg); err != nil || cfg.Premounted != len(pre.Spec.Mounts) {
			return nil, fmt.Errorf("premounted root does not fit the container (%v): %w", err, errdefs.ErrInvalid)
		}
		root = pre.RootPath
		if err := mountMounts(cfg, root, spec.Mounts[cfg.Premounted:]); err != nil {
			return nil, err
		}
		if hasMount(spec.Mounts, "/dev") && !hasMount(pre.Spec.Mounts, "/dev") {
			if err := populateDev(root, spec.Mounts, spec.Linux.Devices); err != nil {
				return nil, err
			}
		}
	}
	if err := setHostname(spec); err != nil {
		return nil, err
	}
	if cfg.NewNet {
		if err := netif.LoopbackUp(); err != nil {
			return nil, err
		}
	}
	if atHooks != nil {
		if err := atHooks(); err != nil {
			return nil, err
		}
	}
	note("mounts done")
	if err := pivotRoot(root); err != nil {
		return nil, err
	}
	note("pivoted")
	if rootProp != 0 {
		// On the container's own root, now that it is /: shared makes a
		// peer group of the container's own.
		if err := unix.Mount("", "/", "", rootProp, ""); err != nil {
			return nil, fmt.Errorf("rootfsPropagation %q: %w", spec.Linux.RootfsPropagation, err)
		}
	}
	if err := setSysctls(spec.Linux.Sysctl); err != nil {
		return nil, err
	}
	if err := maskPaths(spec.Linux.MaskedPaths); err != nil {
		return nil, err
	}
	if err := readonlyPaths(spec.Linux.ReadonlyPaths); err != nil {
		return nil, err
	}
	db, err := readUserFiles()
	if err != nil {
		return nil, err
	}
	cred, err := resolveUser(spec.Process.User, db)
	if err != nil {
		return nil, err
	}
	if err := checkSetgroups(&cred, spec.Process.User); err != nil {
		return nil, err
	}
	var cons *console
	if cfg.Console {
		if cons, err = openConsole(spec.Process.ConsoleSize, cred.UID); err != nil {
			return nil, err
		}
		if hasMount(spec.Mounts, "/dev") && !onBind(spec.Mounts, "/dev/console") {
			if err := bindConsole(cons); err != nil {
				cons.close()
				return nil, err
			}
		}
	}
	// A failure below exits the init, which closes the terminal.
	if err := makeCwd(spec.Process.Cwd, cred); err != nil {
		return nil, err
	}
	if spec.Root != nil && spec.Root.Readonly {
		if err := readonlyRoot(); err != nil {
			return nil, err
		}
	}
	if err := setRlimits(spec.Process.Rlimits); err != nil {
		return nil, err
	}
	w := &workload{cred: cred, env: withHome(spec.Process.Env, cred.Home), console: cons, tree: -1}
	if cfg.HostMount {
		// Last: the copy must hold every mount made above.
		if w.tree, err = detachRoot(); err != nil {
			return nil, err
		}
	}
	return w, nil
}

func hasMount(mounts []specs.Mount, dest string) bool {
	for _, m := range mounts {
		if filepath.Clean(m.Destination) == dest {
			return true
		}
	}
	return false
}

// setHostname sets the hostname and domain name; only a UTS namespace of
// the container's own may be changed.
func setHostname(spec *specs.Spec) error {
	if spec.Hostname == "" && spec.Domainname == "" {
		return nil
	}
	// A new UTS namespace, or one joined by path (the spec sets the
	// hostname there, as runc does); never the runtime's own.
	own := false
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.UTSNamespace {
			own = true
		}
	}
	if !own {
		return fmt.Errorf("hostname %q: the container has no UTS namespace of its own: %w", spec.Hostname, errdefs.ErrInvalid)
	}
	if spec.Hostname != "" {
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return fmt.Errorf("hostname %q: %w", spec.Hostname, err)
		}
	}
	if spec.Domainname != "" {
		if err := unix.Setdomainname([]byte(spec.Domainname)); err != nil {
			return fmt.Errorf("domain name %q: %w", spec.Domainname, err)
		}
	}
	return nil
}

// makeCwd creates the working directory when the image lacks it, owned
// by the workload's user, as Docker does.
func makeCwd(cwd string, cred credential) error {
	if cwd == "" {
		return nil
	}
	if !filepath.IsAbs(cwd) {
		return fmt.Errorf("working directory %q: not an absolute path: %w", cwd, errdefs.ErrInvalid)
	}
	if fi, err := os.Stat(cwd); err == nil {
		if !fi.IsDir() {
			// Not left to the fork: chdir failing there would read as
			// the command's failure (127), not the working directory's.
			return fmt.Errorf("working directory %q: not a directory: %w", cwd, errdefs.ErrInvalid)
		}
		return nil
	}
	if err := os.MkdirAll(cwd, 0o755); err != nil {
		return fmt.Errorf("working directory %q: %w", cwd, unwrapErrno(err))
	}
	return os.Chown(cwd, int(cred.UID), int(cred.GID))
}

// rootPropagation is the mount flag of linux.rootfsPropagation (0 when
// unset).
func rootPropagation(name string) (uintptr, error) {
	if name == "" {
		return 0, nil
	}
	p, ok := propagationNames[name]
	if !ok {
		return 0, fmt.Errorf("rootfsPropagation %q: want shared, slave, private or unbindable (r-prefixed or not): %w", name, errdefs.ErrInvalid)
	}
	return p, nil
}
