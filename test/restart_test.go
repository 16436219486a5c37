package test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// num reads a number field of an inspect record (0 when absent).
func num(in map[string]any, key string) int {
	f, _ := in[key].(float64)
	return int(f)
}

// healthStatus is the status of an inspect record's health, "" for none.
func healthStatus(in map[string]any) string {
	h, _ := in["health"].(map[string]any)
	s, _ := h["status"].(string)
	return s
}

// processesRunning counts the host's processes whose arguments are
// exactly args.
func processesRunning(args ...string) int {
	want := []byte(strings.Join(args, "\x00") + "\x00")
	n := 0
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range dirs {
		if b, err := os.ReadFile(p); err == nil && bytes.Equal(b, want) {
			n++
		}
	}
	return n
}

// alive reports whether the process pid exists (and is not a zombie).
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// waitEnded waits until the instance is stopped for good: stopped, not
// restarting, its monitor gone.
func waitEnded(t *testing.T, id string) map[string]any {
	t.Helper()
	var in map[string]any
	waitFor(t, "the instance to end for good", func() bool {
		in = inspect(t, id)
		return in["status"] == "stopped" && in["restarting"] != true && !alive(num(in, "monitor_pid"))
	})
	return in
}

func TestRestartBadInput(t *testing.T) {
	img := busybox(t)
	t.Parallel()
	cases := [][]string{
		{"--restart", "sometimes"},
		{"--restart", "on-failure:-1"},
		{"--restart", "always:3"},
		{"--restart", "always", "--rm"},
		{"--health-interval", "soon"},
		{"--health-timeout", "-1s"},
		{"--health-start-period", "1ns"},
		{"--health-retries", "-2"},
		{"--health-on-failure", "maybe"},
		{"--no-healthcheck", "--health-cmd", "true"},
	}
	for _, c := range cases {
		args := append(append([]string{"run", "-d"}, c...), img, "true")
		r := berth(t, args...)
		if r.code != 125 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || r.stdout != "" {
			t.Errorf("berth %s: exit %d, stdout %q, stderr %q: want one line and 125", strings.Join(args, " "), r.code, r.stdout, r.stderr)
		}
	}
	// A restart is the monitor's: a foreground run with a policy is refused.
	if r := berth(t, "run", "--restart", "always", img, "true"); r.code != 125 || !strings.Contains(r.stderr, "needs -d") {
		t.Errorf("foreground --restart always: exit %d, %q", r.code, r.stderr)
	}
	if r := berth(t, "run", "--restart", "no", "--rm", img, "true"); r.code != 0 {
		t.Errorf("--restart no --rm: exit %d, %q", r.code, r.stderr)
	}
}

func TestRestartOnFailureCount(t *testing.T) {
	img := busybox(t)
	t.Parallel()
	id := detach(t, "--restart", "on-failure:2", img, "sh", "-c", "echo ran; exit 3")
	in := waitEnded(t, id)
	if num(in, "restart_count") != 2 || num(in, "exit_code") != 3 {
		t.Fatalf("after on-failure:2: restart_count %v exit %v", in["restart_count"], in["exit_code"])
	}
	pol, _ := in["restart_policy"].(map[string]any)
	if pol["name"] != "on-failure" || num(pol, "maximum_retry_count") != 2 {
		t.Fatalf("restart_policy %v", in["restart_policy"])
	}
	// Three runs, one log.
	if out := must(t, "logs", id); out != "ran\nran\nran\n" {
		t.Fatalf("logs: %q", out)
	}
	if ps := must(t, "ps", "-a"); !strings.Contains(ps, "exited (3)") {
		t.Fatalf("ps -a:\n%s", ps)
	}
	// on-failure does not restart a clean exit.
	clean := detach(t, "--restart", "on-failure", img, "true")
	if in := waitEnded(t, clean); num(in, "restart_count") != 0 {
		t.Fatalf("on-failure after exit 0: restart_count %v", in["restart_count"])
	}
}

