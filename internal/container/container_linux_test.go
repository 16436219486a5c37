package container

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/cgroups"

	"github.com/berth-dev/berth/internal/testutil"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// TestMain lets the test binary serve as the container's init and exec
// stages (it is /proc/self/exe when re-executed).
func TestMain(m *testing.M) {
	if RunStage(os.Args) {
		return
	}
	code := m.Run()
	removeTestCgroupParents()
	os.Exit(code)
}

// testCgroupParent holds every test container's cgroup.
func testCgroupParent() string { return fmt.Sprintf("/berthtest-%d", os.Getpid()) }

func removeTestCgroupParents() {
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*" + testCgroupParent())
	more, _ := filepath.Glob("/sys/fs/cgroup" + testCgroupParent())
	for _, d := range append(dirs, more...) {
		os.Remove(d)
	}
}

var seq atomic.Int64

// busybox is a fresh busybox root file system for the test.
func busybox(t *testing.T) string {
	t.Helper()
	testutil.NeedRoot(t, "containers need namespaces, mounts and cgroups")
	return testutil.BusyboxRootfs(t)
}

// newConfig is a default container running args over a busybox root.
func newConfig(t *testing.T, args ...string) *Config {
	t.Helper()
	root := busybox(t)
	id := fmt.Sprintf("t%d-%d", os.Getpid(), seq.Add(1))
	spec := DefaultSpec(id)
	spec.Root.Path = root
	spec.Process.Args = args
	return &Config{ID: id, Spec: spec, Dir: t.TempDir(), CgroupPath: testCgroupParent() + "/" + id}
}

type result struct {
	stdout, stderr string
	exit           Exit
}

// run runs cfg to the end with piped stdout and stderr.
func run(t *testing.T, cfg *Config) result {
	t.Helper()
	r, err := tryRun(t, cfg, nil)
	if err != nil {
		t.Fatalf("run %q: %v", cfg.Spec.Process.Args, err)
	}
	return r
}

func tryRun(t *testing.T, cfg *Config, stdin *os.File) (result, error) {
	t.Helper()
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer outR.Close()
	defer errR.Close()
	c, err := Run(context.Background(), cfg, Stdio{Stdin: stdin, Stdout: outW, Stderr: errW})
	outW.Close()
	errW.Close()
	if err != nil {
		return result{}, err
	}
	t.Cleanup(func() { c.Destroy() })
	var stdout, stderr bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); io.Copy(&stderr, errR) }()
	io.Copy(&stdout, outR)
	wg.Wait()
	exit, err := c.Wait()
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	if err := c.Destroy(); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), exit: exit}, nil
}

func sh(t *testing.T, script string) *Config { return newConfig(t, "sh", "-c", script) }

func TestEchoAndExitCodes(t *testing.T) {
	r := run(t, newConfig(t, "echo", "hello", "world"))
	if r.stdout != "hello world\n" || r.exit != (Exit{}) {
		t.Fatalf("echo: got %q %+v", r.stdout, r.exit)
	}
	// A workload that is PID 1 cannot kill itself with a signal (the
	// kernel spares PID 1 its own namespace's signals); under an init
	// that stays it can.
	for _, tc := range []struct {
		script   string
		keepInit bool
		want     Exit
	}{
		{"exit 0", false, Exit{}},
		{"exit 3", false, Exit{Code: 3}},
		{"kill -9 $$", false, Exit{}},
		{"kill -9 $$", true, Exit{Code: 137, Signal: 9}},
		{"kill -TERM $$", true, Exit{Code: 143, Signal: 15}},
	} {
		cfg := sh(t, tc.script)
		cfg.KeepInit = tc.keepInit
		if r := run(t, cfg); r.exit != tc.want {
			t.Errorf("%q (KeepInit %v): got %+v, want %+v (stderr %q)", tc.script, tc.keepInit, r.exit, tc.want, r.stderr)
		}
	}
}

