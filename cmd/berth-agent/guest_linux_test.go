package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/initramfs"
	"github.com/berth-dev/berth/internal/testutil"
)

// These tests boot real guests: Debian's cloud kernel under QEMU (TCG on
// hosts without a usable KVM), this package built as the initramfs's
// /init, a busybox root on an EROFS layer disk and an ext4 scratch disk.
// Each guest serves several requests; independent guests run in parallel.

// guardTimeout only keeps a broken guest from hanging the test run; no
// test asserts a duration.
const guardTimeout = 5 * time.Minute

var (
	buildOnce sync.Once
	built     struct {
		dir, vmlinuz, version, initrd, layer string
		err                                  error
	}
)

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir) // the agent, initramfs and layer built once
	}
	os.Exit(code)
}

func findKernelDir() string {
	for _, d := range []string{os.Getenv("BERTH_KERNEL_DIR"), "/var/lib/berth/kernel", "/var/lib/berth-kernel-dev"} {
		if d == "" {
			continue
		}
		if _, _, err := initramfs.KernelModulesDir(d); err == nil {
			return d
		}
	}
	return ""
}

// guestInputs builds, once per test binary, the agent, the initramfs and a
// busybox EROFS layer.
func guestInputs(t *testing.T) (vmlinuz, version, initrd, layer string) {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("needs qemu: qemu-system-x86_64 not on PATH (apt-get install qemu-system-x86)")
	}
	testutil.NeedTool(t, "mkfs.erofs")
	testutil.NeedTool(t, "mkfs.ext4")
	kdir := findKernelDir()
	if kdir == "" {
		t.Skip("needs a guest kernel: set BERTH_KERNEL_DIR or run scripts/fetch-kernel.sh /var/lib/berth/kernel")
	}
	rootfs := testutil.BusyboxRootfs(t)
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "berth-agent-test-")
		if err != nil {
			built.err = err
			return
		}
		built.dir = dir
		built.err = func() error {
			vmlinuz, md, err := initramfs.KernelModulesDir(kdir)
			if err != nil {
				return err
			}
			built.vmlinuz, built.version = vmlinuz, filepath.Base(md)
			bin := filepath.Join(dir, "berth-agent")
			cmd := exec.Command("go", "build", "-o", bin, ".")
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("go build: %v: %s", err, out)
			}
			files, err := initramfs.AgentImage(bin, md, initramfs.DefaultModules)
			if err != nil {
				return err
			}
			var b bytes.Buffer
			if err := initramfs.Build(&b, files); err != nil {
				return err
			}
			built.initrd = filepath.Join(dir, "initrd.cpio")
			if err := os.WriteFile(built.initrd, b.Bytes(), 0o644); err != nil {
				return err
			}
			built.layer = filepath.Join(dir, "layer0.erofs")
			if out, err := exec.Command("mkfs.erofs", "--quiet", built.layer, rootfs).CombinedOutput(); err != nil {
				return fmt.Errorf("mkfs.erofs: %v: %s", err, out)
			}
			return nil
		}()
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.vmlinuz, built.version, built.initrd, built.layer
}

// vm is one running guest.
type vm struct {
	t       *testing.T
	cmd     *exec.Cmd
	console string
	client  *agent.Client
	exited  chan error
	dialed  time.Time // just before agent.Dial, which sends the host's time
}

