package test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/testutil"
	"github.com/berth-dev/berth/internal/tty"
)

// rtImage is the name the client tests give the busybox test image.
const rtImage = "localhost/berth-rt:test"

// rtArchive is a docker-save archive of busybox, named rtImage (both ctr
// and docker import it).
func rtArchive(t *testing.T) string {
	t.Helper()
	layout := testutil.OCILayout(t, testutil.BusyboxRootfs(t), testutil.ImageOptions{Ref: "test", Cmd: []string{"/bin/sh"}})
	return testutil.DockerArchive(t, layout, rtImage)
}

// daemonDir makes a short directory (sockets have short names) for a
// daemon's files. Once the daemon has stopped (cleanups run newest
// first), whatever it left mounted there is unmounted, the directory
// removed, and the empty cgroup parent it made for its containers
// (cgroupParent in every hierarchy) removed.
func daemonDir(t *testing.T, prefix, cgroupParent string) string {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b, _ := os.ReadFile("/proc/self/mountinfo")
		lines := strings.Split(string(b), "\n")
		for i := len(lines) - 1; i >= 0; i-- {
			f := strings.Fields(lines[i])
			if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
				unix.Unmount(f[4], unix.MNT_DETACH)
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + cgroupParent)
		dirs = append(dirs, "/sys/fs/cgroup/"+cgroupParent)
		for _, d := range dirs {
			os.Remove(d) // only when empty
		}
	})
	return dir
}

// daemon is a containerd or dockerd the test started.
type daemon struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startDaemon starts name with args, through the command prefix if any
// (nsenter into a test's network namespace), its output in
// dir/daemon.log, and polls ready until it answers. The daemon is
// stopped (SIGTERM, then SIGKILL) at the end of the test.
func startDaemon(t *testing.T, dir string, prefix []string, name string, ready func() bool, args ...string) *daemon {
	t.Helper()
	d := &daemon{log: filepath.Join(dir, "daemon.log"), done: make(chan struct{})}
	logf, err := os.Create(d.log)
	if err != nil {
		t.Fatal(err)
	}
	argv := append(append(append([]string{}, prefix...), name), args...)
	d.cmd = exec.Command(argv[0], argv[1:]...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	logf.Close()
	go func() { d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() { d.stop(t) })
	for deadline := time.Now().Add(60 * time.Second); !ready(); time.Sleep(100 * time.Millisecond) {
		select {
		case <-d.done:
			t.Fatalf("%s exited at start:\n%s", name, d.tail())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer within a minute:\n%s", name, d.tail())
		}
	}
	return d
}

// stop ends the daemon and waits for it.
func (d *daemon) stop(t *testing.T) {
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
		t.Errorf("daemon %s ignored SIGTERM for 30 s", d.cmd.Path)
	}
}

