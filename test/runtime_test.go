package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testutil"
)

// Tests of berth-runtime: its own command line with a bundle, and real
// clients (containerd with ctr, dockerd with docker) driving it as their
// OCI runtime, each daemon started by the test on its own sockets and
// directories and stopped at the end.

var (
	runtimeOnce sync.Once
	runtimeBin  string
	runtimeErr  error
)

// berthRuntime builds bin/berth-runtime once for the whole package.
func berthRuntime(t *testing.T) string {
	t.Helper()
	runtimeOnce.Do(func() {
		runtimeBin = filepath.Join(filepath.Dir(berthBin), "berth-runtime")
		build := exec.Command("go", "build", "-o", runtimeBin, "../cmd/berth-runtime")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			runtimeErr = fmt.Errorf("build berth-runtime: %v\n%s", err, out)
		}
	})
	if runtimeErr != nil {
		t.Fatal(runtimeErr)
	}
	return runtimeBin
}

// runCmd runs a command with a two-minute limit and returns its stdout,
// stderr and exit status.
func runCmd(t *testing.T, stdin []byte, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: still running after two minutes", name, strings.Join(args, " "))
	}
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("%s: %v", name, err)
	}
	return result{stdout: out.String(), stderr: errb.String(), code: cmd.ProcessState.ExitCode()}
}

