package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/testutil"
)

// Tests of berth-runtime's VM isolation: its own verbs on a bundle
// annotated io.berth.isolation=vm, containerd's runc shim with the
// annotation (ctr run --annotation), and dockerd with a second runtime
// entry whose runtimeArgs are --isolation=vm. Each boots real guests
// (QEMU, the guest kernel, berth-agent).

// needRuntimeVM skips where guests cannot boot; it returns the host's
// kernel release, which a guest's `uname -r` must not show.
func needRuntimeVM(t *testing.T) string {
	t.Helper()
	testutil.NeedRoot(t, "berth-runtime needs root")
	needVM(t)
	testutil.NeedTool(t, "mkfs.erofs")
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	return unix.ByteSliceToString(u.Release[:])
}

// vmLeftovers lists what VM id left on the host: processes (QEMU,
// virtiofsd, owner, relays) naming its work directory or state
// directory, and the work directory itself.
func vmLeftovers(id, stateDir string) []string {
	data := os.Getenv("BERTH_ROOT")
	if data == "" {
		data = "/var/lib/berth"
	}
	work := filepath.Join(data, "vm", "runtime", id+"-")
	var left []string
	dirs, _ := filepath.Glob(work + "*")
	left = append(left, dirs...)
	// Its cgroup, wherever the spec put it (/berth-runtime/ID, a
	// containerd namespace, /docker/ID), in every hierarchy.
	for _, pattern := range []string{"/sys/fs/cgroup/*/*/" + id, "/sys/fs/cgroup/*/" + id} {
		cgs, _ := filepath.Glob(pattern)
		left = append(left, cgs...)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmd, work) || (stateDir != "" && strings.Contains(cmd, stateDir)) {
			left = append(left, filepath.Base(filepath.Dir(p))+": "+cmd)
		}
	}
	return left
}

// checkNoVMLeftovers fails the test if VM id left anything behind (a
// process may take a moment to be reaped by its subreaper).
func checkNoVMLeftovers(t *testing.T, id, stateDir string) {
	t.Helper()
	waitFor(t, "VM "+id+" to leave nothing behind", func() bool { return len(vmLeftovers(id, stateDir)) == 0 })
	if stateDir != "" {
		if _, err := os.Stat(stateDir); !os.IsNotExist(err) {
			t.Fatalf("state directory %s left behind: %v", stateDir, err)
		}
	}
}

// vmRuntime is a berth-runtime-vm symlink to rt in a fresh directory:
// called by that name (as make install links it, for engines that take
// a binary but no flags), berth-runtime runs every bundle as a VM.
func vmRuntime(t *testing.T, rt string) string {
	t.Helper()
	vmrt := filepath.Join(t.TempDir(), "berth-runtime-vm")
	if err := os.Symlink(rt, vmrt); err != nil {
		t.Fatal(err)
	}
	return vmrt
}

func vmBundle(t *testing.T, rt string, edit func(spec map[string]any), args ...string) string {
	return busyboxBundle(t, rt, func(spec map[string]any) {
		spec["annotations"] = map[string]string{"io.berth.isolation": "vm"}
		if edit != nil {
			edit(spec)
		}
	}, args...)
}

