package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/rlimit"
)

// How a process is started.
//
// os.StartProcess sets a child's groups, gid, uid, session, terminal,
// working directory and cgroup between fork and exec, but not its
// rlimits, and a Go re-exec that sets them costs a whole Go runtime start
// (0.1 to 0.3 s under software emulation). Instead the child is cloned
// (clone3 CLONE_INTO_CGROUP) into a frozen cgroup: the kernel marks a
// task cloned into a frozen cgroup to stop before it runs any user code,
// so it waits there, still the agent's copy, until the agent has set its
// rlimits (prlimit) and released it. It then switches user, changes
// directory and execs as os.StartProcess does. The workload's first
// process waits in the workload cgroup itself, frozen while it holds
// nothing else, and is released by thawing it; later ones (Exec) wait in
// startCgroup below it and are released by moving them into the
// workload cgroup. Memory and pids are charged to the workload cgroup
// from the clone on (the staging cgroup has no controllers of its own),
// so pids.max refuses the fork as it did before.
//
// os.StartProcess forks with CLONE_VFORK from a raw system call: the
// forking thread, and the Go scheduler's P it holds, wait in the kernel
// until the child has exec'd, which here is only after another goroutine
// has thawed it. So the agent runs with at least two Ps, and no garbage
// collection may start while a child waits: it would stop the world and
// wait forever for the blocked P.

// The usual request needs none of that: it sets RLIMIT_NOFILE only, to
// at least the agent's own (berth's specs ask for 1048576 or the host's
// limit). The agent then raises its own limit to that, clones the child
// straight into its cgroup, where it inherits the limit and runs at
// once, and puts its own back: two system calls instead of a freeze, a
// wait for the child to show up and a thaw (about 25 ms less under
// software emulation). Lowering the agent's limit for a child, or any
// other rlimit, could hurt the agent itself, so those go the long way.

// startCgroup is where new processes wait for their rlimits.
const startCgroup = workloadCgroup + "/.start"

// defaultNofile is RLIMIT_NOFILE for a process whose request sets none:
// the kernel's default for init and its children (INR_OPEN_CUR and
// INR_OPEN_MAX), which the agent itself raises.
var defaultNofile = unix.Rlimit{Cur: 1024, Max: 4096}

// defaultPath is the PATH used to find a command when its env has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ownNofile makes the agent's raised RLIMIT_NOFILE its own setting, so
// that os.StartProcess never puts back Go's start-up value in a child
// over the limit the agent gave it (it would, were that limit the
// agent's own).
func ownNofile() {
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil {
		_ = unix.Prlimit(0, unix.RLIMIT_NOFILE, &rl, nil)
	}
}

// spawner starts processes through the staging cgroup, one at a time.
type spawner struct {
	mu         sync.Mutex
	reaper     *reaper
	stage      string // the staging cgroup's directory
	stageFD    int    // open on it, for UseCgroupFD; -1 until made (staging)
	workload   string // the workload cgroup's directory
	workloadFD int
}

// newSpawner returns the spawner of the workload cgroup (a directory of
// cgroup2 mounted at mount).
func newSpawner(r *reaper, mount string) (*spawner, error) {
	if runtime.GOMAXPROCS(0) < 2 {
		runtime.GOMAXPROCS(2)
	}
	s := &spawner{reaper: r, stage: filepath.Join(mount, startCgroup), workload: filepath.Join(mount, workloadCgroup), stageFD: -1}
	var err error
	if s.workloadFD, err = unix.Open(s.workload, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
		return nil, fmt.Errorf("workload cgroup: %w", err)
	}
	return s, nil
}

// staging makes the frozen staging cgroup below the workload cgroup on
// first use (most processes never need it) and returns a descriptor of
// it. The caller holds s.mu.
func (s *spawner) staging() (int, error) {
	if s.stageFD >= 0 {
		return s.stageFD, nil
	}
	if err := os.Mkdir(s.stage, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return -1, fmt.Errorf("staging cgroup: %w", err)
	}
	if err := freeze(s.stage, true); err != nil {
		return -1, err
	}
	fd, err := unix.Open(s.stage, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("staging cgroup: %w", err)
	}
	s.stageFD = fd
	return fd, nil
}

// freeze freezes or thaws the cgroup at dir.
func freeze(dir string, on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.freeze"), []byte(v), 0); err != nil {
		return fmt.Errorf("cgroup %s: freeze %s: %w", dir, v, err)
	}
	return nil
}

