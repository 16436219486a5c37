package cgroups

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/berth-dev/berth/internal/errdefs"
)

// newTestV1 creates the running test's v1 cgroup with r and arranges for its
// removal, skipping where v1 hierarchies or root are missing.
func newTestV1(t *testing.T, r Resources) *v1 {
	t.Helper()
	requireRoot(t)
	if mode := DetectMode(); mode != ModeV1 && mode != ModeHybrid {
		t.Skipf("cgroup v1 hierarchies not mounted (mode %s)", mode)
	}
	mg, err := NewV1(testPath(t))
	if err != nil {
		t.Fatal(err)
	}
	m := mg.(*v1)
	var mounts []string
	for _, h := range m.hier {
		mounts = append(mounts, h.mount)
	}
	cleanupCgroup(t, m, mounts...)
	if err := m.Create(r); err != nil {
		t.Fatalf("Create: %v", err)
	}
	return m
}

func (m *v1) file(ctrl, name string) string { return filepath.Join(m.dirs[ctrl], name) }

func TestV1CreateLimits(t *testing.T) {
	m := newTestV1(t, Resources{Memory: 64 << 20, CPUQuota: 50000, CPUShares: 512, Pids: 10})
	memsw := exists(m.file("memory", "memory.memsw.limit_in_bytes"))
	check := func(ctrl, name, want string) {
		t.Helper()
		if name == "memory.memsw.limit_in_bytes" && !memsw {
			return
		}
		if got := readFile(t, m.file(ctrl, name)); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	check("memory", "memory.limit_in_bytes", "67108864")
	check("memory", "memory.memsw.limit_in_bytes", "67108864")
	check("cpu", "cpu.cfs_period_us", "100000")
	check("cpu", "cpu.cfs_quota_us", "50000")
	check("cpu", "cpu.shares", "512")
	check("pids", "pids.max", "10")
	if dir, ok := m.dirs["cpuset"]; ok {
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if readFile(t, filepath.Join(dir, f)) == "" {
				t.Errorf("%s is empty: tasks could not join", f)
			}
		}
	}

	// Raise memory and swap together (memsw must move first) ...
	if err := m.Update(Resources{Memory: 128 << 20, MemorySwap: 256 << 20, CPUQuota: 150000, CPUPeriod: 50000}); err != nil {
		t.Fatalf("Update up: %v", err)
	}
	check("memory", "memory.limit_in_bytes", "134217728")
	check("memory", "memory.memsw.limit_in_bytes", "268435456")
	check("cpu", "cpu.cfs_period_us", "50000")
	check("cpu", "cpu.cfs_quota_us", "150000")
	check("cpu", "cpu.shares", "1024")
	check("pids", "pids.max", "max")
	// ... then lower both below the old memory limit (memory must move first).
	if err := m.Update(Resources{Memory: 32 << 20}); err != nil {
		t.Fatalf("Update down: %v", err)
	}
	check("memory", "memory.limit_in_bytes", "33554432")
	check("memory", "memory.memsw.limit_in_bytes", "33554432")
	check("cpu", "cpu.cfs_quota_us", "-1")
	// Unlimited again; re-Create reuses the cgroup.
	if err := m.Create(Resources{}); err != nil {
		t.Fatalf("Create again: %v", err)
	}
	if got := readFile(t, m.file("memory", "memory.limit_in_bytes")); len(got) < 15 {
		t.Errorf("memory.limit_in_bytes = %s, want unlimited", got)
	}
	if err := m.Update(Resources{Memory: 64 << 20, MemorySwap: 32 << 20}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("swap below memory: %v, want ErrInvalid", err)
	}
}

