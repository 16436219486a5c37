package usage

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/cgroups"
)

func TestCPUPercent(t *testing.T) {
	t0 := time.Unix(1000, 0)
	cases := []struct {
		name      string
		prev, cur Sample
		want      float64
	}{
		{"half a CPU", Sample{1e9, t0}, Sample{1.5e9, t0.Add(time.Second)}, 50},
		{"two CPUs busy", Sample{0, t0}, Sample{1e9, t0.Add(500 * time.Millisecond)}, 200},
		{"idle", Sample{7, t0}, Sample{7, t0.Add(time.Second)}, 0},
		{"no time passed", Sample{0, t0}, Sample{1e9, t0}, 0},
		{"counter went back", Sample{5e9, t0}, Sample{1e9, t0.Add(time.Second)}, 0},
	}
	for _, c := range cases {
		if got := CPUPercent(c.prev, c.cur); got != c.want {
			t.Errorf("%s: CPUPercent = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestFromCgroup(t *testing.T) {
	s := FromCgroup(cgroups.Stats{MemoryUsage: 10, MemoryLimit: 64 << 20, Pids: 2, CPUUsageNS: 5, IORead: -1, IOWrite: -1}, 1<<30)
	if s.MemoryLimit != 64<<20 || s.Pids != 2 || s.CPUNanos != 5 || s.BlockRead != -1 || s.NetRx != -1 {
		t.Errorf("with a limit: %+v", s)
	}
	if s := FromCgroup(cgroups.Stats{}, 1<<30); s.MemoryLimit != 1<<30 {
		t.Errorf("without a limit: limit %d, want the machine's %d", s.MemoryLimit, 1<<30)
	}
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestNetDev(t *testing.T) {
	p := filepath.Join(t.TempDir(), "dev")
	write(t, p, `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0:    2000      20    0    0    0     0          0         0      300       3    0    0    0     0       0          0
  eth1:      50       1    0    0    0     0          0         0        7       1    0    0    0     0       0          0
`)
	rx, tx, err := NetDev(p)
	if err != nil || rx != 2050 || tx != 307 {
		t.Errorf("NetDev = %d, %d, %v; want 2050, 307 (lo left out)", rx, tx, err)
	}
}

func TestProcesses(t *testing.T) {
	proc := t.TempDir()
	write(t, filepath.Join(proc, "stat"), "cpu  1 2 3\nbtime 1700000000\n")
	write(t, filepath.Join(proc, "uptime"), "100.00 50.00\n")
	// pid 7: a name with a space and a parenthesis, 2 s of CPU over the
	// 50 s since it started at 50 s after boot, on pts/3.
	write(t, filepath.Join(proc, "7", "stat"), "7 (my (cmd)) S 1 7 7 34819 7 0 0 0 0 0 150 50 0 0 20 0 1 0 5000 0 0\n")
	write(t, filepath.Join(proc, "7", "status"), "Name:\tx\nUid:\t0\t1000\t1000\t1000\n")
	write(t, filepath.Join(proc, "7", "cmdline"), "sleep\x0030\x00")
	write(t, filepath.Join(proc, "3", "stat"), "3 (kworker) S 2 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 1 0 0\n")
	write(t, filepath.Join(proc, "3", "status"), "Uid:\t0\t0\t0\t0\n")
	write(t, filepath.Join(proc, "3", "cmdline"), "")
	got, err := Processes(proc, []int{7, 3, 7, 99})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].PID != 3 || got[1].PID != 7 {
		t.Fatalf("Processes = %+v, want pids 3 and 7 (99 gone, 7 once)", got)
	}
	want := Process{PID: 7, PPID: 1, UID: 1000, C: 4, Start: 1700000050, TTY: "pts/3", CPUNanos: 2e9, Cmd: "sleep 30"}
	if got[1] != want {
		t.Errorf("pid 7: %+v\nwant %+v", got[1], want)
	}
	if got[0].Cmd != "[kworker]" || got[0].TTY != "?" {
		t.Errorf("pid 3: %+v, want [kworker] on no tty", got[0])
	}
	write(t, filepath.Join(proc, "7", "smaps_rollup"), "00400000-7fff [rollup]\nRss:                2048 kB\nPss:  1000 kB\n")
	h, err := HostOf(proc, 7)
	if err != nil || h.RSS != 2048<<10 || h.CPUNanos != 2e9 {
		t.Errorf("HostOf = %+v, %v", h, err)
	}
}