func TestRestartAlways(t *testing.T) {
	img := busybox(t)
	t.Parallel()
	// The first run crashes; the restarted one (same root file system)
	// finds its mark and stays up.
	id := detach(t, "--restart", "always", img, "sh", "-c",
		"if [ -e /crashed ]; then exec sleep 3101; fi; touch /crashed; exit 1")
	var in map[string]any
	waitFor(t, "a restart after the crash", func() bool {
		in = inspect(t, id)
		return in["status"] == "running" && num(in, "restart_count") == 1
	})
	// The workload killed from outside berth comes back too.
	first := num(in, "pid")
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a restart after the workload was killed", func() bool {
		in = inspect(t, id)
		return in["status"] == "running" && num(in, "restart_count") == 2 && num(in, "pid") != first
	})
	if ps := must(t, "ps"); !strings.Contains(ps, id[:12]) || !strings.Contains(ps, "up ") {
		t.Fatalf("ps:\n%s", ps)
	}
	// berth stop is the user's: no restart undoes it.
	must(t, "stop", "-t", "1", id)
	in = waitEnded(t, id)
	if num(in, "restart_count") != 2 || in["stopped_by_user"] != true {
		t.Fatalf("after stop: restart_count %v stopped_by_user %v", in["restart_count"], in["stopped_by_user"])
	}
	if n := processesRunning("sleep", "3101"); n != 0 {
		t.Fatalf("%d workloads still run after stop", n)
	}
	// berth start brings it back, forgetting the stop; berth kill (the
	// user's) is not undone either.
	must(t, "start", id)
	in = inspect(t, id)
	if in["status"] != "running" || num(in, "restart_count") != 0 || in["stopped_by_user"] == true {
		t.Fatalf("after start: %v restart_count %v stopped_by_user %v", in["status"], in["restart_count"], in["stopped_by_user"])
	}
	must(t, "kill", id)
	if in = waitEnded(t, id); num(in, "restart_count") != 0 {
		t.Fatalf("after kill: restart_count %v", in["restart_count"])
	}
	// restart: stop, then start again.
	must(t, "restart", "-t", "1", id)
	if in = inspect(t, id); in["status"] != "running" {
		t.Fatalf("after restart: %v", in["status"])
	}
	must(t, "rm", "-f", id)
	if n := processesRunning("sleep", "3101"); n != 0 {
		t.Fatalf("%d workloads still run after rm -f", n)
	}
}