func TestV1AddFreezeDestroy(t *testing.T) {
	m := newTestV1(t, Resources{})
	cmd := startSleep(t, nil)
	pid := cmd.Process.Pid
	if err := m.Add(pid); err != nil {
		t.Fatalf("Add: %v", err)
	}
	for _, ctrl := range []string{"memory", "cpu", "pids", "freezer"} {
		if _, ok := m.dirs[ctrl]; !ok {
			continue
		}
		if line := procCgroupLine(t, pid, ctrl); !strings.HasSuffix(line, ":"+m.Path()) {
			t.Errorf("%s cgroup of pid %d is %q, want %s", ctrl, pid, line, m.Path())
		}
	}
	pids, err := m.Pids()
	if err != nil || !slices.Equal(pids, []int{pid}) {
		t.Errorf("Pids = %v, %v; want [%d]", pids, err, pid)
	}
	st, err := m.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if st.Pids != 1 || st.MemoryUsage < 0 || st.OOMKills != 0 || st.MemoryLimit < 0 {
		t.Errorf("Stats = %+v, want 1 pid, no OOM kill, a limit or none (0)", st)
	}
	if err := m.Add(1 << 30); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Add(no such pid) = %v, want ErrNotFound", err)
	}

	if _, ok := m.dirs["freezer"]; ok {
		if err := m.Freeze(); err != nil {
			t.Fatalf("Freeze: %v", err)
		}
		if got := readFile(t, m.file("freezer", "freezer.state")); got != "FROZEN" {
			t.Errorf("freezer.state = %s after Freeze", got)
		}
		if err := m.Thaw(); err != nil {
			t.Fatalf("Thaw: %v", err)
		}
		if got := readFile(t, m.file("freezer", "freezer.state")); got != "THAWED" {
			t.Errorf("freezer.state = %s after Thaw", got)
		}
		// Destroy must also deal with a frozen cgroup.
		if err := m.Freeze(); err != nil {
			t.Fatalf("Freeze: %v", err)
		}
	}

	// A child cgroup with its own process, as a nested workload would make.
	child := filepath.Join(m.dirs["memory"], "child")
	if err := os.Mkdir(child, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd2 := startSleep(t, nil)
	if err := os.WriteFile(filepath.Join(child, "cgroup.procs"), []byte(strconv.Itoa(cmd2.Process.Pid)), 0); err != nil {
		t.Fatal(err)
	}

	if err := m.Destroy(); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	for _, c := range []*exec.Cmd{cmd, cmd2} {
		if sig := killedBy(t, c); sig != syscall.SIGKILL {
			t.Errorf("pid %d ended by signal %v, want SIGKILL", c.Process.Pid, sig)
		}
	}
	for ctrl, dir := range m.dirs {
		if exists(dir) {
			t.Errorf("%s cgroup %s still exists after Destroy", ctrl, dir)
		}
	}
	if err := m.Destroy(); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
}

func TestV1OOMKill(t *testing.T) {
	m := newTestV1(t, Resources{Memory: 32 << 20})
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=alloc")
	in := startBlocked(t, cmd)
	if err := m.Add(cmd.Process.Pid); err != nil {
		t.Fatalf("Add: %v", err)
	}
	if _, err := in.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	if sig := killedBy(t, cmd); sig != syscall.SIGKILL {
		t.Fatalf("allocating 256 MiB under a 32 MiB limit ended by signal %v, want SIGKILL", sig)
	}
	st, err := m.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if st.OOMKills < 1 {
		t.Errorf("Stats.OOMKills = %d, want >= 1 (%+v)", st.OOMKills, st)
	}
	if st.MemoryPeak < 16<<20 || st.MemoryPeak > 33<<20 {
		t.Errorf("Stats.MemoryPeak = %d, want close to the 32 MiB limit", st.MemoryPeak)
	}
	if st.CPUUsageNS == 0 {
		t.Errorf("Stats.CPUUsageNS = 0 after the helper ran")
	}
}

func TestV1PidsLimit(t *testing.T) {
	m := newTestV1(t, Resources{Pids: 2})
	testPidsLimit(t, m)
}

// testPidsLimit runs a shell under a limit of 2 pids: the shell and one sleep
// fill it, the second fork fails and dash gives up with "Cannot fork".
func testPidsLimit(t *testing.T, m Manager) {
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command("/bin/sh", "-c", `read x; sleep 1000 & sleep 1000 & echo survived`)
	// A file, not a pipe: the orphaned sleep must not hold Wait up.
	cmd.Stdout, cmd.Stderr = out, out
	in := startBlocked(t, cmd)
	if err := m.Add(cmd.Process.Pid); err != nil {
		t.Fatalf("Add: %v", err)
	}
	if _, err := in.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	said, _ := os.ReadFile(out.Name())
	if err == nil || strings.Contains(string(said), "survived") || !strings.Contains(strings.ToLower(string(said)), "fork") {
		t.Errorf("shell under pids limit 2: %v, said %q; want a failed fork", err, said)
	}
	pids, err := m.Pids()
	if err != nil || len(pids) != 1 {
		t.Errorf("Pids = %v, %v; want the one sleep", pids, err)
	}
	if st, err := m.Stats(); err != nil || st.Pids != 1 {
		t.Errorf("Stats = %+v, %v; want Pids 1", st, err)
	}
	if err := m.Destroy(); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
}

// Two berth processes may destroy the same cgroup at once (rm -f and the
// instance's owner): both succeed, whichever removes the directories.
func TestV1ConcurrentDestroy(t *testing.T) {
	m := newTestV1(t, Resources{})
	for round := 0; round < 100; round++ {
		if err := m.Create(Resources{}); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sleep", "100")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if err := m.Add(cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
		errs := make(chan error, 2)
		for i := 0; i < 2; i++ {
			go func() {
				other, err := NewV1(m.path)
				if err == nil {
					err = other.Destroy()
				}
				errs <- err
			}()
		}
		for i := 0; i < 2; i++ {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: concurrent Destroy: %v", round, err)
			}
		}
		cmd.Wait()
		for _, h := range m.hier {
			if exists(h.dir) {
				t.Fatalf("round %d: %s left", round, h.dir)
			}
		}
	}
}