func TestCommandNotFoundOrNotExecutable(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"no-such-command"}, 127},
		{[]string{"/no/such/file"}, 127},
		{[]string{"/etc/passwd"}, 126},
		{[]string{"/etc"}, 126},
	} {
		cfg := newConfig(t, tc.args...)
		_, err := tryRun(t, cfg, nil)
		var ee *ExecError
		if !errors.As(err, &ee) || ee.Code != tc.code {
			t.Errorf("%q: got %v, want an ExecError with code %d", tc.args, err, tc.code)
			continue
		}
		assertGone(t, cfg)
	}
}

func TestEnvCwdHostname(t *testing.T) {
	cfg := sh(t, "echo $FOO; pwd; hostname; echo $HOME")
	cfg.Spec.Process.Env = append(cfg.Spec.Process.Env, "FOO=bar baz")
	cfg.Spec.Process.Cwd = "/work/dir"
	cfg.Spec.Hostname = "box1"
	r := run(t, cfg)
	want := "bar baz\n/work/dir\nbox1\n/root\n"
	if r.stdout != want {
		t.Fatalf("got %q, want %q (stderr %q)", r.stdout, want, r.stderr)
	}
}

func TestUser(t *testing.T) {
	cfg := newConfig(t, "id")
	cfg.Spec.Process.User = specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{50, 2000}}
	r := run(t, cfg)
	if !strings.HasPrefix(r.stdout, "uid=1000(app) gid=1000(app) groups=") ||
		!strings.Contains(r.stdout, "50(staff)") || !strings.Contains(r.stdout, "2000") {
		t.Fatalf("id: got %q (stderr %q)", r.stdout, r.stderr)
	}

	cfg = sh(t, "id -u; id -G; grep CapEff /proc/self/status")
	cfg.Spec.Process.User = specs.User{Username: "app"}
	r = run(t, cfg)
	if r.stdout != "1000\n1000 50\nCapEff:\t0000000000000000\n" {
		t.Fatalf("user app: got %q (stderr %q)", r.stdout, r.stderr)
	}

	cfg = newConfig(t, "id")
	cfg.Spec.Process.User = specs.User{Username: "bob"}
	_, err := tryRun(t, cfg, nil)
	if err == nil || err.Error() != `user "bob": no such user in the image's /etc/passwd` {
		t.Fatalf("user bob: got %v", err)
	}
	assertGone(t, cfg)
}

// By default the workload is PID 1 (the init execve'd it) and the only
// process; background jobs do not outlive it.
func TestWorkloadIsPID1(t *testing.T) {
	// echo and the glob are built in.
	r := run(t, sh(t, "echo /proc/[0-9]*; echo $$; read -r c </proc/1/comm; echo $c"))
	if r.stdout != "/proc/1\n1\nsh\n" {
		t.Fatalf("pid view: got %q (stderr %q)", r.stdout, r.stderr)
	}
	cfg := sh(t, "sleep 1000 & echo started")
	r = run(t, cfg)
	if r.stdout != "started\n" || r.exit.Code != 0 {
		t.Fatalf("background: got %q %+v", r.stdout, r.exit)
	}
}

// keepInit is sh's container with berth's init staying as PID 1.
func keepInit(t *testing.T, script string) *Config {
	cfg := sh(t, script)
	cfg.KeepInit = true
	return cfg
}

func TestKeepInitReaps(t *testing.T) {
	// Only the init and the shell exist (echo and the glob are built in).
	r := run(t, keepInit(t, "echo /proc/[0-9]*; echo $$; cat /proc/1/comm"))
	f := strings.Fields(r.stdout)
	if len(f) != 4 || f[0] != "/proc/1" || f[1] != "/proc/"+f[2] || f[3] != "berth-init" {
		t.Fatalf("pid view: got %q (stderr %q)", r.stdout, r.stderr)
	}
	// An orphan (the backgrounded true, whose parent subshell exits at
	// once) is reparented to the init, which must reap it: poll until no
	// zombie is left, bounded.
	script := `(true &); i=0
while [ $i -lt 100 ]; do
  z=$(cat /proc/[0-9]*/stat 2>/dev/null | awk '$3 == "Z"' | wc -l)
  [ "$z" -eq 0 ] && { echo reaped; exit 0; }
  i=$((i+1)); sleep 0.05
done
echo zombie`
	if r := run(t, keepInit(t, script)); r.stdout != "reaped\n" {
		t.Fatalf("orphan: got %q (stderr %q)", r.stdout, r.stderr)
	}
	// Background jobs do not outlive the workload.
	cfg := keepInit(t, "sleep 1000 & echo started")
	r = run(t, cfg)
	if r.stdout != "started\n" || r.exit.Code != 0 {
		t.Fatalf("background: got %q %+v", r.stdout, r.exit)
	}
}