func TestRestartMonitorKilled(t *testing.T) {
	img := busybox(t)
	t.Parallel()
	id := detach(t, "--restart", "always", img, "sleep", "3102")
	in := inspect(t, id)
	monitor := num(in, "monitor_pid")
	if err := syscall.Kill(monitor, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the monitor to die", func() bool { return !alive(monitor) })
	// Several commands reconcile it at once: one gives it a new monitor.
	var wg sync.WaitGroup
	for _, args := range [][]string{{"ps"}, {"inspect", id}, {"ps", "-a"}, {"inspect", id}} {
		wg.Add(1)
		go func() { defer wg.Done(); berth(t, args...) }()
	}
	wg.Wait()
	waitFor(t, "the reconciled restart", func() bool {
		in = inspect(t, id)
		return in["status"] == "running" && num(in, "restart_count") == 1
	})
	if m := num(in, "monitor_pid"); m == monitor || !alive(m) {
		t.Fatalf("monitor %d after the reconcile (the killed one was %d)", m, monitor)
	}
	for i := 0; i < 5; i++ {
		berth(t, "ps")
		if n := processesRunning("sleep", "3102"); n != 1 {
			t.Fatalf("%d copies of the workload run", n)
		}
		if n := processesRunning("/proc/self/exe", "--root", berthRoot, "__monitor", id, "--again"); n != 1 {
			t.Fatalf("%d monitors run", n)
		}
	}
	if in = inspect(t, id); num(in, "restart_count") != 1 {
		t.Fatalf("restart_count %v", in["restart_count"])
	}
}

// TestRestartAtBoot ends every process of its instances, as a reboot
// would (monitors and workloads, SIGKILL, no berth command between), and
// runs the boot-time command.
func TestRestartAtBoot(t *testing.T) {
	img := busybox(t)
	t.Parallel()
	always := detach(t, "--restart", "always", img, "sleep", "3103")
	unless := detach(t, "--restart", "unless-stopped", img, "sleep", "3104")
	stopped := detach(t, "--restart", "unless-stopped", img, "sleep", "3105")
	never := detach(t, "--restart", "no", img, "sleep", "3106")
	must(t, "stop", "-t", "0", stopped)
	waitEnded(t, stopped)
	var pids []int
	for _, id := range []string{always, unless, never} {
		in := inspect(t, id)
		pids = append(pids, num(in, "monitor_pid"), num(in, "pid"))
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, pid := range pids {
		waitFor(t, "the killed processes to end", func() bool { return !alive(pid) })
	}
	out := must(t, "start", "--boot")
	for _, id := range []string{always, unless} {
		if !strings.Contains(out, id[:12]) {
			t.Errorf("start --boot printed %q, without %s", out, id[:12])
		}
		waitFor(t, "the instance back", func() bool { return status(t, id) == "running" })
	}
	for _, id := range []string{stopped, never} {
		if strings.Contains(out, id[:12]) {
			t.Errorf("start --boot started %s: %q", id[:12], out)
		}
		if s := status(t, id); s != "stopped" {
			t.Errorf("%s: %s after start --boot", id[:12], s)
		}
	}
	for _, w := range []string{"3103", "3104"} {
		if n := processesRunning("sleep", w); n != 1 {
			t.Errorf("sleep %s: %d copies", w, n)
		}
	}
}

func TestHealthCheck(t *testing.T) {
	img := busybox(t)
	t.Parallel()
	id := detach(t, "--health-cmd", "echo checked; test -e /tmp/ok", "--health-interval", "100ms",
		"--health-retries", "2", "--health-start-period", "1h", img, "sleep", "3107")
	// Failures within the start period are logged, not counted.
	var in map[string]any
	waitFor(t, "a failed check", func() bool {
		in = inspect(t, id)
		h, _ := in["health"].(map[string]any)
		log, _ := h["log"].([]any)
		return len(log) > 0
	})
	if healthStatus(in) != "starting" {
		t.Fatalf("health %v in the start period", in["health"])
	}
	if ps := must(t, "ps"); !strings.Contains(ps, "(health: starting)") {
		t.Fatalf("ps:\n%s", ps)
	}
	must(t, "exec", id, "touch", "/tmp/ok")
	waitFor(t, "healthy", func() bool { return healthStatus(inspect(t, id)) == "healthy" })
	if ps := must(t, "ps"); !strings.Contains(ps, "(healthy)") {
		t.Fatalf("ps:\n%s", ps)
	}
	must(t, "exec", id, "rm", "/tmp/ok")
	waitFor(t, "unhealthy", func() bool { in = inspect(t, id); return healthStatus(in) == "unhealthy" })
	h := in["health"].(map[string]any)
	log := h["log"].([]any)
	last := log[len(log)-1].(map[string]any)
	if num(h, "failing_streak") < 2 || len(log) > 5 || num(last, "exit_code") != 1 || last["output"] != "checked\n" {
		t.Fatalf("health %v", h)
	}
	if ps := must(t, "ps"); !strings.Contains(ps, "(unhealthy)") {
		t.Fatalf("ps:\n%s", ps)
	}
	if cfg, _ := in["healthcheck"].(map[string]any); cfg == nil || num(cfg, "retries") != 2 {
		t.Fatalf("healthcheck %v", in["healthcheck"])
	}
}

func TestHealthOnFailureRestart(t *testing.T) {
	img := busybox(t)
	t.Parallel()
	// The first run never turns healthy; the one the check's restart
	// starts (same root file system) does.
	id := detach(t, "--health-cmd", "test -e /tmp/ok", "--health-interval", "100ms", "--health-retries", "1",
		"--health-on-failure", "restart", img, "sh", "-c",
		"if [ -e /started ]; then touch /tmp/ok; fi; touch /started; trap 'exit 0' TERM; sleep 3108 & wait")
	var in map[string]any
	waitFor(t, "a restart that turns healthy", func() bool {
		in = inspect(t, id)
		return in["status"] == "running" && healthStatus(in) == "healthy"
	})
	if num(in, "restart_count") != 1 {
		t.Fatalf("restart_count %v", in["restart_count"])
	}
	if n := processesRunning("sleep", "3108"); n != 1 {
		t.Fatalf("%d copies of the workload", n)
	}
}

func TestHealthAndRestartVM(t *testing.T) {
	img := busybox(t)
	needVM(t)
	t.Parallel()
	id := detach(t, "--vm", "--memory", "64m", "--health-cmd", "test -e /tmp/ok", "--health-interval", "200ms",
		"--restart", "on-failure:1", img, "sh", "-c", "while [ ! -e /tmp/done ]; do sleep 0.2; done; exit 4")
	waitFor(t, "the VM running", func() bool { return status(t, id) == "running" })
	must(t, "exec", id, "touch", "/tmp/ok")
	waitFor(t, "the VM healthy", func() bool { return healthStatus(inspect(t, id)) == "healthy" })
	if ps := must(t, "ps"); !strings.Contains(ps, "(healthy)") {
		t.Fatalf("ps:\n%s", ps)
	}
	// It fails (4): on-failure:1 starts it again, once (a VM's scratch
	// disk is new at each start, so it runs until told again).
	must(t, "exec", id, "touch", "/tmp/done")
	var in map[string]any
	waitFor(t, "the VM restarted", func() bool {
		in = inspect(t, id)
		return in["status"] == "running" && num(in, "restart_count") == 1
	})
	if h := healthStatus(in); h != "starting" && h != "unhealthy" {
		t.Fatalf("health after the restart: %v", in["health"])
	}
	must(t, "exec", id, "touch", "/tmp/done")
	if in = waitEnded(t, id); num(in, "restart_count") != 1 || num(in, "exit_code") != 4 {
		t.Fatalf("after the second failure: restart_count %v exit %v", in["restart_count"], in["exit_code"])
	}
}