// A thread that joins the cgroup alone forks its child into it; the rest
// of the process, and the thread once it has left, stay where they were.
func TestV1ThreadJoin(t *testing.T) {
	m := newTestV1(t, Resources{})
	before := readFile(t, "/proc/self/cgroup")
	files, err := m.ThreadFiles()
	if err != nil {
		t.Fatal(err)
	}
	defer files.Close()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		own, _ := os.ReadFile("/proc/thread-self/cgroup")
		if err := Move(files.Join); err != nil {
			done <- err
			return
		}
		in, err := os.ReadFile("/proc/thread-self/cgroup")
		if err == nil && !strings.Contains(string(in), ":memory:"+m.path+"\n") {
			err = fmt.Errorf("thread not in %s:\n%s", m.path, in)
		}
		cmd := exec.Command("/bin/sleep", "5")
		if err == nil {
			err = cmd.Start()
		}
		if lerr := Move(files.Leave); lerr != nil && err == nil {
			err = lerr
		}
		if out, _ := os.ReadFile("/proc/thread-self/cgroup"); err == nil && string(out) != string(own) {
			err = fmt.Errorf("thread did not leave:\n%s", out)
		}
		runtime.UnlockOSThread()
		if err != nil {
			done <- err
			return
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		pids, err := m.Pids()
		if err == nil && !slices.Contains(pids, cmd.Process.Pid) {
			err = fmt.Errorf("child %d not in the cgroup: %v", cmd.Process.Pid, pids)
		}
		if err == nil && slices.Contains(pids, os.Getpid()) {
			err = fmt.Errorf("the test process is in the cgroup: %v", pids)
		}
		done <- err
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if after := readFile(t, "/proc/self/cgroup"); after != before {
		t.Errorf("process cgroups changed:\n%s\nwant\n%s", after, before)
	}
}

// A thread joining a full cgroup alone is not stopped by the pids limit,
// as a fork would be: PidsFiles tells it that it went beyond the limit,
// and SetPids moves the limit.
func TestV1ThreadJoinOverPidsLimit(t *testing.T) {
	m := newTestV1(t, Resources{Pids: 1})
	files, err := m.ThreadFiles()
	if err != nil {
		t.Fatal(err)
	}
	defer files.Close()
	pf, err := m.PidsFiles()
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	if over, limit, err := pf.Over(); over || limit != 1 || err != nil {
		t.Fatalf("empty cgroup: Over = %v, %d, %v; want false, 1", over, limit, err)
	}
	type result struct {
		over  [2]bool
		limit int64
		err   error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var r result
		if r.err = Move(files.Join); r.err != nil {
			done <- r
			return
		}
		r.over[0], _, r.err = pf.Over() // alone: at the limit
		if r.err == nil {
			r.err = m.SetPids(0)
		}
		if r.err == nil {
			r.err = m.SetPids(0) // twice: no limit is no limit
		}
		var over bool
		if r.err == nil {
			over, r.limit, r.err = pf.Over()
			r.over[1] = over
		}
		if lerr := Move(files.Leave); r.err == nil {
			r.err = lerr
		}
		done <- r
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.over != [2]bool{false, false} || r.limit != -1 {
		t.Errorf("one thread in, limit 1 then none: over %v, limit %d; want no overrun, then no limit", r.over, r.limit)
	}
	if err := m.SetPids(1); err != nil {
		t.Fatal(err)
	}
	// Two threads: the second is one more than the limit.
	first := joinedThread(t, files)
	defer first()
	second := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := Move(files.Join)
		if err != nil {
			second <- err
			return
		}
		over, _, err := pf.Over()
		if lerr := Move(files.Leave); err == nil {
			err = lerr
		}
		if err == nil && !over {
			err = fmt.Errorf("second thread in a cgroup limited to 1: not over the limit")
		}
		second <- err
	}()
	if err := <-second; err != nil {
		t.Fatal(err)
	}
}

// joinedThread parks a thread in the cgroup of files until the returned
// function is called, which takes it out again.
func joinedThread(t *testing.T, files *ThreadFiles) (leave func()) {
	t.Helper()
	joined, release, left := make(chan error, 1), make(chan struct{}), make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		joined <- Move(files.Join)
		<-release
		left <- Move(files.Leave)
	}()
	if err := <-joined; err != nil {
		t.Fatal(err)
	}
	return func() {
		close(release)
		if err := <-left; err != nil {
			t.Error(err)
		}
	}
}