func TestSecurity(t *testing.T) {
	script := `grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status
cat /proc/kcore /proc/timer_list /proc/keys 2>/dev/null | wc -c
echo 1 > /proc/sys/kernel/domainname && echo sysctl-writable
mount -t tmpfs t /mnt 2>&1 || echo mount-denied
cat /proc/self/mountinfo`
	cfg := sh(t, script)
	r := run(t, cfg)
	for _, want := range []string{"CapEff:\t00000000a80425fb\n", "NoNewPrivs:\t1\n", "Seccomp:\t2\n", "\n0\n", "mount-denied\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("missing %q in %q (stderr %q)", want, r.stdout, r.stderr)
		}
	}
	if strings.Contains(r.stdout, "sysctl-writable") || !strings.Contains(r.stderr, "Read-only file system") {
		t.Errorf("/proc/sys writable: %q %q", r.stdout, r.stderr)
	}
	for _, line := range strings.Split(r.stdout, "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && strings.Contains(f[3], "/") && len(f) > 4 {
			if strings.HasPrefix(f[4], cfg.Dir) || strings.HasPrefix(f[4], "/work") || strings.HasPrefix(f[4], "/tmp/") {
				t.Errorf("host mount point visible: %s", line)
			}
		}
	}
}

func TestLimits(t *testing.T) {
	limit, pids := int64(32<<20), int64(64)
	cfg := newConfig(t, "dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1")
	cfg.Spec.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit, Swap: &limit}}
	r := run(t, cfg)
	if r.exit != (Exit{Code: 137, Signal: 9, OOMKilled: true}) {
		t.Errorf("oom: got %+v (stderr %q)", r.exit, r.stderr)
	}

	script := `i=0; while [ $i -lt 100 ]; do sleep 1000 & i=$((i+1)); done 2>&1 | head -1`
	cfg = sh(t, script)
	cfg.Spec.Linux.Resources = &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &pids}}
	r = run(t, cfg)
	if !strings.Contains(r.stdout+r.stderr, "fork") {
		t.Errorf("pids limit: got %q %q", r.stdout, r.stderr)
	}
}

// On v1 the init stays out of the container's cgroup, so a pids limit
// counts the workload's processes, not the init's threads (five or more,
// which used to leave a shell under a limit of 4 unable to fork, or the
// init unable to start). The init's thread that forks or execs the
// workload may still count for an instant: the shell and its two
// children fit beside it.
func TestPidsLimitCountsWorkloadOnly(t *testing.T) {
	if cgroups.DetectMode() == cgroups.ModeV2 {
		t.Skip("on a cgroup v2 host the init is cloned into the container's cgroup")
	}
	pids := int64(4)
	for _, keep := range []bool{false, true} {
		cfg := sh(t, "true & true & wait && echo forked")
		cfg.KeepInit = keep
		cfg.Spec.Linux.Resources = &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &pids}}
		r := run(t, cfg)
		if r.exit.Code != 0 || r.stdout != "forked\n" {
			t.Fatalf("pids limit %d, KeepInit %v: exit %+v, stdout %q, stderr %q", pids, keep, r.exit, r.stdout, r.stderr)
		}
	}
}

// A pids limit of N is the workload's N processes, as with runc: one
// process runs under a limit of 1, a second cannot be forked, and exec
// into the full container is a PidsLimitError naming the spec's limit:
// whether the init becomes the workload or stays (v1 only, where such an
// init keeps a place of its own under the limit).
func TestPidsLimitIsTheWorkloads(t *testing.T) {
	if cgroups.DetectMode() == cgroups.ModeV2 {
		t.Skip("on a cgroup v2 host the init is cloned into the container's cgroup")
	}
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("KeepInit=%v", keep), func(t *testing.T) { testPidsLimitIsTheWorkloads(t, keep) })
	}
}