// TestRuntimeVMLifecycle drives berth-runtime's verbs on a VM bundle as
// a shim would: create (the pid is the VM's owner, waiting for start),
// state, start, exec with and without --detach, ps, kill, delete; the
// workload's stdio is create's, its limits hold inside the guest, and
// nothing is left behind.
func TestRuntimeVMLifecycle(t *testing.T) {
	t.Parallel()
	host := needRuntimeVM(t)
	rt := berthRuntime(t)
	root := runtimeRoot(t)
	bundle := vmBundle(t, rt, func(spec map[string]any) {
		spec["hostname"] = "vmbox"
		spec["linux"].(map[string]any)["resources"] = map[string]any{"memory": map[string]any{"limit": 64 << 20}}
	}, "sh", "-c", "read line; echo got $line $(uname -r); exit 7")
	id := fmt.Sprintf("vmlife%d", os.Getpid())
	pidFile := filepath.Join(t.TempDir(), "pid")

	stdinW, outR, pid := createPiped(t, rt, root, bundle, id, pidFile)
	if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); !bytes.Contains(cmdline, []byte("__vm-owner")) {
		t.Fatalf("pid %d is not the VM owner: %q", pid, cmdline)
	}
	// A created VM is not running: pause is refused, as runc refuses it.
	if r := runCmd(t, nil, rt, "--root", root, "pause", id); r.code == 0 || !strings.Contains(r.stderr, "created") {
		t.Errorf("pause of a created VM: exit %d, %q; want a refusal naming its status", r.code, r.stderr)
	}
	if s := ociState(t, rt, root, id)["status"]; s != "created" {
		t.Fatalf("before start: status %v", s)
	}
	mustCmd(t, rt, "--root", root, "start", id)
	if s := ociState(t, rt, root, id)["status"]; s != "running" {
		t.Fatalf("after start: status %v", s)
	}
	// The bundle's disks are its own: no template is made of it.
	data := os.Getenv("BERTH_ROOT")
	if data == "" {
		data = "/var/lib/berth"
	}
	if tmpl, _ := filepath.Glob(filepath.Join(data, "vm", "runtime", id+"-*", "cache", "templates")); len(tmpl) > 0 {
		t.Errorf("berth-runtime made templates for its bundle: %v", tmpl)
	}
	if r := runCmd(t, nil, rt, "--root", root, "start", id); r.code == 0 || !strings.Contains(r.stderr, "is running, cannot become running") {
		t.Fatalf("second start: exit %d, %q", r.code, r.stderr)
	}
	if out := mustCmd(t, rt, "--root", root, "exec", id, "hostname"); out != "vmbox\n" {
		t.Fatalf("exec hostname: %q", out)
	}
	if out := mustCmd(t, rt, "--root", root, "exec", id, "uname", "-r"); strings.TrimSpace(out) == host || out == "" {
		t.Fatalf("exec uname -r: %q, the host's is %q", out, host)
	}
	// The workload's own cgroup is its /sys/fs/cgroup, as in a container.
	if out := mustCmd(t, rt, "--root", root, "exec", id, "cat", "/sys/fs/cgroup/memory.max"); out != "67108864\n" {
		t.Fatalf("memory limit in the guest: %q", out)
	}
	if r := runCmd(t, nil, rt, "--root", root, "exec", id, "sh", "-c", "echo err >&2; exit 5"); r.code != 5 || r.stderr != "err\n" {
		t.Fatalf("exec exit 5: got %d, %q", r.code, r.stderr)
	}
	if r := runCmd(t, nil, rt, "--root", root, "exec", id, "no-such-command"); r.code != 127 || !strings.Contains(r.stderr, "no-such-command") {
		t.Fatalf("exec of a missing command: exit %d, %q", r.code, r.stderr)
	}
	// --detach returns at once; the relay (the pid file's pid) holds the
	// exec's stdout, so runCmd returns once it ended.
	execPid := filepath.Join(t.TempDir(), "exec.pid")
	if r := runCmd(t, nil, rt, "--root", root, "exec", "--detach", "--pid-file", execPid, id, "sh", "-c", "echo detached"); r.code != 0 || r.stdout != "detached\n" {
		t.Fatalf("exec --detach: exit %d, %q, %s", r.code, r.stdout, r.stderr)
	}
	if b, err := os.ReadFile(execPid); err != nil || len(b) == 0 {
		t.Fatalf("exec --detach pid file: %q %v", b, err)
	}
	// Killing an exec's host process (as a shim does on a timeout) ends
	// its process in the guest.
	relay := exec.Command(rt, "--root", root, "exec", "--detach", "--pid-file", execPid, id, "sleep", "4321")
	if err := relay.Run(); err != nil {
		t.Fatalf("exec --detach sleep: %v", err)
	}
	b, _ := os.ReadFile(execPid)
	relayPid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	sleeping := func() bool {
		out := mustCmd(t, rt, "--root", root, "exec", id, "ps", "-o", "args")
		return strings.Contains(out, "sleep 4321")
	}
	waitFor(t, "the exec'd sleep to run", sleeping)
	syscall.Kill(relayPid, syscall.SIGKILL)
	waitFor(t, "the exec'd sleep to end with its relay", func() bool { return !sleeping() })

	// A signal sent to an exec's host process (ctr task kill --exec-id)
	// reaches its process in the guest, which may trap it.
	relay = exec.Command(rt, "--root", root, "exec", "--detach", "--pid-file", execPid, id,
		"sh", "-c", "trap 'echo TERM > /tmp/trapped; exit 7' TERM; while :; do sleep 0.1; done")
	if err := relay.Run(); err != nil {
		t.Fatalf("exec --detach trap: %v", err)
	}
	b, _ = os.ReadFile(execPid)
	relayPid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	waitFor(t, "the trapping exec to run", func() bool {
		return strings.Contains(mustCmd(t, rt, "--root", root, "exec", id, "ps", "-o", "args"), "trapped")
	})
	syscall.Kill(relayPid, syscall.SIGTERM)
	waitFor(t, "the exec'd process to trap SIGTERM", func() bool {
		return runCmd(t, nil, rt, "--root", root, "exec", id, "cat", "/tmp/trapped").stdout == "TERM\n"
	})
	waitFor(t, "the relay to end with its process", func() bool { return syscall.Kill(relayPid, 0) != nil })

	var pids []int
	if err := json.Unmarshal([]byte(mustCmd(t, rt, "--root", root, "ps", "--format", "json", id)), &pids); err != nil || len(pids) != 1 || pids[0] != pid {
		t.Fatalf("ps: %v %v", pids, err)
	}
	// pause freezes the VM's host cgroup: QEMU, and the guest with it.
	mustCmd(t, rt, "--root", root, "pause", id)
	if s := ociState(t, rt, root, id)["status"]; s != "paused" {
		t.Fatalf("after pause: status %v", s)
	}
	mustCmd(t, rt, "--root", root, "resume", id)
	if out := mustCmd(t, rt, "--root", root, "exec", id, "echo", "resumed"); out != "resumed\n" {
		t.Fatalf("exec after resume: %q", out)
	}
	var ev struct {
		Type string
		Data struct{ Pids struct{ Current int } }
	}
	if err := json.Unmarshal([]byte(mustCmd(t, rt, "--root", root, "events", "--stats", id)), &ev); err != nil || ev.Type != "stats" || ev.Data.Pids.Current < 2 {
		t.Fatalf("events --stats (owner and QEMU): %+v %v", ev, err)
	}
	if r := runCmd(t, nil, rt, "--root", root, "update", "--memory", "32m", id); r.code == 0 || !strings.Contains(r.stderr, "not supported for VM isolation") {
		t.Fatalf("update: exit %d, %q", r.code, r.stderr)
	}
	if r := runCmd(t, nil, rt, "--root", root, "delete", id); r.code == 0 {
		t.Fatal("delete of a running VM succeeded")
	}

	stdinW.Write([]byte("ping\n"))
	stdinW.Close()
	out, _ := readAll(outR)
	if f := strings.Fields(out); len(f) != 3 || f[0] != "got" || f[1] != "ping" || f[2] == host {
		t.Fatalf("workload output %q (host kernel %s)", out, host)
	}
	waitGone(t, pid)
	if s := ociState(t, rt, root, id)["status"]; s != "stopped" {
		t.Fatalf("after exit: status %v", s)
	}
	mustCmd(t, rt, "--root", root, "delete", id)
	checkNoVMLeftovers(t, id, filepath.Join(root, id))
	if dirs, _ := filepath.Glob("/sys/fs/cgroup/*/berth-runtime/" + id); len(dirs) != 0 {
		t.Fatalf("cgroups left behind: %v", dirs)
	}
}