// limits turns a request's rlimits into prlimit arguments, in order:
// defaultNofile first, so that the request's own RLIMIT_NOFILE, set
// after it, wins.
func limits(rls []agent.Rlimit) (res []int, lims []unix.Rlimit, err error) {
	res, lims = []int{unix.RLIMIT_NOFILE}, []unix.Rlimit{defaultNofile}
	for _, rl := range rls {
		r, ok := rlimit.Resource(rl.Type)
		if !ok {
			return nil, nil, &agent.StartError{Code: 125, Msg: fmt.Sprintf("unknown rlimit %q", rl.Type)}
		}
		if rl.Soft > rl.Hard {
			return nil, nil, &agent.StartError{Code: 125, Msg: fmt.Sprintf("set %s: soft limit %d above hard limit %d", rl.Type, rl.Soft, rl.Hard)}
		}
		res, lims = append(res, r), append(lims, unix.Rlimit{Cur: rl.Soft, Max: rl.Hard})
	}
	return res, lims, nil
}

// started is what os.StartProcess gave.
type started struct {
	proc *os.Process
	ch   chan syscall.WaitStatus
	err  error
}

// start starts the command at path for p with attr (whose Sys must not
// set a cgroup), its rlimits set before it runs. The workload's first
// process (empty is true: nothing runs in the workload cgroup yet) waits
// in the workload cgroup itself, frozen for the moment, which spares a
// migration; others wait in the staging cgroup. Errors are StartErrors
// with Docker's codes.
func (s *spawner) start(path string, p *agent.Process, empty bool, attr *os.ProcAttr) (*os.Process, chan syscall.WaitStatus, error) {
	res, lims, err := limits(p.Rlimits)
	if err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var own unix.Rlimit
	if len(res) > 0 && res[len(res)-1] == unix.RLIMIT_NOFILE && unix.Getrlimit(unix.RLIMIT_NOFILE, &own) == nil {
		want := lims[len(lims)-1]
		only := true
		for _, r := range res {
			only = only && r == unix.RLIMIT_NOFILE
		}
		if only && want.Cur >= own.Cur {
			return s.startDirect(path, p, attr, &want, &own)
		}
	}
	stage, fd := s.stage, -1
	release := func(pid int) error { // thaws the child
		return os.WriteFile(filepath.Join(s.workload, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
	}
	if !empty {
		if fd, err = s.staging(); err != nil {
			return nil, nil, &agent.StartError{Code: 125, Msg: err.Error()}
		}
	} else {
		if err := freeze(s.workload, true); err != nil {
			return nil, nil, &agent.StartError{Code: 125, Msg: err.Error()}
		}
		defer freeze(s.workload, false)
		stage, fd = s.workload, s.workloadFD
		release = func(int) error { return freeze(s.workload, false) }
	}
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // returns once no collection runs
	defer defaultUncaught()()
	sys := *attr.Sys
	sys.UseCgroupFD, sys.CgroupFD = true, fd
	a := *attr
	a.Sys = &sys
	done := make(chan started, 1)
	go func() {
		proc, ch, err := s.reaper.start(path, p.Args, &a)
		done <- started{proc, ch, err}
	}()
	pid, r, err := staged(stage, done)
	if pid == 0 {
		if err == nil {
			err = r.err // the fork failed
		}
		return nil, nil, &agent.StartError{Code: 125, Msg: fmt.Sprintf("start %q: %v", p.Args[0], err)}
	}
	for i := range res {
		if err = unix.Prlimit(pid, res[i], &lims[i], nil); err != nil {
			err = fmt.Errorf("set %s: %w", rlimit.Name(res[i]), err)
			break
		}
	}
	if err == nil {
		err = release(pid)
	}
	if err != nil {
		_ = unix.Kill(pid, unix.SIGKILL) // a frozen task dies too
		if r := <-done; r.err == nil {
			<-r.ch
		}
		return nil, nil, &agent.StartError{Code: 125, Msg: fmt.Sprintf("start %q: %v", p.Args[0], err)}
	}
	r = <-done
	if r.err != nil {
		return nil, nil, startError(p, attr, r.err)
	}
	return r.proc, r.ch, nil
}

// startDirect starts a process straight in the workload cgroup with the
// agent's RLIMIT_NOFILE set to nofile meanwhile (own is the agent's).
func (s *spawner) startDirect(path string, p *agent.Process, attr *os.ProcAttr, nofile, own *unix.Rlimit) (*os.Process, chan syscall.WaitStatus, error) {
	if err := unix.Prlimit(0, unix.RLIMIT_NOFILE, nofile, nil); err != nil {
		return nil, nil, &agent.StartError{Code: 125, Msg: fmt.Sprintf("start %q: set RLIMIT_NOFILE: %v", p.Args[0], err)}
	}
	defer unix.Prlimit(0, unix.RLIMIT_NOFILE, own, nil)
	defer defaultUncaught()()
	sys := *attr.Sys
	sys.UseCgroupFD, sys.CgroupFD = true, s.workloadFD
	a := *attr
	a.Sys = &sys
	proc, ch, err := s.reaper.start(path, p.Args, &a)
	if errors.Is(err, syscall.EAGAIN) { // the fork refused (pids.max), as in start
		return nil, nil, &agent.StartError{Code: 125, Msg: fmt.Sprintf("start %q: %v", p.Args[0], err)}
	}
	if err != nil {
		return nil, nil, startError(p, attr, err)
	}
	return proc, ch, nil
}

// stageWait bounds the wait for a new child to show up in the staging
// cgroup; a guard against a kernel that does not behave, not a tuning knob.
const stageWait = 30 * time.Second

// staged waits for the child that os.StartProcess is making to appear in
// the frozen cgroup at dir and returns its pid; or, with pid 0, the
// result of a start that failed before (fork refused, e.g. at pids.max).
// A start that succeeded without the child ever being staged is an
// error: its rlimits were not set.
func staged(dir string, done chan started) (int, started, error) {
	procs := filepath.Join(dir, "cgroup.procs")
	deadline := time.Now().Add(stageWait)
	for delay := 100 * time.Microsecond; ; delay = min(2*delay, time.Millisecond) {
		b, err := os.ReadFile(procs)
		if err != nil {
			return 0, started{}, err
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			pid, err := strconv.Atoi(f[0])
			return pid, started{}, err
		}
		select {
		case r := <-done:
			if r.err == nil {
				_ = unix.Kill(r.proc.Pid, unix.SIGKILL)
				<-r.ch
				return 0, started{}, errors.New("the process ran before its limits were set (staging cgroup not frozen)")
			}
			return 0, r, nil
		case <-time.After(delay):
		}
		if time.Now().After(deadline) {
			return 0, started{}, fmt.Errorf("no new process in %s after %v", dir, stageWait)
		}
	}
}

// startError turns os.StartProcess's error into Docker's codes: the
// working directory failing is berth's 125; exec failing is 127 when
// something was not found, 126 otherwise.
func startError(p *agent.Process, attr *os.ProcAttr, err error) error {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return &agent.StartError{Code: 125, Msg: fmt.Sprintf("start %q: %v", p.Args[0], err)}
	}
	if ok, cerr := searchable(attr.Dir, credOf(p)); !ok {
		return &agent.StartError{Code: 125, Msg: fmt.Sprintf("chdir to working directory %s: %v", attr.Dir, cerr)}
	}
	if errno == syscall.ENOENT {
		return &agent.StartError{Code: 127, Msg: fmt.Sprintf("exec %q: %v", p.Args[0], errno)}
	}
	return &agent.StartError{Code: 126, Msg: fmt.Sprintf("exec %q: %v", p.Args[0], errno)}
}

// cred is who a process runs as, for the permission checks the agent
// (root) makes on its behalf.
type cred struct {
	uid, gid uint32
	groups   []uint32
}

func credOf(p *agent.Process) cred { return cred{p.UID, p.GID, p.AdditionalGids} }

// may reports whether c may access a file with st's owner and mode for
// want (a mask of 4 read, 2 write, 1 execute/search), by mode bits as the
// kernel checks them: root may do anything, except execute a file
// without any execute bit.
func (c cred) may(st *unix.Stat_t, want uint32) bool {
	mode := st.Mode & 0o777
	if c.uid == 0 {
		return want&1 == 0 || st.Mode&unix.S_IFMT == unix.S_IFDIR || mode&0o111 != 0
	}
	switch {
	case st.Uid == c.uid:
		mode >>= 6
	case st.Gid == c.gid || slicesContains(c.groups, st.Gid):
		mode >>= 3
	}
	return mode&want == want
}

func slicesContains(s []uint32, v uint32) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// searchable reports whether c can chdir into dir: every directory on
// the way must be searchable.
func searchable(dir string, c cred) (bool, error) {
	p := "/"
	for _, part := range append([]string{""}, strings.Split(strings.Trim(filepath.Clean(dir), "/"), "/")...) {
		p = filepath.Join(p, part)
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return false, err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return false, unix.ENOTDIR
		}
		if !c.may(&st, 1) {
			return false, unix.EACCES
		}
	}
	return true, nil
}

// lookPath finds cmd in env's PATH as execvp does, for a process running
// as c in directory cwd; a name with a slash is used as it is. It returns
// the exit code that a failure maps to: 127 for not found, 126 for found
// but not executable.
func lookPath(cmd string, env []string, cwd string, c cred) (string, int, error) {
	if strings.Contains(cmd, "/") {
		return cmd, 0, nil
	}
	pathEnv := defaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathEnv = v
		}
	}
	denied := ""
	for _, dir := range filepath.SplitList(pathEnv) {
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(cwd, dir) // relative to the process's directory
		}
		p := filepath.Join(dir, cmd)
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil || st.Mode&unix.S_IFMT == unix.S_IFDIR {
			continue
		}
		if !c.may(&st, 1) {
			if denied == "" {
				denied = p
			}
			continue
		}
		return p, 0, nil
	}
	if denied != "" {
		return "", 126, fmt.Errorf("exec %q: %s: permission denied", cmd, denied)
	}
	return "", 127, fmt.Errorf("exec %q: executable file not found in $PATH", cmd)
}