// bootGuest starts QEMU with one layer disk and a scratch disk, and
// qemuExtra, and connects to the agent.
func bootGuest(t *testing.T, qemuExtra ...string) *vm {
	vmlinuz, _, initrd, layer := guestInputs(t)
	dir := t.TempDir()
	scratch := filepath.Join(dir, "scratch.ext4")
	if err := os.WriteFile(scratch, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(scratch, 256<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", scratch).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	// Unix socket paths are limited to 108 bytes: keep it short.
	sockDir, err := os.MkdirTemp("", "bg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "a.sock")
	v := &vm{t: t, console: filepath.Join(dir, "console.log"), exited: make(chan error, 1)}
	v.cmd = exec.Command("qemu-system-x86_64", append(qemuArgs(vmlinuz, initrd, layer, scratch, sock, v.console), qemuExtra...)...)
	var qerr bytes.Buffer
	v.cmd.Stderr = &qerr
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { v.exited <- v.cmd.Wait() }()
	t.Cleanup(func() {
		_ = v.cmd.Process.Kill()
		<-v.exited
	})

	ctx, cancel := context.WithTimeout(context.Background(), guardTimeout)
	defer cancel()
	var conn net.Conn
	for conn == nil {
		c, err := net.Dial("unix", sock)
		if err == nil {
			conn = c
			break
		}
		select {
		case err := <-v.exited:
			t.Fatalf("qemu exited: %v: %s", err, qerr.String())
		case <-ctx.Done():
			t.Fatalf("qemu socket never appeared: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	v.dialed = time.Now()
	v.client, err = agent.Dial(ctx, conn)
	if err != nil {
		t.Fatalf("agent handshake: %v\nconsole:\n%s", err, v.consoleTail())
	}
	return v
}

// qemuArgs is the command line the VM engine is expected to use too.
func qemuArgs(vmlinuz, initrd, layer, scratch, sock, console string) []string {
	return []string{
		"-M", "q35,accel=tcg", "-cpu", "max", "-m", "256", "-smp", "1",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-serial", "file:" + console,
		"-kernel", vmlinuz, "-initrd", initrd,
		"-append", "console=ttyS0 quiet panic=-1 berth.port=agent",
		"-device", "virtio-serial-pci",
		"-chardev", "socket,id=agent,path=" + sock + ",server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name=agent",
		"-drive", "if=none,id=l0,file=" + layer + ",format=raw,readonly=on",
		"-device", "virtio-blk-pci,drive=l0,serial=berth-l0",
		"-drive", "if=none,id=s,file=" + scratch + ",format=raw",
		"-device", "virtio-blk-pci,drive=s,serial=berth-scratch",
	}
}

func (v *vm) consoleTail() string {
	b, _ := os.ReadFile(v.console)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// shutdown asks the guest to power off and checks QEMU exits by itself.
func (v *vm) shutdown() {
	t := v.t
	ctx, cancel := context.WithTimeout(context.Background(), guardTimeout)
	defer cancel()
	if err := v.client.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	select {
	case err := <-v.exited:
		v.exited <- err
		if err != nil {
			t.Errorf("qemu after shutdown: %v", err)
		}
	case <-ctx.Done():
		t.Errorf("qemu did not exit after shutdown; console:\n%s", v.consoleTail())
	}
}

var busyboxEnv = []string{"PATH=/bin:/usr/bin", "FOO=bar", "HOME=/root"}

// exec runs p as an Exec in the guest and returns its output and status.
func (v *vm) exec(p agent.Process) (string, string, agent.ExitStatus, error) {
	if p.Env == nil {
		p.Env = busyboxEnv
	}
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), guardTimeout)
	defer cancel()
	pr, err := v.client.Exec(ctx, p, agent.Stdio{Stdout: &out, Stderr: &errb})
	if err != nil {
		return "", "", agent.ExitStatus{}, err
	}
	st, err := pr.Wait()
	return out.String(), errb.String(), st, err
}

func rootSpec() *agent.Root {
	return &agent.Root{Layers: []string{"berth-l0"}, Scratch: "berth-scratch"}
}

func TestGuestRunAndExec(t *testing.T) {
	t.Parallel()
	v := bootGuest(t)
	_, version, _, _ := guestInputs(t)

	stdinR, stdinW := io.Pipe()
	var mainOut, mainErr bytes.Buffer
	var mu sync.Mutex
	main, err := v.client.Run(context.Background(), agent.Process{
		Args:     []string{"sh", "-c", `echo main $FOO; uname -r; echo oops >&2; read line; echo got $line; exit 3`},
		Env:      busyboxEnv,
		Hostname: "guesty",
		Root:     rootSpec(),
		Resources: &agent.Resources{
			MemoryBytes: 64 << 20, CPUQuota: 50000, CPUPeriod: 100000, PidsMax: 64,
		},
	}, agent.Stdio{Stdin: stdinR, Stdout: lockedWriter(&mu, &mainOut), Stderr: lockedWriter(&mu, &mainErr)})
	if err != nil {
		t.Fatalf("run: %v\nconsole:\n%s", err, v.consoleTail())
	}

	host, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	cases := []struct {
		name string
		p    agent.Process
		out  string // exact stdout, or a substring when contains is set
		has  []string
		code int
	}{
		{name: "guest kernel", p: agent.Process{Args: []string{"uname", "-r"}}, out: version + "\n"},
		{name: "env and cwd", p: agent.Process{Args: []string{"sh", "-c", "echo $FOO; pwd"}, Cwd: "/tmp"}, out: "bar\n/tmp\n"},
		{name: "user", p: agent.Process{Args: []string{"id"}, UID: 1000, GID: 1000, AdditionalGids: []uint32{50}},
			has: []string{"uid=1000(app)", "gid=1000(app)", "50(staff)"}},
		{name: "hostname", p: agent.Process{Args: []string{"hostname"}}, out: "guesty\n"},
		{name: "exit code", p: agent.Process{Args: []string{"sh", "-c", "exit 7"}}, code: 7},
		{name: "rlimit", p: agent.Process{Args: []string{"sh", "-c", "ulimit -n"},
			Rlimits: []agent.Rlimit{{Type: "RLIMIT_NOFILE", Soft: 123, Hard: 456}}}, out: "123\n"},
		// The workload's cgroup namespace: its cgroup is its root.
		{name: "high nofile", p: agent.Process{Args: []string{"sh", "-c", "ulimit -Sn; ulimit -Hn; cat /proc/self/cgroup"},
			Rlimits: []agent.Rlimit{{Type: "RLIMIT_NOFILE", Soft: 20000, Hard: 30000}}}, out: "20000\n30000\n0::/\n"},
		// An exec without rlimits of its own gets the workload's.
		{name: "default rlimits", p: agent.Process{Args: []string{"sh", "-c", "ulimit -Sn; ulimit -Hn"}}, out: "1048576\n1048576\n"},
		{name: "overlay is writable", p: agent.Process{Args: []string{"sh", "-c", "echo x > /new && cat /new"}}, out: "x\n"},
		{name: "terminal", p: agent.Process{Args: []string{"sh", "-c", "[ -t 1 ] && echo tty"}, Terminal: true, Rows: 24, Cols: 80}, out: "tty\r\n"},
		{name: "cgroup limits", p: agent.Process{Args: []string{"sh", "-c",
			"cat /proc/self/cgroup /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max /sys/fs/cgroup/workload/pids.max"}},
			out: "0::/\n67108864\n50000 100000\n64\n"},
		// The workload is PID 1 of its pid namespace; the agent, the
		// guest's PID 1, and the kernel's threads are out of sight.
		{name: "workload is pid 1", p: agent.Process{Args: []string{"cat", "/proc/1/comm"}}, out: "sh\n"},
		{name: "only the workload's processes", p: agent.Process{Args: []string{"sh", "-c", "cat /proc/[0-9]*/comm | grep -E '^(init|kthreadd)$'; echo done"}}, out: "done\n"},
		{name: "no capabilities beyond the spec's", p: agent.Process{Args: []string{"sh", "-c", "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status"}},
			out: "CapEff:\t00000000a80425fb\nNoNewPrivs:\t1\nSeccomp:\t2\n"},
		{name: "mount denied", p: agent.Process{Args: []string{"mount", "-t", "tmpfs", "t", "/mnt"}}, code: 1},
	}
	for _, c := range cases {
		out, errs, st, err := v.exec(c.p)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if st.Code != c.code {
			t.Errorf("%s: exit %+v, want %d (stderr %q)", c.name, st, c.code, errs)
		}
		if c.has != nil {
			for _, h := range c.has {
				if !strings.Contains(out, h) {
					t.Errorf("%s: stdout %q lacks %q", c.name, out, h)
				}
			}
		} else if out != c.out {
			t.Errorf("%s: stdout %q, want %q (stderr %q)", c.name, out, c.out, errs)
		}
		t.Logf("%s: %q exit %d", c.name, out, st.Code)
		if c.name == "guest kernel" && strings.TrimSpace(out) == strings.TrimSpace(string(host)) {
			t.Errorf("guest kernel %q is the host's", out)
		}
	}

	var se *agent.StartError
	if _, _, _, err := v.exec(agent.Process{Args: []string{"no-such-command"}}); !errors.As(err, &se) || se.Code != 127 {
		t.Errorf("missing command: %v", err)
	}
	if _, _, _, err := v.exec(agent.Process{Args: []string{"/etc/passwd"}}); !errors.As(err, &se) || se.Code != 126 {
		t.Errorf("not executable: %v", err)
	}
	sleeper, err := v.client.Exec(context.Background(), agent.Process{Args: []string{"sleep", "1000"}, Env: busyboxEnv}, agent.Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	_ = sleeper.Signal(syscall.SIGTERM)
	if st, err := sleeper.Wait(); err != nil || st.Code != 143 || st.Signal != 15 {
		t.Errorf("SIGTERM: %+v %v", st, err)
	}

	io.WriteString(stdinW, "hello\n")
	stdinW.Close()
	st, err := main.Wait()
	if err != nil || st.Code != 3 {
		t.Errorf("main: %+v %v", st, err)
	}
	mu.Lock()
	if want := "main bar\n" + version + "\ngot hello\n"; mainOut.String() != want {
		t.Errorf("main stdout %q, want %q", mainOut.String(), want)
	}
	if mainErr.String() != "oops\n" {
		t.Errorf("main stderr %q", mainErr.String())
	}
	mu.Unlock()
	v.shutdown()
}

func TestGuestOOM(t *testing.T) {
	t.Parallel()
	v := bootGuest(t)
	var errb bytes.Buffer
	p, err := v.client.Run(context.Background(), agent.Process{
		Args:      []string{"tail", "/dev/zero"},
		Env:       busyboxEnv,
		Root:      rootSpec(),
		Resources: &agent.Resources{MemoryBytes: 16 << 20},
	}, agent.Stdio{Stderr: &errb})
	if err != nil {
		t.Fatalf("run: %v\nconsole:\n%s", err, v.consoleTail())
	}
	st, err := p.Wait()
	t.Logf("memory hog: %+v", st)
	if err != nil || st.Code != 137 || st.Signal != 9 || !st.OOMKilled {
		t.Errorf("memory hog: %+v %v (stderr %q)", st, err, errb.String())
	}
	// A second Run in the same guest is refused.
	var se *agent.StartError
	if _, err := v.client.Run(context.Background(), agent.Process{Args: []string{"true"}, Root: rootSpec()}, agent.Stdio{}); !errors.As(err, &se) || se.Code != 125 {
		t.Errorf("second run: %v", err)
	}
	v.shutdown()
}

// The guest's clock is the one the host sent in its hello, not the RTC's
// (set here to 2001, as stale as a restored template's clock).
func TestGuestClock(t *testing.T) {
	t.Parallel()
	v := bootGuest(t, "-rtc", "base=2001-01-01T00:00:00")
	var out, errb bytes.Buffer
	p, err := v.client.Run(context.Background(), agent.Process{
		Args: []string{"date", "+%s"},
		Env:  busyboxEnv,
		Root: rootSpec(),
	}, agent.Stdio{Stdout: &out, Stderr: &errb})
	if err != nil {
		t.Fatalf("run: %v\nconsole:\n%s", err, v.consoleTail())
	}
	if st, err := p.Wait(); err != nil || st.Code != 0 {
		t.Fatalf("date: %+v %v (stderr %q)", st, err, errb.String())
	}
	now := time.Now()
	sec, err := strconv.ParseInt(strings.TrimSpace(out.String()), 10, 64)
	if err != nil {
		t.Fatalf("date: %q", out.String())
	}
	// The host's time was read after v.dialed and the guest's clock has
	// run on from it since; date prints whole seconds.
	guest := time.Unix(sec, 0)
	t.Logf("guest clock %v; host sent its time after %v, now %v", guest.UTC(), v.dialed.UTC(), now.UTC())
	if guest.Before(v.dialed.Add(-2*time.Second)) || guest.After(now.Add(2*time.Second)) {
		t.Errorf("guest clock %v, want from %v (the host's time at hello) to %v", guest.UTC(), v.dialed.UTC(), now.UTC())
	}
	v.shutdown()
}

// lockedWriter serialises writes to w with mu.
func lockedWriter(mu *sync.Mutex, w io.Writer) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return w.Write(p)
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// A template's guest mounts its root before the host connects
// (berth.template=1, berth.root=...); the run request then only enters
// it, read-only when it asks. A request for other disks than the
// template mounted gets its own root.
func TestGuestTemplateRoot(t *testing.T) {
	for _, tc := range []struct{ name, root, log string }{
		{"same disks", "berth-l0/berth-scratch", ""},
		{"other disks", "berth-l0", "the template mounted another root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := bootGuest(t, "-append", "console=ttyS0 quiet panic=-1 berth.port=agent berth.trace=1 berth.template=1 berth.root="+tc.root)
			var out, errb bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), guardTimeout)
			defer cancel()
			root := rootSpec()
			root.ReadOnly = true
			p, err := v.client.Run(ctx, agent.Process{
				Args: []string{"sh", "-c", "touch /x 2>/dev/null || echo ro; echo y > /tmp/y 2>/dev/null || echo tmp ro; mount | grep -c ' / type overlay .*ro'"},
				Env:  busyboxEnv, Root: root,
			}, agent.Stdio{Stdout: &out, Stderr: &errb})
			if err != nil {
				t.Fatalf("run: %v\nconsole:\n%s", err, v.consoleTail())
			}
			if st, err := p.Wait(); err != nil || st.Code != 0 || out.String() != "ro\ntmp ro\n1\n" {
				t.Fatalf("status %+v %v, stdout %q, stderr %q\nconsole:\n%s", st, err, out.String(), errb.String(), v.consoleTail())
			}
			b, _ := os.ReadFile(v.console)
			console := string(b)
			// The trace says when: the root was up before the port opened.
			if o, a := strings.Index(console, " s overlay mounted"), strings.Index(console, " s agent channel open"); o < 0 || a < 0 || o > a {
				t.Errorf("the root was not mounted before the agent's port opened:\n%s", v.consoleTail())
			}
			if tc.log != "" && !strings.Contains(console, tc.log) {
				t.Errorf("console lacks %q:\n%s", tc.log, v.consoleTail())
			}
			v.shutdown()
		})
	}
}
