package test

import (
	"strings"
	"testing"
	"time"
)

// pause freezes a running instance's workload, both ways: ps and inspect
// say paused, its output stops, exec is refused, a second pause and an
// unpause of a running one are refused; unpause lets it go on, and stop
// ends a paused instance.
func TestPauseUnpause(t *testing.T) {
	img := busybox(t)
	for _, mode := range []string{"container", "vm"} {
		t.Run(mode, func(t *testing.T) {
			args := []string{"run", "-d", "--name", "pause-" + mode}
			if mode == "vm" {
				needVM(t)
				args = append(args, "--vm")
			}
			t.Parallel()
			name := "pause-" + mode
			must(t, append(args, img, "sh", "-c", "i=0; while :; do i=$((i+1)); echo $i; sleep 0.1; done")...)
			t.Cleanup(func() { berth(t, "rm", "-f", name) })
			lines := func() int { return strings.Count(must(t, "logs", name), "\n") }
			waitFor(t, "output", func() bool { return lines() > 3 })

			must(t, "pause", name)
			if s := inspect(t, name)["status"]; s != "paused" {
				t.Fatalf("status after pause: %v", s)
			}
			if ps := must(t, "ps"); !strings.Contains(ps, "paused") {
				t.Errorf("ps does not say paused:\n%s", ps)
			}
			// Output in flight when it froze may still reach the log:
			// wait until it settles, then it must stay put.
			var n int
			waitFor(t, "the log to settle", func() bool {
				a := lines()
				time.Sleep(300 * time.Millisecond)
				n = lines()
				return a == n
			})
			time.Sleep(1500 * time.Millisecond)
			if m := lines(); m != n {
				t.Errorf("a paused workload went on writing: %d lines, then %d", n, m)
			}
			for _, tc := range [][]string{{"pause", name}, {"exec", name, "true"}} {
				r := berth(t, tc...)
				if r.code != 125 || !strings.Contains(r.stderr, "paused") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
					t.Errorf("%v on a paused instance: exit %d, stderr %q; want 125, one line saying paused", tc, r.code, r.stderr)
				}
			}

			must(t, "unpause", name)
			if s := inspect(t, name)["status"]; s != "running" {
				t.Fatalf("status after unpause: %v", s)
			}
			waitFor(t, "output after unpause", func() bool { return lines() > n+3 })
			if r := berth(t, "unpause", name); r.code != 125 || !strings.Contains(r.stderr, "running") {
				t.Errorf("unpause of a running instance: exit %d, stderr %q", r.code, r.stderr)
			}

			must(t, "pause", name)
			must(t, "stop", "-t", "2", name)
			if s := inspect(t, name)["status"]; s != "stopped" {
				t.Errorf("status after stop of a paused instance: %v", s)
			}
			if r := berth(t, "pause", name); r.code != 125 || !strings.Contains(r.stderr, "stopped") {
				t.Errorf("pause of a stopped instance: exit %d, stderr %q", r.code, r.stderr)
			}
		})
	}
}
