package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testutil"
)

// A container's workload is its PID 1, as with Docker; `run --init` puts
// berth's init there instead, as `docker run --init` puts tini. See also
// the behaviour table's rows (run_test.go).

// pid1OnlyImage imports, once per test, an image whose entrypoint exits
// 100 unless it is PID 1, as s6-overlay's /init does ("can only run as
// pid 1"), and returns its name.
func pid1OnlyImage(t *testing.T) string {
	t.Helper()
	busybox(t)
	rootfs := testutil.BusyboxRootfs(t)
	script := "#!/bin/sh\n[ \"$$\" = 1 ] || { echo \"init: fatal: can only run as pid 1\" >&2; exit 100; }\necho \"pid 1: $*\"\n"
	if err := os.WriteFile(filepath.Join(rootfs, "init"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	layout := testutil.OCILayout(t, rootfs, testutil.ImageOptions{Ref: "latest", Entrypoint: []string{"/init"}, Cmd: []string{"up"}})
	must(t, "image", "import", "--name", "pid1only", layout)
	t.Cleanup(func() { berth(t, "image", "rm", "pid1only") })
	return "pid1only"
}

func TestEntrypointThatMustBePID1(t *testing.T) {
	img := pid1OnlyImage(t)
	if r := berth(t, "run", "--rm", img); r.code != 0 || r.stdout != "pid 1: up\n" {
		t.Errorf("without --init: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	// With berth's init in front it is not PID 1, as under docker run
	// --init.
	if r := berth(t, "run", "--rm", "--init", img); r.code != 100 || !strings.Contains(r.stderr, "can only run as pid 1") {
		t.Errorf("with --init: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// inspect shows who is PID 1.
func TestInspectShowsInit(t *testing.T) {
	img := busybox(t)
	for _, init := range []bool{false, true} {
		args := []string{img, "sleep", "1000"}
		if init {
			args = append([]string{"--init"}, args...)
		}
		id := detach(t, args...)
		if got := inspect(t, id)["init"]; got != init {
			t.Errorf("run --init=%v: inspect's init is %v", init, got)
		}
	}
}

// berth stop sends SIGTERM, then SIGKILL after -t. A workload that is
// PID 1 gets SIGTERM only when it handles it: sleep does not, and the
// kernel drops the signal, so sleep is killed once the grace period is
// over (137), as with Docker; a shell that traps it ends with its own
// status. Under --init, berth's init relays SIGTERM and sleep dies of it
// (143) before the grace period ends.
func TestStopPID1(t *testing.T) {
	img := busybox(t)
	for _, tc := range []struct {
		name string
		args []string
		code float64
	}{
		{"no handler", []string{img, "sleep", "1000"}, 137},
		{"handler", []string{img, "sh", "-c", "trap 'exit 3' TERM; echo up; while :; do sleep 0.1; done"}, 3},
		{"--init", []string{"--init", img, "sleep", "1000"}, 143},
	} {
		id := detach(t, tc.args...)
		if tc.code == 3 {
			waitFor(t, "the trap", func() bool { return strings.Contains(must(t, "logs", id), "up") })
		}
		must(t, "stop", "-t", "30", id)
		if in := inspect(t, id); in["exit_code"] != tc.code {
			t.Errorf("%s: stop: exit %v, want %v", tc.name, in["exit_code"], tc.code)
		}
	}
	id := detach(t, img, "sleep", "1000")
	must(t, "stop", "-t", "1", id)
	if in := inspect(t, id); in["exit_code"] != float64(137) || in["signal"] != float64(9) {
		t.Errorf("stop -t 1 of sleep as PID 1: exit %v signal %v, want SIGKILL's 137", in["exit_code"], in["signal"])
	}
}

// exec joins a container whose PID 1 is the workload: its namespaces,
// cgroup namespace and seccomp filter.
func TestExecIntoPID1(t *testing.T) {
	img := busybox(t)
	id := detach(t, img, "sleep", "1000")
	r := berth(t, "exec", id, "sh", "-c", "read -r c </proc/1/comm; echo $c; [ $$ != 1 ] && echo not-pid1; grep -E '^Seccomp:' /proc/self/status; grep -c ':/$' /proc/self/cgroup >/dev/null && echo cgroupns")
	if r.code != 0 || r.stdout != "sleep\nnot-pid1\nSeccomp:\t2\ncgroupns\n" {
		t.Errorf("exec: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r := berth(t, "exec", id, "sh", "-c", "exit 4"); r.code != 4 {
		t.Errorf("exec exit status: %d, want 4", r.code)
	}
}

// berth's init relays the host's signals to the workload and reaps
// orphans; a workload that is PID 1 reaps its own.
func TestInitRelaysSignals(t *testing.T) {
	img := busybox(t)
	id := detach(t, "--init", img, "sh", "-c", "trap 'echo got-usr1' USR1; echo up; while :; do sleep 0.1; done")
	waitFor(t, "the workload to start", func() bool { return strings.Contains(must(t, "logs", id), "up") })
	must(t, "kill", "-s", "USR1", id)
	waitFor(t, "the relayed SIGUSR1", func() bool { return strings.Contains(must(t, "logs", id), "got-usr1") })
	must(t, "kill", "-s", "TERM", id)
	waitFor(t, "the instance to stop", func() bool { return status(t, id) == "stopped" })
	if in := inspect(t, id); in["exit_code"] != float64(143) {
		t.Errorf("kill -s TERM under --init: exit %v, want 143", in["exit_code"])
	}
}