// TestRuntimeVMRunAndFaults: run's exit status for an exit code and a
// signal, a missing command failing start with nothing left, kill
// relaying SIGTERM, and a SIGKILLed owner taking QEMU with it.
func TestRuntimeVMRunAndFaults(t *testing.T) {
	t.Parallel()
	host := needRuntimeVM(t)
	rt := berthRuntime(t)
	root := runtimeRoot(t)
	pfx := fmt.Sprintf("vmrun%d", os.Getpid())

	bundle := vmBundle(t, rt, nil, "sh", "-c", "uname -r; exit 3")
	r := runCmd(t, nil, rt, "--root", root, "run", "--bundle", bundle, pfx+"a")
	if r.code != 3 || strings.TrimSpace(r.stdout) == host || r.stdout == "" {
		t.Fatalf("run: exit %d, %q (host %s), %s", r.code, r.stdout, host, r.stderr)
	}
	// Called as berth-runtime-vm (the symlink make install adds, for
	// engines that take a binary but no flags), it runs a bundle without
	// the annotation as a VM; so does --isolation=vm (the docker tests).
	vmrt := vmRuntime(t, rt)
	// The workload is its guest container's PID 1, as runc makes it:
	// its own SIGKILL does not end it.
	plain := busyboxBundle(t, rt, nil, "sh", "-c", "uname -r; kill -KILL $$; exit 4")
	if r := runCmd(t, nil, vmrt, "--root", root, "run", "--bundle", plain, pfx+"b"); r.code != 4 || strings.TrimSpace(r.stdout) == host || r.stdout == "" {
		t.Fatalf("berth-runtime-vm run of a PID 1 that sends itself SIGKILL: exit %d, %q (host %s), %s", r.code, r.stdout, host, r.stderr)
	}
	missing := vmBundle(t, rt, nil, "no-such-command")
	if r := runCmd(t, nil, rt, "--root", root, "run", "--bundle", missing, pfx+"c"); r.code == 0 || !strings.Contains(r.stderr, "no-such-command") {
		t.Fatalf("run of a missing command: exit %d, %q", r.code, r.stderr)
	}
	for _, s := range []string{"a", "b", "c"} {
		checkNoVMLeftovers(t, pfx+s, filepath.Join(root, pfx+s))
	}

	// kill relays SIGTERM to the workload, which traps it. The workload
	// is PID 1 of its guest container: until its trap is set the kernel
	// drops the signal, so it is sent until the workload ends.
	trap := vmBundle(t, rt, nil, "sh", "-c", "trap 'exit 9' TERM; echo up; while :; do sleep 0.2; done")
	id := pfx + "d"
	createQuiet(t, rt, root, trap, id)
	defer runCmd(t, nil, rt, "--root", root, "delete", "--force", id)
	mustCmd(t, rt, "--root", root, "start", id)
	pid := int(ociState(t, rt, root, id)["pid"].(float64))
	waitFor(t, "the workload to end on SIGTERM", func() bool {
		runCmd(t, nil, rt, "--root", root, "kill", id, "TERM")
		time.Sleep(500 * time.Millisecond)
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		i := bytes.LastIndexByte(b, ')')
		return err != nil || (i > 0 && i+2 < len(b) && b[i+2] == 'Z')
	})
	mustCmd(t, rt, "--root", root, "delete", id)
	checkNoVMLeftovers(t, id, filepath.Join(root, id))

	// An owner waiting for start whose state directory is removed
	// (its --root wiped) ends and takes its disks with it.
	id = pfx + "f"
	createQuiet(t, rt, root, trap, id)
	pid = int(ociState(t, rt, root, id)["pid"].(float64))
	if err := os.RemoveAll(filepath.Join(root, id)); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	checkNoVMLeftovers(t, id, filepath.Join(root, id))

	// A SIGKILLed owner: QEMU dies with it, the VM is stopped, delete
	// removes the rest.
	id = pfx + "e"
	createQuiet(t, rt, root, trap, id)
	defer runCmd(t, nil, rt, "--root", root, "delete", "--force", id)
	mustCmd(t, rt, "--root", root, "start", id)
	pid = int(ociState(t, rt, root, id)["pid"].(float64))
	var q struct{ Pid int }
	b, err := os.ReadFile(filepath.Join(root, id, "qemu.json"))
	if err != nil || json.Unmarshal(b, &q) != nil || q.Pid == 0 {
		t.Fatalf("qemu.json: %q %v", b, err)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	waitGone(t, pid)
	waitGone(t, q.Pid)
	if s := ociState(t, rt, root, id)["status"]; s != "stopped" {
		t.Fatalf("after the owner was killed: status %v", s)
	}
	mustCmd(t, rt, "--root", root, "delete", id)
	checkNoVMLeftovers(t, id, filepath.Join(root, id))
}

// TestContainerdVM: containerd's runc shim runs a VM when the container
// carries the annotation (ctr run --annotation io.berth.isolation=vm):
// output, the guest's kernel, exit codes, task exec, kill.
func TestContainerdVM(t *testing.T) {
	t.Parallel()
	host := needRuntimeVM(t)
	containerd := testutil.NeedTool(t, "containerd")
	ctr := testutil.NeedTool(t, "ctr")
	rt := berthRuntime(t)
	archive := rtArchive(t)

	ns := "berthvmtest"
	c, dir := startContainerd(t, containerd, ctr, "ctv-", ns, archive)
	pfx := fmt.Sprintf("ctrvm%d", os.Getpid())
	run := func(id string, args ...string) result {
		return runCmd(t, nil, ctr, c(append([]string{"run", "--rm", "--annotation", "io.berth.isolation=vm", "--runc-binary", rt, rtImage, pfx + id}, args...)...)...)
	}
	if r := run("hello", "sh", "-c", "echo hello; uname -r"); r.code != 0 || !strings.HasPrefix(r.stdout, "hello\n") || strings.TrimSpace(strings.TrimPrefix(r.stdout, "hello\n")) == host {
		t.Fatalf("ctr run: exit %d, %q (host %s), %s", r.code, r.stdout, host, r.stderr)
	}
	if r := run("exit3", "sh", "-c", "exit 3"); r.code != 3 {
		t.Fatalf("ctr run exit 3: exit %d, %s", r.code, r.stderr)
	}

	bg := pfx + "bg"
	mustCmd(t, ctr, c("run", "-d", "--annotation", "io.berth.isolation=vm", "--runc-binary", rt, rtImage, bg,
		"sh", "-c", "trap 'exit 42' TERM; while true; do sleep 0.2; done")...)
	r := runCmd(t, nil, ctr, c("task", "exec", "--exec-id", "e1", bg, "sh", "-c", "echo exec-out $(uname -r); exit 4")...)
	if f := strings.Fields(r.stdout); r.code != 4 || len(f) != 2 || f[0] != "exec-out" || f[1] == host {
		t.Fatalf("ctr task exec: exit %d, %q, %s", r.code, r.stdout, r.stderr)
	}
	term, code := onPty(t, ctr, c("task", "exec", "-t", "--exec-id", "e2", bg, "sh", "-c", "tty; exit 6")...)
	if code != 6 || !strings.Contains(term, "/dev/pts/") {
		t.Fatalf("ctr task exec -t: exit %d, %q", code, term)
	}
	mustCmd(t, ctr, c("task", "kill", bg)...)
	waitFor(t, "the task to stop", func() bool {
		out, _ := exec.Command(ctr, c("task", "ls")...).Output()
		return strings.Contains(string(out), "STOPPED")
	})
	mustCmd(t, ctr, c("task", "rm", bg)...)
	mustCmd(t, ctr, c("container", "rm", bg)...)

	term, code = onPty(t, ctr, c("run", "--rm", "-t", "--annotation", "io.berth.isolation=vm", "--runc-binary", rt, rtImage, pfx+"tty", "sh", "-c", "tty; exit 2")...)
	if code != 2 || !strings.Contains(term, "/dev/pts/0") {
		t.Fatalf("ctr run -t: exit %d, %q", code, term)
	}
	for _, id := range []string{"hello", "exit3", "bg", "tty"} {
		checkNoVMLeftovers(t, pfx+id, "")
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "state", "io.containerd.runtime.v2.task", ns)); len(ents) != 0 {
		t.Fatalf("tasks left: %v", ents)
	}
}