func testPidsLimitIsTheWorkloads(t *testing.T, keep bool) {
	limit := func(cfg *Config, n int64) *Config {
		cfg.KeepInit = keep
		cfg.Spec.Linux.Resources = &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &n}}
		return cfg
	}
	if r := run(t, limit(newConfig(t, "true"), 1)); r.exit.Code != 0 {
		t.Fatalf("true under a pids limit of 1: %+v %q", r.exit, r.stderr)
	}
	if r := run(t, limit(sh(t, "true & wait; echo forked"), 1)); r.exit.Code == 0 || r.stdout != "" || !strings.Contains(r.stderr, "fork") {
		t.Fatalf("a second process under a pids limit of 1: %+v %q %q", r.exit, r.stdout, r.stderr)
	}
	cfg := limit(sh(t, "sleep 1000 & echo up; wait"), 2)
	c := runUntilUp(t, cfg)
	p := DefaultSpec(cfg.ID).Process
	p.Args = []string{"true"}
	_, err := Exec(context.Background(), c.Pid(), cfg.KeepInit, cfg.CgroupPath, p, Stdio{})
	var pe *PidsLimitError
	if !errors.As(err, &pe) || pe.Limit != 2 || err.Error() != "pids limit 2 reached" {
		t.Fatalf("exec into a container at its pids limit of 2: %v", err)
	}
}

