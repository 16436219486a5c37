package test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// sleepRow is a row of top whose command (after TIME) is the sleep.
var sleepRow = regexp.MustCompile(`(?m)\d\d:\d\d:\d\d +sleep 1000$`)

// stats and top, both ways: a detached instance limited to 64 MiB that
// burns some CPU, then sleeps. stats --no-stream --format json reports
// the limit, its tasks and CPU time (a VM's its guest's, with its QEMU's
// host usage beside them); top lists the sleep; both refuse a stopped
// instance with one line and 125.
func TestStatsTop(t *testing.T) {
	img := busybox(t)
	for _, mode := range []string{"container", "vm"} {
		t.Run(mode, func(t *testing.T) {
			name := "stats-" + mode
			args := []string{"run", "-d", "--name", name, "--memory", "64m"}
			if mode == "vm" {
				needVM(t)
				args = append(args, "--vm")
			}
			t.Parallel()
			must(t, append(args, img, "sh", "-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; exec sleep 1000")...)
			t.Cleanup(func() { berth(t, "rm", "-f", name) })

			var procs string
			waitFor(t, "top to list the sleep", func() bool {
				procs = must(t, "top", name)
				return sleepRow.MatchString(procs)
			})
			if h := strings.Fields(strings.SplitN(procs, "\n", 2)[0]); strings.Join(h, " ") != "UID PID PPID C STIME TTY TIME CMD" {
				t.Errorf("top's header: %q", h)
			}
			if strings.Contains(procs, "while") {
				t.Errorf("top still lists the loop after it exec'd sleep:\n%s", procs)
			}

			out := must(t, "stats", "--no-stream", "--format", "json", name)
			var s struct {
				ID          string
				Name        string
				CPUNanos    uint64
				Memory      int64
				MemoryLimit int64
				Pids        int64
				NetRx       int64
				Host        *struct {
					PID         int
					CPUNanos    uint64
					RSS         int64
					Cgroup      string
					Memory      int64
					MemoryLimit int64
					Pids        int64
				}
			}
			if err := json.Unmarshal([]byte(out), &s); err != nil {
				t.Fatalf("stats --format json: %v\n%s", err, out)
			}
			if s.Name != name || s.MemoryLimit != 64<<20 || s.Pids < 1 || s.CPUNanos == 0 || s.Memory <= 0 {
				t.Errorf("stats: %s\nwant name %s, memory limit 64 MiB, pids >= 1, CPU time and memory in use", out, name)
			}
			if mode == "vm" && (s.Host == nil || s.Host.RSS <= 0 || s.Host.CPUNanos == 0) {
				t.Errorf("a VM's stats lack its QEMU's host usage: %s", out)
			}
			// QEMU's host cgroup: 256 MiB of guest RAM (the least), and
			// QEMU's overhead under TCG or KVM.
			if mode == "vm" && s.Host != nil && (s.Host.Cgroup == "" || s.Host.Memory <= 0 || s.Host.Pids < 1 ||
				s.Host.MemoryLimit < 256<<20+128<<20 || s.Host.MemoryLimit > 256<<20+128<<20+256<<20) {
				t.Errorf("a VM's stats lack its QEMU's host cgroup (usage, limit of guest RAM and overhead, tasks): %s", out)
			}
			if mode == "container" && s.Host != nil {
				t.Errorf("a container's stats have a QEMU: %s", out)
			}
			table := must(t, "stats", "--no-stream", name)
			t.Logf("top:\n%s\nstats:\n%s%s", procs, table, out)
			if !strings.Contains(table, "MEM USAGE / LIMIT") || !strings.Contains(table, "/ 64MiB") {
				t.Errorf("stats table:\n%s", table)
			}
			// Without IDs: every running instance, this one among them.
			if all := must(t, "stats", "--no-stream"); !strings.Contains(all, name) {
				t.Errorf("stats of all instances lacks %s:\n%s", name, all)
			}

			must(t, "stop", "-t", "1", name)
			for _, verb := range []string{"stats", "top"} {
				r := berth(t, verb, "--no-stream", name)
				if verb == "top" {
					r = berth(t, verb, name)
				}
				if r.code != 125 || !strings.Contains(r.stderr, "stopped") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
					t.Errorf("%s of a stopped instance: exit %d, stderr %q; want 125, one line", verb, r.code, r.stderr)
				}
			}
		})
	}
}