// mustCmd runs a command and fails the test unless it exits 0.
func mustCmd(t *testing.T, name string, args ...string) string {
	t.Helper()
	r := runCmd(t, nil, name, args...)
	if r.code != 0 {
		t.Fatalf("%s %s: exit %d\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// busyboxBundle writes a bundle (config.json from berth-runtime spec and
// a busybox rootfs) whose process runs args.
func busyboxBundle(t *testing.T, rt string, edit func(spec map[string]any), args ...string) string {
	t.Helper()
	dir := t.TempDir()
	mustCmd(t, rt, "spec", "--bundle", dir)
	if err := os.Rename(testutil.BusyboxRootfs(t), filepath.Join(dir, "rootfs")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var spec map[string]any
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	proc := spec["process"].(map[string]any)
	proc["terminal"] = false
	proc["args"] = args
	spec["root"].(map[string]any)["readonly"] = false
	if edit != nil {
		edit(spec)
	}
	if b, err = json.Marshal(spec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// ociState runs `state` and decodes it.
func ociState(t *testing.T, rt, root, id string) map[string]any {
	t.Helper()
	var st map[string]any
	if err := json.Unmarshal([]byte(mustCmd(t, rt, "--root", root, "state", id)), &st); err != nil {
		t.Fatalf("state %s: %v", id, err)
	}
	return st
}

// TestRuntimeLifecycle drives berth-runtime's own verbs as a shim would:
// create (a separate process from start), state, start, exec, ps, pause,
// update, kill, delete; the pid from --pid-file is the workload's.
func TestRuntimeLifecycle(t *testing.T) {
	rt := berthRuntime(t)
	root := runtimeRoot(t)
	hookOut := filepath.Join(t.TempDir(), "hooks")
	bundle := busyboxBundle(t, rt, func(spec map[string]any) {
		spec["hostname"] = "rtbox"
		spec["linux"].(map[string]any)["resources"] = map[string]any{"memory": map[string]any{"limit": 64 << 20}}
		hook := func(name string) []any {
			return []any{map[string]any{"path": "/bin/sh", "args": []string{"sh", "-c", "cat >> " + hookOut + "; echo ' " + name + "' >> " + hookOut}}}
		}
		spec["hooks"] = map[string]any{"createRuntime": hook("createRuntime"), "poststart": hook("poststart"), "poststop": hook("poststop")}
	}, "sh", "-c", "read line; echo got $line; exit 7")
	id := "lifecycle"
	pidFile := filepath.Join(t.TempDir(), "pid")

	stdinW, outR, pid := createPiped(t, rt, root, bundle, id, pidFile)
	mustCmd(t, rt, "--root", root, "start", id)
	if s := ociState(t, rt, root, id)["status"]; s != "running" {
		t.Fatalf("after start: status %v", s)
	}
	if r := runCmd(t, nil, rt, "--root", root, "start", id); r.code == 0 || !strings.Contains(r.stderr, "is running, cannot become running") {
		t.Fatalf("second start: exit %d, %q", r.code, r.stderr)
	}
	if out := mustCmd(t, rt, "--root", root, "exec", id, "hostname"); out != "rtbox\n" {
		t.Fatalf("exec hostname: %q", out)
	}
	if r := runCmd(t, nil, rt, "--root", root, "exec", id, "sh", "-c", "exit 5"); r.code != 5 {
		t.Fatalf("exec exit 5: got %d (%s)", r.code, r.stderr)
	}
	var pids []int
	if err := json.Unmarshal([]byte(mustCmd(t, rt, "--root", root, "ps", "--format", "json", id)), &pids); err != nil || len(pids) != 1 {
		t.Fatalf("ps: %v %v", pids, err)
	}
	mustCmd(t, rt, "--root", root, "pause", id)
	if s := ociState(t, rt, root, id)["status"]; s != "paused" {
		t.Fatalf("after pause: status %v", s)
	}
	mustCmd(t, rt, "--root", root, "resume", id)
	mustCmd(t, rt, "--root", root, "update", "--memory", "32m", id)
	var ev struct {
		Type string
		Data struct{ Pids struct{ Current int } }
	}
	if err := json.Unmarshal([]byte(mustCmd(t, rt, "--root", root, "events", "--stats", id)), &ev); err != nil || ev.Type != "stats" || ev.Data.Pids.Current != 1 {
		t.Fatalf("events --stats: %+v %v", ev, err)
	}
	if r := runCmd(t, nil, rt, "--root", root, "delete", id); r.code == 0 {
		t.Fatal("delete of a running container succeeded")
	}

	// The workload reads its stdin and exits 7; the pid is its own.
	stdinW.Write([]byte("ping\n"))
	stdinW.Close()
	out, _ := readAll(outR)
	if out != "got ping\n" {
		t.Fatalf("workload output %q", out)
	}
	waitGone(t, pid)
	if s := ociState(t, rt, root, id)["status"]; s != "stopped" {
		t.Fatalf("after exit: status %v", s)
	}
	mustCmd(t, rt, "--root", root, "delete", id)
	if _, err := os.Stat(filepath.Join(root, id)); !os.IsNotExist(err) {
		t.Fatalf("state left behind: %v", err)
	}
	hooks, _ := os.ReadFile(hookOut)
	for _, h := range []string{"createRuntime", "poststart", "poststop"} {
		if !strings.Contains(string(hooks), `"id":"lifecycle"`) || !strings.Contains(string(hooks), " "+h) {
			t.Fatalf("hook %s did not get the state: %s", h, hooks)
		}
	}
}

// TestRuntimeRunAndErrors: run's exit status, a missing command failing
// create with nothing left, VM isolation refused, json log for containerd.
func TestRuntimeRunAndErrors(t *testing.T) {
	rt := berthRuntime(t)
	root := runtimeRoot(t)
	bundle := busyboxBundle(t, rt, nil, "sh", "-c", "echo hi; exit 3")
	r := runCmd(t, nil, rt, "--root", root, "run", "--bundle", bundle, "r1")
	if r.code != 3 || r.stdout != "hi\n" {
		t.Fatalf("run: exit %d, %q, %s", r.code, r.stdout, r.stderr)
	}
	bad := busyboxBundle(t, rt, nil, "no-such-command")
	logFile := filepath.Join(t.TempDir(), "log.json")
	r = runCmd(t, nil, rt, "--root", root, "--log", logFile, "--log-format", "json", "create", "--bundle", bad, "r2")
	if r.code == 0 || !strings.Contains(r.stderr, "no-such-command") {
		t.Fatalf("create with a missing command: exit %d, %q", r.code, r.stderr)
	}
	var entry struct{ Level, Msg string }
	b, _ := os.ReadFile(logFile)
	if err := json.Unmarshal(b, &entry); err != nil || entry.Level != "error" || !strings.Contains(entry.Msg, "not found") {
		t.Fatalf("log: %s (%v)", b, err)
	}
	if out := mustCmd(t, rt, "--root", root, "list", "-q"); out != "" {
		t.Fatalf("left behind: %q", out)
	}
	r = runCmd(t, nil, rt, "--root", root, "--isolation=gvisor", "create", "--bundle", bundle, "r3")
	if r.code == 0 || !strings.Contains(r.stderr, "want container or vm") {
		t.Fatalf("--isolation=gvisor: exit %d, %q", r.code, r.stderr)
	}
	r = runCmd(t, nil, rt, "--root", root, "--systemd-cgroup", "state", "x")
	if r.code == 0 || !strings.Contains(r.stderr, "systemd") {
		t.Fatalf("--systemd-cgroup: exit %d, %q", r.code, r.stderr)
	}
}

// readAll reads f to its end.
func readAll(f *os.File) (string, error) {
	var b bytes.Buffer
	_, err := b.ReadFrom(f)
	f.Close()
	return b.String(), err
}

// waitGone waits until pid no longer exists (or is a zombie).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("process %d to end", pid), func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		i := bytes.LastIndexByte(b, ')')
		return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
	})
}

// runtimeRoot is a state root for one test; at its end the empty cgroup
// parent of berth-runtime's default cgroups is removed.
func runtimeRoot(t *testing.T) string {
	t.Cleanup(func() {
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/berth-runtime")
		for _, d := range append(dirs, "/sys/fs/cgroup/berth-runtime") {
			os.Remove(d) // only when empty
		}
	})
	return t.TempDir()
}

// searchableBundle lets a user namespace's root (an unprivileged host
// uid) reach the bundle's root file system.
func searchableBundle(t *testing.T, bundle string) {
	t.Helper()
	for d := bundle; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// createPiped runs `create` with a pid file and the workload's stdin and
// stdout on pipes the test holds, checks the container is created with
// the pid the file names, and deletes it when the test ends. It returns
// the pipes' ends and the pid.
func createPiped(t *testing.T, rt, root, bundle, id, pidFile string) (stdin, stdout *os.File, pid int) {
	t.Helper()
	stdinR, stdinW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	create := exec.Command(rt, "--root", root, "create", "--bundle", bundle, "--pid-file", pidFile, id)
	create.Stdin, create.Stdout = stdinR, outW
	// A file, not a buffer: the workload inherits create's stderr, and
	// os/exec would wait for a pipe to close.
	errf, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	create.Stderr = errf
	err = create.Run()
	stdinR.Close()
	outW.Close()
	if err != nil {
		b, _ := os.ReadFile(errf.Name())
		t.Fatalf("create: %v: %s", err, b)
	}
	t.Cleanup(func() { runCmd(t, nil, rt, "--root", root, "delete", "--force", id) })
	st := ociState(t, rt, root, id)
	if st["status"] != "created" {
		t.Fatalf("after create: status %v", st["status"])
	}
	b, _ := os.ReadFile(pidFile)
	if fmt.Sprint(st["pid"]) != strings.TrimSpace(string(b)) {
		t.Fatalf("state pid %v, pid file %q", st["pid"], b)
	}
	return stdinW, outR, int(st["pid"].(float64))
}

// createQuiet runs `create` with the workload's stdio on /dev/null (a
// pipe would be held open by the workload, and waited for).
func createQuiet(t *testing.T, rt, root, bundle, id string) {
	t.Helper()
	errf, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	cmd := exec.Command(rt, "--root", root, "create", "--bundle", bundle, id)
	cmd.Stderr = errf
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(errf.Name())
		t.Fatalf("create %s: %v: %s", id, err, b)
	}
}

func sameNS(t *testing.T, a, b string) bool {
	t.Helper()
	la, err := os.Readlink(a)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := os.Readlink(b)
	if err != nil {
		t.Fatal(err)
	}
	return la == lb
}

// TestRuntimeNoNamespaces: a bundle without namespaces runs in the
// host's (mount namespace included) without mounting anything there;
// start and exec see the bundle's root.
func TestRuntimeNoNamespaces(t *testing.T) {
	rt := berthRuntime(t)
	root := runtimeRoot(t)
	bundle := busyboxBundle(t, rt, func(spec map[string]any) {
		spec["linux"].(map[string]any)["namespaces"] = []any{}
		delete(spec, "hostname")
	}, "sleep", "1000")
	if err := os.WriteFile(filepath.Join(bundle, "rootfs/etc/marker"), []byte("bundle root\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	id := "nons"
	createQuiet(t, rt, root, bundle, id)
	defer runCmd(t, nil, rt, "--root", root, "delete", "--force", id)
	pid := int(ociState(t, rt, root, id)["pid"].(float64))
	for _, ns := range []string{"cgroup", "ipc", "mnt", "net", "pid", "user", "uts"} {
		if !sameNS(t, fmt.Sprintf("/proc/%d/ns/%s", pid, ns), "/proc/self/ns/"+ns) {
			t.Errorf("namespace %s is not the host's", ns)
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if bytes.Contains(mounts, []byte(bundle)) {
		t.Fatalf("the container's mounts are in the host's mount table:\n%s", mounts)
	}
	mustCmd(t, rt, "--root", root, "start", id)
	if out := mustCmd(t, rt, "--root", root, "exec", id, "cat", "/etc/marker"); out != "bundle root\n" {
		t.Fatalf("exec: %q", out)
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/etc/marker", pid)); err != nil || string(b) != "bundle root\n" {
		t.Fatalf("the workload's root: %q %v", b, err)
	}
	mustCmd(t, rt, "--root", root, "delete", "--force", id)
	waitGone(t, pid)
	if mounts, _ := os.ReadFile("/proc/self/mountinfo"); bytes.Contains(mounts, []byte(bundle)) {
		t.Fatal("mounts left in the host's mount table")
	}
}

// TestRuntimeUserNamespace: a new user namespace with mappings written
// before the init goes on; the other namespaces (cgroup too) exist once
// create returns; exec joins the user namespace.
func TestRuntimeUserNamespace(t *testing.T) {
	rt := berthRuntime(t)
	root := runtimeRoot(t)
	edit := func(spec map[string]any) {
		l := spec["linux"].(map[string]any)
		l["namespaces"] = append(l["namespaces"].([]any), map[string]any{"type": "user"}, map[string]any{"type": "cgroup"})
		l["uidMappings"] = []any{map[string]any{"containerID": 0, "hostID": 100000, "size": 65536}}
		l["gidMappings"] = []any{map[string]any{"containerID": 0, "hostID": 100000, "size": 65536}}
	}
	bundle := busyboxBundle(t, rt, edit, "sh", "-c", "id -u; cat /proc/self/uid_map; touch /tmp/f; stat -c %u /tmp/f")
	searchableBundle(t, bundle)
	if err := os.Chmod(filepath.Join(bundle, "rootfs/tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	r := runCmd(t, nil, rt, "--root", root, "run", "--bundle", bundle, "userns1")
	if r.code != 0 || strings.Join(strings.Fields(r.stdout), " ") != "0 0 100000 65536 0" {
		t.Fatalf("run: exit %d, %q, %s", r.code, r.stdout, r.stderr)
	}
	// The file the container's root made belongs to the mapped uid.
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(bundle, "rootfs/tmp/f"), &st); err != nil || st.Uid != 100000 {
		t.Fatalf("owner on the host: %d %v", st.Uid, err)
	}

	bundle = busyboxBundle(t, rt, edit, "sleep", "1000")
	searchableBundle(t, bundle)
	id := "userns2"
	createQuiet(t, rt, root, bundle, id)
	defer runCmd(t, nil, rt, "--root", root, "delete", "--force", id)
	pid := int(ociState(t, rt, root, id)["pid"].(float64))
	for _, ns := range []string{"user", "cgroup", "mnt", "pid"} {
		if sameNS(t, fmt.Sprintf("/proc/%d/ns/%s", pid, ns), "/proc/self/ns/"+ns) {
			t.Errorf("after create: namespace %s is the host's", ns)
		}
	}
	if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/gid_map", pid)); strings.Join(strings.Fields(string(b)), " ") != "0 100000 65536" {
		t.Fatalf("gid_map %q", b)
	}
	mustCmd(t, rt, "--root", root, "start", id)
	// exec joins the container's user namespace: root there, not the
	// host's root.
	out := mustCmd(t, rt, "--root", root, "exec", id, "sh", "-c", "id -u; cat /proc/self/uid_map; readlink /proc/self/ns/user")
	userns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", pid))
	if got := strings.Join(strings.Fields(out), " "); got != "0 0 100000 65536 "+userns {
		t.Fatalf("exec: %q", got)
	}
}

// TestRuntimeJoinMountNamespace: a mount namespace given by path is
// joined and the root is set up in it.
func TestRuntimeJoinMountNamespace(t *testing.T) {
	rt := berthRuntime(t)
	root := runtimeRoot(t)
	h := exec.Command("/bin/sleep", "1000")
	h.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { h.Process.Kill(); h.Wait() }()
	nsPath := fmt.Sprintf("/proc/%d/ns/mnt", h.Process.Pid)
	bundle := busyboxBundle(t, rt, func(spec map[string]any) {
		l := spec["linux"].(map[string]any)
		for _, ns := range l["namespaces"].([]any) {
			if m := ns.(map[string]any); m["type"] == "mount" {
				m["path"] = nsPath
			}
		}
	}, "sleep", "1000")
	id := "joinmnt"
	createQuiet(t, rt, root, bundle, id)
	defer runCmd(t, nil, rt, "--root", root, "delete", "--force", id)
	pid := int(ociState(t, rt, root, id)["pid"].(float64))
	if !sameNS(t, fmt.Sprintf("/proc/%d/ns/mnt", pid), nsPath) {
		t.Fatal("the container is not in the joined mount namespace")
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/root/bin/busybox", pid)); err != nil {
		t.Fatalf("the container's root: %v", err)
	}
	if mounts, _ := os.ReadFile("/proc/self/mountinfo"); bytes.Contains(mounts, []byte(bundle)) {
		t.Fatal("the root was mounted in the host's mount namespace")
	}
}

// TestRuntimeDeviceRules: linux.resources.devices become the container's
// device cgroup rules, in order, followed by the standard devices; update
// adds to them.
func TestRuntimeDeviceRules(t *testing.T) {
	if _, err := os.Stat("/sys/fs/cgroup/devices/devices.list"); err != nil {
		t.Skip("needs the cgroup v1 devices controller")
	}
	rt := berthRuntime(t)
	root := runtimeRoot(t)
	bundle := busyboxBundle(t, rt, func(spec map[string]any) {
		spec["linux"].(map[string]any)["resources"] = map[string]any{"devices": []any{
			map[string]any{"allow": false, "access": "rwm"},
			map[string]any{"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rw"},
			map[string]any{"allow": true, "type": "b", "major": 8, "access": "r"},
		}}
		c := spec["process"].(map[string]any)["capabilities"].(map[string]any)
		for _, set := range []string{"bounding", "effective", "permitted"} {
			c[set] = append(c[set].([]any), "CAP_MKNOD")
		}
	}, "sleep", "1000")
	id := "devrules"
	createQuiet(t, rt, root, bundle, id)
	defer runCmd(t, nil, rt, "--root", root, "delete", "--force", id)
	list := "/sys/fs/cgroup/devices/berth-runtime/" + id + "/devices.list"
	b, _ := os.ReadFile(list)
	if !strings.HasPrefix(string(b), "c 10:229 rw\nb 8:* r\nc 1:3 rwm\n") || !strings.Contains(string(b), "c 136:* rwm\n") || strings.Contains(string(b), "a ") {
		t.Fatalf("devices.list after create: %q", b)
	}
	mustCmd(t, rt, "--root", root, "start", id)
	// The standard devices work; others are denied, mknod included.
	if out := mustCmd(t, rt, "--root", root, "exec", id, "sh", "-c", "head -c 3 /dev/zero | wc -c; echo x > /dev/null && echo null"); strings.Join(strings.Fields(out), " ") != "3 null" {
		t.Fatalf("standard devices: %q", out)
	}
	if r := runCmd(t, nil, rt, "--root", root, "exec", id, "mknod", "/tmp/kmsg", "c", "1", "11"); r.code == 0 {
		t.Fatal("mknod of a denied device was allowed")
	}
	res := filepath.Join(t.TempDir(), "res.json")
	os.WriteFile(res, []byte(`{"devices":[{"allow":true,"type":"c","major":1,"minor":11,"access":"m"}],"cpu":{"cpus":"0"}}`), 0o644)
	mustCmd(t, rt, "--root", root, "update", "--resources", res, id)
	if b, _ := os.ReadFile(list); !strings.Contains(string(b), "c 1:11 m\n") {
		t.Fatalf("devices.list after update: %q", b)
	}
	if r := runCmd(t, nil, rt, "--root", root, "exec", id, "mknod", "/tmp/kmsg", "c", "1", "11"); r.code != 0 {
		t.Fatalf("mknod after update: exit %d %s", r.code, r.stderr)
	}
	if b, _ := os.ReadFile("/sys/fs/cgroup/cpuset/berth-runtime/" + id + "/cpuset.cpus"); strings.TrimSpace(string(b)) != "0" {
		t.Fatalf("cpuset.cpus after update: %q", b)
	}
}

// Block I/O throttling from the bundle lands in the container's blkio
// cgroup; a weight the host's I/O schedulers cannot take is refused in
// one line.
func TestRuntimeBlockIO(t *testing.T) {
	if _, err := os.Stat("/sys/fs/cgroup/blkio/blkio.throttle.read_bps_device"); err != nil {
		t.Skip("needs the cgroup v1 blkio controller with throttling")
	}
	var major, minor int
	disks, _ := filepath.Glob("/sys/block/*/dev")
	for _, d := range disks {
		b, _ := os.ReadFile(d)
		if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &major, &minor); err == nil && major != 0 && !strings.Contains(d, "/loop") && !strings.Contains(d, "/zram") {
			break
		}
		major = 0
	}
	if major == 0 {
		t.Skip("no block device to throttle")
	}
	rt := berthRuntime(t)
	root := runtimeRoot(t)
	bundle := busyboxBundle(t, rt, func(spec map[string]any) {
		spec["linux"].(map[string]any)["resources"] = map[string]any{"blockIO": map[string]any{
			"throttleReadBpsDevice":   []any{map[string]any{"major": major, "minor": minor, "rate": 1048576}},
			"throttleWriteIOPSDevice": []any{map[string]any{"major": major, "minor": minor, "rate": 100}},
		}}
	}, "true")
	id := "blkio"
	createQuiet(t, rt, root, bundle, id)
	defer runCmd(t, nil, rt, "--root", root, "delete", "--force", id)
	dev := fmt.Sprintf("%d:%d", major, minor)
	dir := "/sys/fs/cgroup/blkio/berth-runtime/" + id
	if b, _ := os.ReadFile(dir + "/blkio.throttle.read_bps_device"); string(b) != dev+" 1048576\n" {
		t.Fatalf("read_bps_device: %q", b)
	}
	if b, _ := os.ReadFile(dir + "/blkio.throttle.write_iops_device"); string(b) != dev+" 100\n" {
		t.Fatalf("write_iops_device: %q", b)
	}
	mustCmd(t, rt, "--root", root, "delete", "--force", id)
	if _, err := os.Stat(dir); err == nil {
		t.Fatal("the blkio cgroup outlived delete")
	}
	if _, err := os.Stat("/sys/fs/cgroup/blkio/blkio.leaf_weight"); err == nil {
		return // CFQ: leaf weights exist here
	}
	leaf := busyboxBundle(t, rt, func(spec map[string]any) {
		spec["linux"].(map[string]any)["resources"] = map[string]any{"blockIO": map[string]any{"leafWeight": 300}}
	}, "true")
	r := runCmd(t, nil, rt, "--root", root, "create", "--bundle", leaf, "leaf")
	if r.code == 0 || !strings.Contains(r.stderr, "blkio.leaf_weight") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("leaf weight without CFQ: exit %d, %q", r.code, r.stderr)
	}
	if out := mustCmd(t, rt, "--root", root, "list", "-q"); out != "" {
		t.Fatalf("a refused create left %q", out)
	}
}

// The hooks the runtime spec runs in the container's namespaces do:
// createContainer after createRuntime, before pivot_root (a host path
// runs, in the container's mount and UTS namespaces), startContainer in
// the container just before the workload (a path of the container's
// root); a failing startContainer hook fails start and stops the
// container.
func TestRuntimeHookNamespaces(t *testing.T) {
	rt := berthRuntime(t)
	root := runtimeRoot(t)
	out := t.TempDir()
	sh := func(script string) []any {
		return []any{map[string]any{"path": "/bin/sh", "args": []string{"sh", "-c", script}}}
	}
	bundle := busyboxBundle(t, rt, func(spec map[string]any) {
		spec["hostname"] = "hookbox"
		spec["hooks"] = map[string]any{
			"createRuntime": sh("readlink /proc/self/ns/mnt > " + out + "/cr"),
			"createContainer": sh("test -f " + out + "/cr && echo after-createRuntime > " + out + "/cc; " +
				"readlink /proc/self/ns/mnt /proc/self/ns/uts >> " + out + "/cc; hostname >> " + out + "/cc; cat > " + out + "/cc.state"),
			"startContainer": sh("hostname > /dev/shm/started; cat > /dev/shm/started.state"),
		}
	}, "sleep", "1000")
	id := "hookns"
	createQuiet(t, rt, root, bundle, id)
	defer runCmd(t, nil, rt, "--root", root, "delete", "--force", id)
	pid := int(ociState(t, rt, root, id)["pid"].(float64))
	ns := func(p, kind string) string {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%s/ns/%s", p, kind))
		return l
	}
	self := strconv.Itoa(os.Getpid())
	if b, _ := os.ReadFile(out + "/cr"); strings.TrimSpace(string(b)) != ns(self, "mnt") {
		t.Fatalf("createRuntime ran in mount namespace %q, want the runtime's %q", b, ns(self, "mnt"))
	}
	want := fmt.Sprintf("after-createRuntime\n%s\n%s\nhookbox\n", ns(strconv.Itoa(pid), "mnt"), ns(strconv.Itoa(pid), "uts"))
	if b, _ := os.ReadFile(out + "/cc"); string(b) != want {
		t.Fatalf("createContainer hook saw:\n%s\nwant (the container's namespaces, after createRuntime):\n%s", b, want)
	}
	if b, _ := os.ReadFile(out + "/cc.state"); !strings.Contains(string(b), fmt.Sprintf(`"pid":%d`, pid)) || !strings.Contains(string(b), `"status":"creating"`) {
		t.Fatalf("createContainer state: %s", b)
	}
	mustCmd(t, rt, "--root", root, "start", id)
	if got := mustCmd(t, rt, "--root", root, "exec", id, "cat", "/dev/shm/started", "/dev/shm/started.state"); !strings.HasPrefix(got, "hookbox\n") || !strings.Contains(got, `"id":"hookns"`) || !strings.Contains(got, `"status":"created"`) {
		t.Fatalf("startContainer hook (in the container): %q", got)
	}

	bad := busyboxBundle(t, rt, func(spec map[string]any) {
		spec["hooks"] = map[string]any{"startContainer": sh("echo no luck; exit 3")}
	}, "sleep", "1000")
	createQuiet(t, rt, root, bad, "hookfail")
	defer runCmd(t, nil, rt, "--root", root, "delete", "--force", "hookfail")
	r := runCmd(t, nil, rt, "--root", root, "start", "hookfail")
	if r.code == 0 || !strings.Contains(r.stderr, "startContainer hook") || !strings.Contains(r.stderr, "no luck") {
		t.Fatalf("start with a failing startContainer hook: exit %d, %q", r.code, r.stderr)
	}
	waitFor(t, "the container to stop", func() bool { return ociState(t, rt, root, "hookfail")["status"] == "stopped" })
}