func TestBindMountsAndReadonlyRoot(t *testing.T) {
	host := t.TempDir()
	os.WriteFile(filepath.Join(host, "in"), []byte("from host\n"), 0o644)
	cfg := sh(t, "cat /data/in; echo out > /data/out; echo x > /ro/y 2>/dev/null || echo ro-denied; cat /etc/hostfile; touch /newfile 2>/dev/null || echo root-ro")
	cfg.Spec.Mounts = append(cfg.Spec.Mounts,
		specs.Mount{Destination: "/data", Type: "bind", Source: host, Options: []string{"rbind"}},
		specs.Mount{Destination: "/ro", Type: "bind", Source: host, Options: []string{"bind", "ro"}},
		specs.Mount{Destination: "/etc/hostfile", Type: "bind", Source: filepath.Join(host, "in"), Options: []string{"bind", "ro"}},
	)
	cfg.Spec.Root.Readonly = true
	r := run(t, cfg)
	want := "from host\nro-denied\nfrom host\nroot-ro\n"
	if r.stdout != want {
		t.Fatalf("got %q, want %q (stderr %q)", r.stdout, want, r.stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(host, "out")); string(b) != "out\n" {
		t.Fatalf("write through the bind: got %q", b)
	}
}

func TestOverlayLayers(t *testing.T) {
	cfg := sh(t, "cat /layer2; echo new > /created; cat /created")
	top := t.TempDir()
	os.WriteFile(filepath.Join(top, "layer2"), []byte("top layer\n"), 0o644)
	cfg.Layers = []string{cfg.Spec.Root.Path, top}
	r := run(t, cfg)
	if r.stdout != "top layer\nnew\n" {
		t.Fatalf("got %q (stderr %q)", r.stdout, r.stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(cfg.Dir, "upper", "created")); string(b) != "new\n" {
		t.Fatalf("upper layer: got %q", b)
	}
	if _, err := os.Stat(filepath.Join(cfg.Spec.Root.Path, "created")); err == nil {
		t.Fatal("write reached the lower layer")
	}
}

// TestTerminal: the workload's terminal is a pty of the container's own
// devpts, sized before the workload starts, bound on /dev/console, the
// controlling terminal, and given to the workload's user.
func TestTerminal(t *testing.T) {
	cfg := sh(t, "tty; stty size; echo $TERM; stat -c '%t:%T' /dev/console /dev/pts/0; "+
		"stat -c '%u:%g %a' /dev/pts/0; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && : </dev/tty && echo stdio ctty; exit 3")
	cfg.Spec.Process.Terminal = true
	cfg.Spec.Process.ConsoleSize = &specs.Box{Height: 33, Width: 101}
	cfg.Spec.Process.Env = append(cfg.Spec.Process.Env, "TERM=xterm")
	cfg.Spec.Process.User = specs.User{UID: 1000, GID: 1000}
	c, err := Run(context.Background(), cfg, Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Destroy()
	master := c.Console()
	if master == nil {
		t.Fatal("no console with a terminal")
	}
	defer master.Close()
	out, _ := io.ReadAll(master) // ends with EIO once every slave fd is closed
	exit, err := c.Wait()
	if err != nil || exit.Code != 3 {
		t.Fatalf("wait: %+v %v (terminal showed %q)", exit, err, out)
	}
	lines := strings.Split(strings.ReplaceAll(string(out), "\r", ""), "\n")
	if len(lines) < 7 || lines[0] != "/dev/pts/0" || lines[1] != "33 101" || lines[2] != "xterm" ||
		lines[3] != lines[4] || !strings.HasPrefix(lines[3], "88:") ||
		lines[5] != "1000:5 620" || lines[6] != "stdio ctty" {
		t.Fatalf("terminal showed %q", out)
	}
}

// Without a terminal there is no console; with one, Stdio is not used.
func TestNoTerminalNoConsole(t *testing.T) {
	cfg := sh(t, "true")
	c, err := Create(context.Background(), cfg, Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Destroy()
	if c.Console() != nil {
		t.Fatal("console without a terminal")
	}
}

// TestExecTerminal: exec -t gets a pty of the container's devpts too,
// sized before the command runs, in a container with and without a
// terminal of its own.
func TestExecTerminal(t *testing.T) {
	for _, own := range []bool{false, true} {
		cfg := sh(t, "exec sleep 1000")
		cfg.Spec.Process.Terminal = own
		c, err := Run(context.Background(), cfg, Stdio{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Destroy()
		if own {
			defer c.Console().Close()
		}
		p := DefaultSpec(cfg.ID).Process
		p.Args = []string{"sh", "-c", "tty; stty size; [ -t 0 ] && : </dev/tty && echo ctty; stat -c '%u' $(tty); exit 5"}
		p.Terminal = true
		p.ConsoleSize = &specs.Box{Height: 20, Width: 70}
		p.User = specs.User{UID: 1000, GID: 1000}
		// Stdio is not used with a terminal.
		proc, err := Exec(context.Background(), c.Pid(), cfg.KeepInit, cfg.CgroupPath, p, Stdio{Stdout: os.Stderr})
		if err != nil {
			t.Fatal(err)
		}
		master := proc.Console()
		if master == nil {
			t.Fatal("no console for exec with a terminal")
		}
		out, _ := io.ReadAll(master)
		master.Close()
		exit, err := proc.Wait()
		if err != nil || exit.Code != 5 {
			t.Fatalf("exec wait: %+v %v (terminal showed %q)", exit, err, out)
		}
		lines := strings.Split(strings.ReplaceAll(string(out), "\r", ""), "\n")
		want := "/dev/pts/0"
		if own {
			want = "/dev/pts/1"
		}
		if len(lines) < 4 || lines[0] != want || lines[1] != "20 70" || lines[2] != "ctty" || lines[3] != "1000" {
			t.Fatalf("own terminal %v: exec terminal showed %q", own, out)
		}
		c.Signal(syscall.SIGKILL)
		c.Wait()
	}
}

func TestExec(t *testing.T) {
	cfg := sh(t, "echo marker > /tmp/marker; echo up; exec sleep 1000")
	cfg.Spec.Hostname = "exechost"
	c := runUntilUp(t, cfg)
	// "up" comes before the shell's exec of sleep: the test asserts
	// what PID 1 is once it has become sleep.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c.Pid()))
		if string(comm) == "sleep\n" || time.Now().After(deadline) {
			break
		}
	}

	p := DefaultSpec(cfg.ID).Process
	// The command waits for its stdin to close, so it is still running
	// when the test looks at its cgroup.
	p.Args = []string{"sh", "-c", "read -r _; hostname; cat /tmp/marker; cat /proc/1/comm; grep -c . /proc/self/cgroup >/dev/null; grep memory /proc/self/cgroup; grep -E '^(CapEff|Seccomp):' /proc/self/status"}
	er, ew, _ := os.Pipe()
	defer er.Close()
	ir, iw, _ := os.Pipe()
	proc, err := Exec(context.Background(), c.Pid(), cfg.KeepInit, cfg.CgroupPath, p, Stdio{Stdin: ir, Stdout: ew, Stderr: ew})
	ew.Close()
	ir.Close()
	if err != nil {
		iw.Close()
		t.Fatal(err)
	}
	if !inCgroup(t, cfg.CgroupPath, proc.Pid()) {
		t.Error("exec process not in the container's cgroup")
	}
	iw.Close()
	out, _ := io.ReadAll(er)
	exit, err := proc.Wait()
	if err != nil || exit.Code != 0 {
		t.Fatalf("exec wait: %+v %v (%q)", exit, err, out)
	}
	want := "exechost\nmarker\nsleep\n" // then memory line and caps
	if !strings.HasPrefix(string(out), want) || !strings.Contains(string(out), ":memory:/\n") ||
		!strings.Contains(string(out), "CapEff:\t00000000a80425fb\nSeccomp:\t2\n") {
		t.Fatalf("exec output: got %q, want prefix %q", out, want)
	}

	p.Args = []string{"no-such-command"}
	if _, err := Exec(context.Background(), c.Pid(), cfg.KeepInit, cfg.CgroupPath, p, Stdio{}); !isExecCode(err, 127) {
		t.Fatalf("exec not found: got %v", err)
	}

	if err := c.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	exit, err = c.Wait()
	if err != nil || exit != (Exit{Code: 137, Signal: 9}) {
		t.Fatalf("after SIGKILL: %+v %v", exit, err)
	}
}

// The host's signals reach a workload that is PID 1 when it handles
// them; one it does not handle (SIGTERM to sleep) the kernel drops, as
// with Docker, and SIGKILL still ends it. An init that stays relays
// SIGTERM to the workload, which dies of it.
func TestSignalsToPID1(t *testing.T) {
	c := runUntilUp(t, sh(t, "trap 'exit 7' TERM; echo up; while :; do sleep 0.1; done"))
	if err := c.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if exit, err := c.Wait(); err != nil || exit.Code != 7 {
		t.Fatalf("trapped SIGTERM: %+v %v", exit, err)
	}

	c = runUntilUp(t, sh(t, "echo up; exec sleep 1000"))
	if err := c.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if err := unix.Kill(c.Pid(), 0); err != nil {
		t.Fatalf("sleep as PID 1 ended on SIGTERM: %v", err)
	}
	c.Signal(syscall.SIGKILL)
	if exit, err := c.Wait(); err != nil || exit.Code != 137 {
		t.Fatalf("SIGKILL: %+v %v", exit, err)
	}

	c = runUntilUp(t, keepInit(t, "echo up; exec sleep 1000"))
	if err := c.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if exit, err := c.Wait(); err != nil || exit != (Exit{Code: 143, Signal: 15}) {
		t.Fatalf("SIGTERM relayed by the init: %+v %v", exit, err)
	}
}

func isExecCode(err error, code int) bool {
	var ee *ExecError
	return errors.As(err, &ee) && ee.Code == code
}

// inCgroup says whether pid is in the container's memory cgroup (v1) or
// its unified cgroup (v2).
func inCgroup(t *testing.T, cgPath string, pid int) bool {
	t.Helper()
	for _, f := range []string{"/sys/fs/cgroup/memory" + cgPath + "/cgroup.procs", "/sys/fs/cgroup" + cgPath + "/cgroup.procs"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, l := range strings.Fields(string(b)) {
			if l == strconv.Itoa(pid) {
				return true
			}
		}
		return false
	}
	t.Fatal("no cgroup.procs found for " + cgPath)
	return false
}

func TestFailedCreateLeavesNothing(t *testing.T) {
	cfg := newConfig(t, "true")
	cfg.Spec.Mounts = append(cfg.Spec.Mounts, specs.Mount{Destination: "/data", Type: "bind", Source: "/nonexistent", Options: []string{"rbind"}})
	_, err := Create(context.Background(), cfg, Stdio{})
	if err == nil || err.Error() != `mount "/nonexistent" on "/data": no such file or directory` {
		t.Fatalf("got %v", err)
	}
	assertGone(t, cfg)
}

// assertGone checks that a container left no cgroup, child process or
// mount on the host.
func assertGone(t *testing.T, cfg *Config) {
	t.Helper()
	for _, d := range []string{"/sys/fs/cgroup/memory" + cfg.CgroupPath, "/sys/fs/cgroup/pids" + cfg.CgroupPath, "/sys/fs/cgroup" + cfg.CgroupPath} {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("cgroup left: %s", d)
		}
	}
	if kids := children(t); kids != "" {
		t.Errorf("child processes left: %s", kids)
	}
	b, _ := os.ReadFile("/proc/self/mountinfo")
	if bytes.Contains(b, []byte(cfg.Dir)) {
		t.Errorf("mount left under %s", cfg.Dir)
	}
	if cfg.Spec.Root != nil && cfg.Spec.Root.Path != "" && bytes.Contains(b, []byte(cfg.Spec.Root.Path)) {
		t.Errorf("mount left on %s", cfg.Spec.Root.Path)
	}
}

func children(t *testing.T) string {
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	var all []string
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		all = append(all, strings.Fields(string(b))...)
	}
	return strings.Join(all, " ")
}

func TestCreateDestroyCycles(t *testing.T) {
	busybox(t)
	countFDs := func() int {
		ents, _ := os.ReadDir("/proc/self/fd")
		return len(ents)
	}
	// Only mounts under this test's directories count: other packages'
	// tests run beside this one and mount and unmount on the host.
	mine := []byte(filepath.Dir(t.TempDir()))
	mountLines := func() int {
		b, _ := os.ReadFile("/proc/self/mountinfo")
		n := 0
		for _, line := range bytes.Split(b, []byte("\n")) {
			if bytes.Contains(line, mine) {
				n++
			}
		}
		return n
	}
	fds, mounts := countFDs(), mountLines()
	for i := 0; i < 50; i++ {
		cfg := newConfig(t, "true")
		c, err := Create(context.Background(), cfg, Stdio{})
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		if err := c.Destroy(); err != nil {
			t.Fatalf("cycle %d: destroy: %v", i, err)
		}
		if err := c.Destroy(); err != nil {
			t.Fatalf("cycle %d: second destroy: %v", i, err)
		}
		assertGone(t, cfg)
	}
	if n := countFDs(); n != fds {
		t.Errorf("fds: %d before, %d after", fds, n)
	}
	if n := mountLines(); n != mounts {
		t.Errorf("host mounts: %d before, %d after", mounts, n)
	}
}

// TestManyLayers needs the relative-path fallback: the absolute lowerdir
// list is longer than a page.
func TestManyLayers(t *testing.T) {
	cfg := sh(t, "cat /f0 /f59")
	parent := t.TempDir()
	cfg.Layers = []string{cfg.Spec.Root.Path}
	for i := 0; i < 60; i++ {
		d := filepath.Join(parent, fmt.Sprintf("layer-%02d-%s", i, strings.Repeat("x", 50)))
		os.Mkdir(d, 0o755)
		os.WriteFile(filepath.Join(d, fmt.Sprintf("f%d", i)), []byte(fmt.Sprintf("%d\n", i)), 0o644)
		cfg.Layers = append(cfg.Layers, d)
	}
	r := run(t, cfg)
	if r.stdout != "0\n59\n" {
		t.Fatalf("got %q (stderr %q)", r.stdout, r.stderr)
	}
}

// The init runs from a read-only view of berth's binary, so a container
// process that reaches its /proc/PID/exe cannot write the host's binary
// through it (CVE-2019-5736).
func TestInitBinaryIsReadOnly(t *testing.T) {
	c := runUntilUp(t, keepInit(t, "echo up; exec sleep 1000"))
	v := readOnlyView(stageBinary())
	if v == nil {
		t.Skip("needs open_tree and mount_setattr (Linux 5.12)")
	}
	v.Close()
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/exe", c.Pid()), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		t.Fatal(err)
	}
	if st.Flags&unix.ST_RDONLY == 0 {
		t.Fatalf("the init's binary is on a writable mount (statfs flags %#x)", st.Flags)
	}
}

// runUntilUp runs cfg, whose workload prints "up" once it is running, and
// waits for that line; the container is destroyed when the test ends.
func runUntilUp(t *testing.T, cfg *Config) *Container {
	t.Helper()
	outR, outW, _ := os.Pipe()
	defer outR.Close()
	c, err := Run(context.Background(), cfg, Stdio{Stdout: outW})
	outW.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Destroy() })
	line := make([]byte, 3)
	if _, err := io.ReadFull(outR, line); err != nil || string(line) != "up\n" {
		t.Fatalf("workload did not start: %q %v", line, err)
	}
	return c
}

