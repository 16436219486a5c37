package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

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

	// The workload's stdio is create's: a pipe the test holds.
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
	if err := create.Run(); err != nil {
		b, _ := os.ReadFile(errf.Name())
		t.Fatalf("create: %v: %s", err, b)
	}
	stdinR.Close()
	outW.Close()
	defer runCmd(t, nil, rt, "--root", root, "delete", "--force", id)

	st := ociState(t, rt, root, id)
	if st["status"] != "created" {
		t.Fatalf("after create: status %v", st["status"])
	}
	b, _ := os.ReadFile(pidFile)
	if fmt.Sprint(st["pid"]) != strings.TrimSpace(string(b)) {
		t.Fatalf("state pid %v, pid file %q", st["pid"], b)
	}
	mustCmd(t, rt, "--root", root, "start", id)
	if s := ociState(t, rt, root, id)["status"]; s != "running" {
		t.Fatalf("after start: status %v", s)
	}
	if r := runCmd(t, nil, rt, "--root", root, "start", id); r.code == 0 || !strings.Contains(r.stderr, "only a created container") {
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
	pid := int(st["pid"].(float64))
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
	vm := busyboxBundle(t, rt, func(spec map[string]any) {
		spec["annotations"] = map[string]string{"io.berth.isolation": "vm"}
	}, "true")
	r = runCmd(t, nil, rt, "--root", root, "create", "--bundle", vm, "r3")
	if r.code == 0 || !strings.Contains(r.stderr, "not supported") {
		t.Fatalf("vm isolation: exit %d, %q", r.code, r.stderr)
	}
	r = runCmd(t, nil, rt, "--root", root, "--isolation=vm", "create", "--bundle", bundle, "r4")
	if r.code == 0 || !strings.Contains(r.stderr, "not supported") {
		t.Fatalf("--isolation=vm: exit %d, %q", r.code, r.stderr)
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
