package test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// detach starts a detached instance and returns its ID.
func detach(t *testing.T, args ...string) string {
	t.Helper()
	id := strings.TrimSpace(must(t, append([]string{"run", "-d"}, args...)...))
	if len(id) != 64 {
		t.Fatalf("run -d printed %q, want a 64-hex ID", id)
	}
	t.Cleanup(func() { berth(t, "rm", "-f", id) })
	return id
}

func status(t *testing.T, id string) string {
	s, _ := inspect(t, id)["status"].(string)
	return s
}

func TestDetachedLifecycle(t *testing.T) {
	img := busybox(t)
	id := detach(t, "--name", "life", img, "sh", "-c", "echo out; echo err >&2; trap 'echo term; exit 7' TERM; while :; do sleep 0.1; done")
	if s := status(t, "life"); s != "running" {
		t.Fatalf("status %q, want running", s)
	}
	ps := must(t, "ps")
	if !strings.Contains(ps, id[:12]) || !strings.Contains(ps, "container") {
		t.Fatalf("ps does not list the instance and its isolation:\n%s", ps)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(must(t, "ps", "--format", "json")), &list); err != nil {
		t.Fatalf("ps --format json: %v", err)
	}
	waitFor(t, "output in the log", func() bool { return strings.Contains(berth(t, "logs", id).stdout, "out") })
	r := berth(t, "logs", id)
	if r.stdout != "out\n" || r.stderr != "err\n" {
		t.Fatalf("logs: stdout %q stderr %q", r.stdout, r.stderr)
	}
	// exec sees the same namespaces and files.
	must(t, "exec", id, "sh", "-c", "echo shared > /tmp/f")
	if out := must(t, "exec", id, "cat", "/tmp/f"); out != "shared\n" {
		t.Fatalf("exec: %q", out)
	}
	if out := must(t, "exec", id, "hostname"); out != id[:12]+"\n" {
		t.Fatalf("exec hostname %q, want %q", out, id[:12])
	}
	if r := berth(t, "exec", id, "sh", "-c", "exit 5"); r.code != 5 {
		t.Fatalf("exec exit %d, want 5", r.code)
	}
	if r := berth(t, "exec", id, "nosuch"); r.code != 127 {
		t.Fatalf("exec of a missing command: exit %d, want 127", r.code)
	}
	if r := berthIn(t, []byte("abc"), "exec", "-i", id, "cat"); r.stdout != "abc" {
		t.Fatalf("exec -i: %q", r.stdout)
	}
	if r := berth(t, "rm", id); r.code == 0 {
		t.Fatal("rm of a running instance succeeded without -f")
	}
	must(t, "stop", "-t", "5", id)
	in := inspect(t, id)
	if in["status"] != "stopped" || in["exit_code"] != float64(7) {
		t.Fatalf("after stop: status %v exit %v", in["status"], in["exit_code"])
	}
	if out := must(t, "logs", id); !strings.Contains(out, "term") {
		t.Fatalf("logs after stop lack the trap's output: %q", out)
	}
	if ps := must(t, "ps"); strings.Contains(ps, id[:12]) {
		t.Fatal("ps without -a lists a stopped instance")
	}
	if ps := must(t, "ps", "-a"); !strings.Contains(ps, id[:12]) {
		t.Fatal("ps -a does not list a stopped instance")
	}
	must(t, "rm", id)
	if r := berth(t, "inspect", id); r.code == 0 {
		t.Fatal("inspect finds a removed instance")
	}
}

func TestStopEscalatesToKill(t *testing.T) {
	img := busybox(t)
	id := detach(t, img, "sh", "-c", "trap '' TERM; while :; do sleep 0.1; done")
	must(t, "stop", "-t", "1", id)
	if in := inspect(t, id); in["exit_code"] != float64(137) {
		t.Fatalf("exit %v, want 137 after SIGKILL", in["exit_code"])
	}
}

// kill -s TERM reaches a workload that is PID 1 when it handles it
// (sleep as PID 1 would not die of it: TestStopPID1), and a workload
// under --init whatever it does (TestInitRelaysSignals).
func TestKillSignal(t *testing.T) {
	img := busybox(t)
	id := detach(t, img, "sh", "-c", "trap 'exit 143' TERM; echo up; while :; do sleep 0.1; done")
	waitFor(t, "the trap", func() bool { return strings.Contains(must(t, "logs", id), "up") })
	must(t, "kill", "-s", "TERM", id)
	waitFor(t, "the instance to stop", func() bool { return status(t, id) == "stopped" })
	if in := inspect(t, id); in["exit_code"] != float64(143) {
		t.Fatalf("exit %v, want 143", in["exit_code"])
	}
}

func TestDetachedRm(t *testing.T) {
	img := busybox(t)
	id := strings.TrimSpace(must(t, "run", "-d", "--rm", img, "true"))
	waitFor(t, "--rm to remove the instance", func() bool { return berth(t, "inspect", id).code != 0 })
}

func TestMemoryLimitOOM(t *testing.T) {
	img := busybox(t)
	r := berth(t, "run", "--name", "oom", "--memory", "32m", img, "sh", "-c", "head -c 200m /dev/zero | tail > /dev/null")
	defer berth(t, "rm", "-f", "oom")
	if r.code != 137 {
		t.Fatalf("exit %d, want 137 (OOM kill); stderr %q", r.code, r.stderr)
	}
	if in := inspect(t, "oom"); in["oom_killed"] != true {
		t.Fatalf("inspect does not report the OOM kill: %v", in)
	}
}

func TestPidsLimit(t *testing.T) {
	img := busybox(t)
	r := berth(t, "run", "--rm", "--pids-limit", "10", img, "sh", "-c", "for i in $(seq 20); do sleep 1 & done; wait")
	if !strings.Contains(r.stderr, "fork") {
		t.Fatalf("20 processes started under --pids-limit 10: exit %d stderr %q", r.code, r.stderr)
	}
}

func TestCPULimit(t *testing.T) {
	img := busybox(t)
	id := detach(t, "--cpus", "0.5", img, "sleep", "100")
	cg := cgroupFile(t, "cpu", id, "cpu.cfs_quota_us", "cpu.max")
	if cg != "50000" && cg != "50000 100000" {
		t.Fatalf("cpu quota %q, want 50000 per 100000", cg)
	}
}

// cgroupFile reads a file of the instance's cgroup, v1 or v2.
func cgroupFile(t *testing.T, ctrl, id, v1name, v2name string) string {
	t.Helper()
	for _, p := range []string{
		filepath.Join("/sys/fs/cgroup", ctrl, "berth", id, v1name),
		filepath.Join("/sys/fs/cgroup/berth", id, v2name),
	} {
		if b, err := os.ReadFile(p); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	t.Fatalf("no %s/%s in the cgroup of %s", v1name, v2name, id)
	return ""
}