// A prestarted init is taken by the container it fits, and an init that
// does not fit (other namespaces) is killed and reaped while Create
// starts one of its own.
func TestPrestartedInit(t *testing.T) {
	cfg := sh(t, "echo prestarted; read -r c </proc/1/comm; echo $c")
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer outR.Close()
	stdio := Stdio{Stdout: outW, Stderr: outW}
	pre := Prestart(cfg.Spec, stdio)
	defer pre.Close()
	if pre.cmd == nil {
		t.Skip("no init was prestarted (a cgroup v2 host)")
	}
	cfg.Init = pre
	c, err := Run(context.Background(), cfg, stdio)
	outW.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Destroy()
	out, _ := io.ReadAll(outR)
	if exit, err := c.Wait(); err != nil || exit.Code != 0 || string(out) != "prestarted\nsh\n" {
		t.Fatalf("exit %+v %v, output %q", exit, err, out)
	}
	if c.cmd != pre.cmd {
		t.Error("Create started an init of its own instead of the prestarted one")
	}

	// Prestarted for the host's network, created with a network
	// namespace of its own: not taken.
	cfg = sh(t, "echo own")
	hostNet := DefaultSpec(cfg.ID)
	hostNet.Linux.Namespaces = slices.DeleteFunc(hostNet.Linux.Namespaces, func(ns specs.LinuxNamespace) bool {
		return ns.Type == specs.NetworkNamespace
	})
	other := Prestart(hostNet, Stdio{})
	defer other.Close()
	cfg.Init = other
	r := run(t, cfg)
	if r.stdout != "own\n" || r.exit.Code != 0 {
		t.Fatalf("with an init that does not fit: %+v", r)
	}
	if other.cmd != nil && other.cmd.ProcessState == nil {
		t.Error("the prestarted init that did not fit was not reaped")
	}
}

// A stage started with another version of the protocol (a berth-init
// left from another build) says so on its socket and exits.
func TestStageProtocolMismatch(t *testing.T) {
	parent, child, err := socketPair("test")
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()
	cmd := exec.Command(os.Args[0])
	cmd.Args = []string{"berth-init", verbInit, "berth-stage-0"}
	cmd.ExtraFiles = []*os.File{child}
	runErr := cmd.Run()
	child.Close()
	var ee *exec.ExitError
	if !errors.As(runErr, &ee) || ee.ExitCode() != exitStageMismatch {
		t.Fatalf("stage exit: %v, want status %d", runErr, exitStageMismatch)
	}
	ch, err := newChannel(parent)
	if err != nil {
		t.Fatal(err)
	}
	var m message
	if err := ch.recv(&m); err != nil {
		t.Fatal(err)
	}
	if m.Type != msgError || !strings.Contains(m.Err, "reinstall berth") || !strings.Contains(m.Err, "berth-stage-0") {
		t.Fatalf("message %+v", m)
	}
	if got := stageExit(runErr).Error(); !strings.Contains(got, "another build of berth") {
		t.Errorf("stageExit: %s", got)
	}
}