// tail is the end of the daemon's log.
func (d *daemon) tail() string {
	b, _ := os.ReadFile(d.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// onPty runs a command with a fresh pty as its controlling terminal and
// returns what the terminal showed and the exit status.
func onPty(t *testing.T, name string, args ...string) (string, int) {
	t.Helper()
	master, slave, err := tty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	cmd := exec.Command(name, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	var out bytes.Buffer
	copied := make(chan struct{})
	go func() { io.Copy(&out, master); close(copied) }()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s %s with a terminal did not finish within a minute", name, strings.Join(args, " "))
	}
	<-copied
	return strings.ReplaceAll(out.String(), "\r\n", "\n"), cmd.ProcessState.ExitCode()
}

// startContainerd starts a containerd of the test's own (root, state and
// sockets in a fresh directory, namespace ns, cgroups under ns) with the
// test image imported. It returns ctr's global flags for it prepended to
// a command, and the daemon's directory (state/ is its state root). When the test ends, whatever tasks and containers are left
// are removed before the daemon stops.
func startContainerd(t *testing.T, containerd, ctr, prefix, ns, archive string) (func(args ...string) []string, string) {
	t.Helper()
	dir := daemonDir(t, prefix, ns)
	sock := filepath.Join(dir, "c.sock")
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc", filepath.Join(dir, "debug.sock"))
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	c := func(args ...string) []string { return append([]string{"-a", sock, "-n", ns}, args...) }
	d := startDaemon(t, dir, nil, containerd, func() bool {
		return exec.Command(ctr, c("version")...).Run() == nil
	}, "--config", filepath.Join(dir, "config.toml"))
	// Registered after the daemon's stop, so it runs first.
	t.Cleanup(func() {
		out, _ := exec.Command(ctr, c("task", "ls", "-q")...).Output()
		for _, id := range strings.Fields(string(out)) {
			exec.Command(ctr, c("task", "kill", "-s", "KILL", id)...).Run()
			exec.Command(ctr, c("task", "rm", "-f", id)...).Run()
		}
		out, _ = exec.Command(ctr, c("container", "ls", "-q")...).Output()
		for _, id := range strings.Fields(string(out)) {
			exec.Command(ctr, c("container", "rm", id)...).Run()
		}
		if t.Failed() {
			t.Logf("containerd log:\n%s", d.tail())
		}
	})
	mustCmd(t, ctr, c("image", "import", archive)...)
	return c, dir
}

// TestContainerdWithBerthRuntime: containerd's runc shim drives
// berth-runtime (ctr run --runc-binary): output, exit codes, task exec,
// ps, pause/resume, kill and a terminal.
func TestContainerdWithBerthRuntime(t *testing.T) {
	testutil.NeedRoot(t, "containerd and containers need root")
	containerd := testutil.NeedTool(t, "containerd")
	ctr := testutil.NeedTool(t, "ctr")
	rt := berthRuntime(t)
	archive := rtArchive(t)

	ns := "berthtest"
	c, dir := startContainerd(t, containerd, ctr, "ctd-", ns, archive)
	run := func(id string, args ...string) result {
		return runCmd(t, nil, ctr, c(append([]string{"run", "--rm", "--runc-binary", rt, rtImage, id}, args...)...)...)
	}

	if r := run("hello", "echo", "hello"); r.code != 0 || r.stdout != "hello\n" {
		t.Fatalf("ctr run echo hello: exit %d, %q, %s", r.code, r.stdout, r.stderr)
	}
	if r := run("exit3", "sh", "-c", "exit 3"); r.code != 3 {
		t.Fatalf("ctr run exit 3: exit %d, %s", r.code, r.stderr)
	}
	if r := run("missing", "no-such-command"); r.code == 0 || !strings.Contains(r.stderr, "no-such-command") {
		t.Fatalf("ctr run of a missing command: exit %d, %q", r.code, r.stderr)
	}

	mustCmd(t, ctr, c("run", "-d", "--runc-binary", rt, rtImage, "bg", "sh", "-c", "trap 'exit 42' TERM; while true; do sleep 1; done")...)
	r := runCmd(t, nil, ctr, c("task", "exec", "--exec-id", "e1", "bg", "sh", "-c", "echo exec-out; exit 4")...)
	if r.code != 4 || r.stdout != "exec-out\n" {
		t.Fatalf("ctr task exec: exit %d, %q, %s", r.code, r.stdout, r.stderr)
	}
	out := mustCmd(t, ctr, c("task", "ps", "bg")...)
	if n := len(strings.Split(strings.TrimSpace(out), "\n")); n < 2 {
		t.Fatalf("ctr task ps: %q", out)
	}
	mustCmd(t, ctr, c("task", "pause", "bg")...)
	if out := mustCmd(t, ctr, c("task", "ls")...); !strings.Contains(out, "PAUSED") {
		t.Fatalf("after pause: %q", out)
	}
	mustCmd(t, ctr, c("task", "resume", "bg")...)
	term, code := onPty(t, ctr, c("task", "exec", "-t", "--exec-id", "e2", "bg", "sh", "-c", "tty; exit 6")...)
	if code != 6 || !strings.Contains(term, "/dev/pts/") {
		t.Fatalf("ctr task exec -t: exit %d, %q", code, term)
	}
	mustCmd(t, ctr, c("task", "kill", "bg")...)
	waitFor(t, "the task to stop", func() bool {
		out, _ := exec.Command(ctr, c("task", "ls")...).Output()
		return strings.Contains(string(out), "STOPPED")
	})
	mustCmd(t, ctr, c("task", "rm", "bg")...)
	mustCmd(t, ctr, c("container", "rm", "bg")...)

	term, code = onPty(t, ctr, c("run", "--rm", "-t", "--runc-binary", rt, rtImage, "tty1", "sh", "-c", "tty; exit 2")...)
	if code != 2 || !strings.Contains(term, "/dev/pts/0") {
		t.Fatalf("ctr run -t: exit %d, %q", code, term)
	}
	// Nothing of berth-runtime's is left under the shim's state root.
	if ents, _ := os.ReadDir(filepath.Join(dir, "state", "io.containerd.runtime.v2.task", ns)); len(ents) != 0 {
		t.Fatalf("tasks left: %v", ents)
	}
}

// startDockerd starts a dockerd of the test's own (data root, exec root,
// socket and pid file in a fresh directory) with daemonJSON as its
// configuration and the test image loaded. With netns "" it has no
// bridge and no iptables; with the name of a network namespace under
// /run/netns it runs there (nsenter) with its default bridge, iptables
// rules and docker-proxy, all of which stay in that namespace. It
// returns docker's global flags for it prepended to a command, and the
// daemon's directory. When the test ends, whatever containers are left
// are removed before the daemon stops.
func startDockerd(t *testing.T, dockerd, docker, prefix, daemonJSON, archive, netns string) (func(args ...string) []string, string) {
	t.Helper()
	dir := daemonDir(t, prefix, "docker")
	sock := "unix://" + filepath.Join(dir, "d.sock")
	cfg := filepath.Join(dir, "daemon.json")
	if err := os.WriteFile(cfg, []byte(daemonJSON), 0o644); err != nil {
		t.Fatal(err)
	}
	dk := func(args ...string) []string { return append([]string{"-H", sock}, args...) }
	args := []string{"--config-file", cfg, "--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
		"-H", sock, "--pidfile", filepath.Join(dir, "d.pid")}
	var via []string
	if netns == "" {
		args = append(args, "--bridge", "none", "--iptables=false", "--ip-masq=false")
	} else {
		via = []string{"nsenter", "--net=/run/netns/" + netns}
	}
	d := startDaemon(t, dir, via, dockerd, func() bool {
		return exec.Command(docker, dk("version")...).Run() == nil
	}, args...)
	// Registered after the daemon's stop, so it runs first.
	t.Cleanup(func() {
		out, _ := exec.Command(docker, dk("ps", "-aq", "--no-trunc")...).Output()
		for _, id := range strings.Fields(string(out)) {
			exec.Command(docker, dk("rm", "-f", id)...).Run()
		}
		if t.Failed() {
			t.Logf("dockerd log:\n%s", d.tail())
		}
	})
	mustCmd(t, docker, dk("load", "-i", archive)...)
	return dk, dir
}

// TestDockerWithBerthRuntime: dockerd (with its own containerd) runs
// containers through berth-runtime registered as a runtime: output, exit
// codes, run -d + exec + logs + stop + rm, a memory limit in the cgroup.
func TestDockerWithBerthRuntime(t *testing.T) {
	testutil.NeedRoot(t, "dockerd and containers need root")
	dockerd := testutil.NeedTool(t, "dockerd")
	docker := "/usr/bin/docker" // docker.io's client, whatever else is on PATH
	if _, err := os.Stat(docker); err != nil {
		testutil.Missing(t, "needs docker.io's /usr/bin/docker")
	}
	rt := berthRuntime(t)
	archive := rtArchive(t)

	dk, _ := startDockerd(t, dockerd, docker, "dk-", fmt.Sprintf(`{"runtimes": {"berth": {"path": %q}}}`, rt), archive, "")
	run := func(args ...string) result {
		return runCmd(t, nil, docker, dk(append([]string{"run", "--rm", "--runtime", "berth", rtImage}, args...)...)...)
	}
	if r := run("echo", "hi"); r.code != 0 || r.stdout != "hi\n" {
		t.Fatalf("docker run echo hi: exit %d, %q, %s", r.code, r.stdout, r.stderr)
	}
	if r := run("sh", "-c", "exit 3"); r.code != 3 {
		t.Fatalf("docker run exit 3: exit %d, %s", r.code, r.stderr)
	}
	if r := run("no-such-command"); r.code != 127 {
		t.Fatalf("docker run of a missing command: exit %d, %s", r.code, r.stderr)
	}

	id := strings.TrimSpace(mustCmd(t, docker, dk("run", "-d", "--runtime", "berth", "--memory", "64m", rtImage,
		"sh", "-c", `echo started; trap "echo bye; exit 0" TERM; while true; do sleep 1; done`)...))
	r := runCmd(t, nil, docker, dk("exec", id, "sh", "-c", "cat /sys/fs/cgroup/memory/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null; exit 5")...)
	if r.code != 5 || !strings.Contains(r.stdout, "67108864") {
		t.Fatalf("docker exec: exit %d, %q, %s", r.code, r.stdout, r.stderr)
	}
	mustCmd(t, docker, dk("stop", id)...)
	if code := strings.TrimSpace(mustCmd(t, docker, dk("inspect", "-f", "{{.State.ExitCode}}", id)...)); code != "0" {
		t.Fatalf("exit code after stop: %s", code)
	}
	if out := mustCmd(t, docker, dk("logs", id)...); out != "started\nbye\n" {
		t.Fatalf("docker logs: %q", out)
	}
	mustCmd(t, docker, dk("rm", id)...)

	term, code := onPty(t, docker, dk("run", "--rm", "-t", "--runtime", "berth", rtImage, "sh", "-c", "tty; exit 2")...)
	if code != 2 || !strings.Contains(term, "/dev/pts/0") {
		t.Fatalf("docker run -t: exit %d, %q", code, term)
	}
}