// TestDockerVM: dockerd with two entries for berth-runtime, "berth"
// (containers) and "berth-vm" (runtimeArgs --isolation=vm): run --rm
// with output, the guest kernel and exit codes, run -d with a memory
// limit enforced in the guest, exec, logs, stop, rm.
func TestDockerVM(t *testing.T) {
	t.Parallel()
	host := needRuntimeVM(t)
	dockerd := testutil.NeedTool(t, "dockerd")
	docker := "/usr/bin/docker"
	if _, err := os.Stat(docker); err != nil {
		testutil.Missing(t, "needs docker.io's /usr/bin/docker")
	}
	rt := berthRuntime(t)
	archive := rtArchive(t)

	runtimes := fmt.Sprintf(`{"runtimes": {"berth": {"path": %q}, "berth-vm": {"path": %q, "runtimeArgs": ["--isolation=vm"]}}}`, rt, rt)
	dk, dir := startDockerd(t, dockerd, docker, "dkv-", runtimes, archive, "")
	var ids []string
	// run runs docker run --rm with flags (before the image) and args.
	run := func(flags []string, args ...string) result {
		name := fmt.Sprintf("dkvm%d-%d", os.Getpid(), len(ids))
		ids = append(ids, name)
		a := append(append([]string{"run", "--rm", "--name", name}, flags...), rtImage)
		return runCmd(t, nil, docker, dk(append(a, args...)...)...)
	}
	vm := []string{"--runtime", "berth-vm"}
	if r := run([]string{"--runtime", "berth"}, "uname", "-r"); r.code != 0 || strings.TrimSpace(r.stdout) != host {
		t.Fatalf("docker run --runtime berth uname -r: exit %d, %q (host %s), %s", r.code, r.stdout, host, r.stderr)
	}
	if r := run(vm, "sh", "-c", "echo hi; uname -r; cat /etc/hostname"); r.code != 0 || !strings.HasPrefix(r.stdout, "hi\n") ||
		len(strings.Fields(r.stdout)) != 3 || strings.Fields(r.stdout)[1] == host {
		t.Fatalf("docker run --runtime berth-vm: exit %d, %q (host %s), %s", r.code, r.stdout, host, r.stderr)
	}
	if r := run(vm, "sh", "-c", "exit 3"); r.code != 3 {
		t.Fatalf("docker run exit 3: exit %d, %s", r.code, r.stderr)
	}

	// run -d, exec, pause, stop, logs, rm, with a memory limit, on both
	// entries: the container's limit is its cgroup's (v1 here, or v2),
	// the VM's is the workload cgroup's in the guest (its own cgroup2
	// directory at /sys/fs/cgroup).
	for _, c := range []struct {
		runtime, memory string
		guest           bool
	}{
		{"berth", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max", false},
		{"berth-vm", "cat /sys/fs/cgroup/memory.max", true},
	} {
		id := strings.TrimSpace(mustCmd(t, docker, dk("run", "-d", "--runtime", c.runtime, "--memory", "64m", rtImage,
			"sh", "-c", `echo started; trap "echo bye; exit 0" TERM; while true; do sleep 0.2; done`)...))
		r := runCmd(t, nil, docker, dk("exec", id, "sh", "-c", c.memory+"; uname -r; exit 5")...)
		if f := strings.Fields(r.stdout); r.code != 5 || len(f) != 2 || f[0] != "67108864" || (f[1] == host) != !c.guest {
			t.Fatalf("%s: docker exec: exit %d, %q (host %s), %s", c.runtime, r.code, r.stdout, host, r.stderr)
		}
		mustCmd(t, docker, dk("pause", id)...)
		if st := strings.TrimSpace(mustCmd(t, docker, dk("inspect", "-f", "{{.State.Status}}", id)...)); st != "paused" {
			t.Fatalf("%s: after docker pause: %s", c.runtime, st)
		}
		mustCmd(t, docker, dk("unpause", id)...)
		mustCmd(t, docker, dk("stop", id)...)
		if code := strings.TrimSpace(mustCmd(t, docker, dk("inspect", "-f", "{{.State.ExitCode}}", id)...)); code != "0" {
			t.Fatalf("%s: exit code after stop: %s", c.runtime, code)
		}
		if out := mustCmd(t, docker, dk("logs", id)...); out != "started\nbye\n" {
			t.Fatalf("%s: docker logs: %q", c.runtime, out)
		}
		mustCmd(t, docker, dk("rm", id)...)
		checkNoVMLeftovers(t, id, "")
	}

	term, code := onPty(t, docker, dk("run", "--rm", "-t", "--runtime", "berth-vm", rtImage, "sh", "-c", "tty; exit 2")...)
	if code != 2 || !strings.Contains(term, "/dev/pts/0") {
		t.Fatalf("docker run -t: exit %d, %q", code, term)
	}

	// A workload over its memory limit is killed inside the guest.
	if r := run(append(vm, "--memory", "32m"), "sh", "-c", "head -c 200m /dev/zero | tail > /dev/null"); r.code != 137 {
		t.Fatalf("docker run over --memory: exit %d, %s", r.code, r.stderr)
	}
	for _, name := range ids {
		if r := runCmd(t, nil, docker, dk("inspect", name)...); r.code == 0 {
			t.Fatalf("container %s left behind", name)
		}
	}
	out, _ := exec.Command("pgrep", "-f", "__vm-owner").Output()
	for _, p := range strings.Fields(string(out)) {
		n, _ := strconv.Atoi(p)
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", n))
		if bytes.Contains(b, []byte(dir)) {
			t.Fatalf("VM owner %d left behind: %q", n, b)
		}
	}
}
