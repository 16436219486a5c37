package cgroups

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
)

// fakeTree writes regular files standing in for cgroupfs interface files.
func fakeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, val := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(val), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestV2Files checks what Create, Update and Stats write and read, on a
// directory tree of plain files that mimics a cgroup2 mount.
func TestV2Files(t *testing.T) {
	root := t.TempDir()
	leaf := map[string]string{
		"cgroup.controllers": "cpu memory pids", "memory.max": "", "memory.swap.max": "",
		"cpu.max": "", "cpu.weight": "", "pids.max": "",
	}
	files := map[string]string{
		"cgroup.controllers":           "cpuset cpu io memory pids",
		"cgroup.subtree_control":       "",
		"berth/cgroup.controllers":     "cpu memory pids",
		"berth/cgroup.subtree_control": "memory",
	}
	for k, v := range leaf {
		files["berth/x/"+k] = v
	}
	// The pids limit is on a threaded cgroup below (threadsDir), which
	// a fake tree cannot make: it is there already.
	files["berth/x/cgroup.subtree_control"] = ""
	files["berth/x/workload/cgroup.type"] = ""
	files["berth/x/workload/pids.max"] = ""
	files["berth/x/workload/pids.current"] = "3\n"
	fakeTree(t, root, files)
	m, err := NewV2(root, "/berth/x")
	if err != nil {
		t.Fatal(err)
	}
	check := func(name, want string) {
		t.Helper()
		if got := readFile(t, filepath.Join(root, name)); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if err := m.Create(Resources{Memory: 64 << 20, CPUQuota: 50000, CPUShares: 1024, Pids: 10}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	check("cgroup.subtree_control", "+cpu +memory +pids +cpuset +io")
	check("berth/cgroup.subtree_control", "+cpu +pids") // memory already on
	check("berth/x/memory.max", "67108864")
	check("berth/x/memory.swap.max", "0")
	check("berth/x/cpu.max", "50000 100000")
	check("berth/x/cpu.weight", "39")
	check("berth/x/workload/pids.max", "10")

	if err := m.Update(Resources{Memory: 64 << 20, MemorySwap: 96 << 20, CPUPeriod: 20000}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	check("berth/x/memory.swap.max", "33554432")
	check("berth/x/cpu.max", "max 20000")
	check("berth/x/cpu.weight", "100")
	check("berth/x/workload/pids.max", "max")
	if err := m.Update(Resources{Memory: 64 << 20, MemorySwap: -1}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	check("berth/x/memory.swap.max", "max")
	if err := m.Update(Resources{}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	check("berth/x/memory.max", "max")
	check("berth/x/memory.swap.max", "max")

	fakeTree(t, root, map[string]string{
		"berth/x/memory.current": "12345\n",
		"berth/x/memory.peak":    "99999\n",
		"berth/x/memory.events":  "low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\noom_group_kill 0\n",
		"berth/x/pids.current":   "3\n",
		"berth/x/cpu.stat":       "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
		"berth/x/memory.max":     "67108864\n",
		"berth/x/io.stat":        "254:0 rbytes=4096 wbytes=100 rios=1 wios=1 dbytes=0 dios=0\n8:0 rbytes=1000 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
	})
	st, err := m.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if want := (Stats{MemoryUsage: 12345, MemoryPeak: 99999, OOMKills: 1, Pids: 3, CPUUsageNS: 1500000, MemoryLimit: 64 << 20, IORead: 5096, IOWrite: 100}); st != want {
		t.Errorf("Stats = %+v, want %+v", st, want)
	}

	// A limit whose controller the cgroup lacks is refused; no limit is fine.
	fakeTree(t, root, map[string]string{"berth/x/cgroup.controllers": "pids"})
	if err := m.Update(Resources{Memory: 1 << 20}); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "memory controller not available") {
		t.Errorf("memory limit without memory controller: %v, want ErrUnavailable", err)
	}
	if err := m.Update(Resources{Pids: 5}); err != nil {
		t.Errorf("pids limit with only pids: %v", err)
	}
}

// unifiedMount returns the mount point of the host's cgroup2 hierarchy, or
// skips the test.
func unifiedMount(t *testing.T) string {
	t.Helper()
	requireRoot(t)
	switch DetectMode() {
	case ModeV2:
		return Root
	case ModeHybrid:
		return Root + "/unified"
	}
	t.Skip("cgroup v2 not mounted")
	return ""
}

// newTestV2 creates the running test's cgroup in the cgroup2 hierarchy at
// mnt and arranges for its removal.
func newTestV2(t *testing.T, mnt string, r Resources) *v2 {
	t.Helper()
	mg, err := NewV2(mnt, testPath(t))
	if err != nil {
		t.Fatal(err)
	}
	m := mg.(*v2)
	cleanupCgroup(t, m, mnt)
	if err := m.Create(r); err != nil {
		t.Fatalf("Create: %v", err)
	}
	return m
}

// TestV2Plumbing drives Create, Add, FD, Pids, Freeze, Thaw and Destroy on
// the real cgroup2 hierarchy. On a hybrid host that is the controller-less
// /sys/fs/cgroup/unified, which still has cgroup.procs, cgroup.freeze and
// cgroup.kill.
func TestV2Plumbing(t *testing.T) {
	mnt := unifiedMount(t)
	m := newTestV2(t, mnt, Resources{})

	cmd := startSleep(t, nil)
	if err := m.Add(cmd.Process.Pid); err != nil {
		t.Fatalf("Add: %v", err)
	}
	fd, ok, err := m.FD()
	if err != nil || !ok {
		t.Fatalf("FD = %d, %v, %v", fd, ok, err)
	}
	cmd2 := startSleep(t, &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd})
	syscall.Close(fd)
	for _, c := range []*exec.Cmd{cmd, cmd2} {
		if line := procCgroupLine(t, c.Process.Pid, ""); line != "0::"+m.Path() {
			t.Errorf("pid %d: /proc cgroup line %q, want 0::%s", c.Process.Pid, line, m.Path())
		}
	}
	pids, err := m.Pids()
	slices.Sort(pids)
	want := []int{cmd.Process.Pid, cmd2.Process.Pid}
	slices.Sort(want)
	if err != nil || !slices.Equal(pids, want) {
		t.Errorf("Pids = %v, %v; want %v", pids, err, want)
	}
	if _, err := m.Stats(); err != nil {
		t.Errorf("Stats: %v", err)
	}

	frozen := func() uint64 {
		v, _, err := readKey(m.path, m.dir, "cgroup.events", "frozen")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if err := m.Freeze(); err != nil {
		t.Fatalf("Freeze: %v", err)
	}
	if frozen() != 1 {
		t.Errorf("cgroup.events frozen != 1 after Freeze")
	}
	if err := m.Thaw(); err != nil {
		t.Fatalf("Thaw: %v", err)
	}
	if frozen() != 0 {
		t.Errorf("cgroup.events frozen != 0 after Thaw")
	}

	// A nested cgroup with a process, then Destroy from the frozen state.
	child := filepath.Join(m.dir, "child")
	if err := os.Mkdir(child, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(child, "cgroup.procs"), []byte(strconv.Itoa(cmd2.Process.Pid)), 0); err != nil {
		t.Fatal(err)
	}
	if err := m.Freeze(); err != nil {
		t.Fatalf("Freeze: %v", err)
	}
	if err := m.Destroy(); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	for _, c := range []*exec.Cmd{cmd, cmd2} {
		if sig := killedBy(t, c); sig != syscall.SIGKILL {
			t.Errorf("pid %d ended by signal %v, want SIGKILL", c.Process.Pid, sig)
		}
	}
	if exists(m.dir) {
		t.Errorf("%s still exists after Destroy", m.dir)
	}
	if err := m.Destroy(); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
}

// TestV2KillLoop checks Destroy's fallback for kernels without cgroup.kill,
// by calling the same steps it takes there.
func TestV2KillLoop(t *testing.T) {
	mnt := unifiedMount(t)
	m := newTestV2(t, mnt, Resources{})
	cmd := startSleep(t, nil)
	if err := m.Add(cmd.Process.Pid); err != nil {
		t.Fatalf("Add: %v", err)
	}
	if err := m.Freeze(); err != nil {
		t.Fatalf("Freeze: %v", err)
	}
	pids, err := treeProcs(m.path, m.dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := killAll(m.path, pids); err != nil {
		t.Fatal(err)
	}
	if err := m.Thaw(); err != nil {
		t.Fatal(err)
	}
	if sig := killedBy(t, cmd); sig != syscall.SIGKILL {
		t.Errorf("ended by signal %v, want SIGKILL", sig)
	}
	if err := removeTree(m.path, m.dir); err != nil {
		t.Fatalf("removeTree: %v", err)
	}
}

// v2WithControllers returns a cgroup2 mount whose root offers cpu, memory
// and pids, or skips the test.
func v2WithControllers(t *testing.T) string {
	t.Helper()
	requireRoot(t)
	for _, mnt := range []string{Root, Root + "/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(mnt, &st) != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
			continue
		}
		b, err := os.ReadFile(filepath.Join(mnt, "cgroup.controllers"))
		if err != nil {
			continue
		}
		have := strings.Fields(string(b))
		if slices.Contains(have, "cpu") && slices.Contains(have, "memory") && slices.Contains(have, "pids") {
			return mnt
		}
	}
	t.Skip("cgroup v2 with controllers not mounted")
	return ""
}

func TestV2Limits(t *testing.T) {
	mnt := v2WithControllers(t)
	m := newTestV2(t, mnt, Resources{Memory: 64 << 20, CPUQuota: 50000, CPUShares: 512, Pids: 10})
	check := func(name, want string) {
		t.Helper()
		if name == "memory.swap.max" && !exists(filepath.Join(m.dir, name)) {
			return
		}
		if got := readFile(t, filepath.Join(m.dir, name)); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	check("memory.max", "67108864")
	check("memory.swap.max", "0")
	check("cpu.max", "50000 100000")
	check("cpu.weight", "20")
	check("workload/pids.max", "10")
}

func TestV2OOMKill(t *testing.T) {
	mnt := v2WithControllers(t)
	m := newTestV2(t, mnt, Resources{Memory: 32 << 20})
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
}

func TestV2PidsLimit(t *testing.T) {
	mnt := v2WithControllers(t)
	testPidsLimit(t, intoThreads{newTestV2(t, mnt, Resources{Pids: 2})})
}

// intoThreads adds a process to the cgroup, then moves it into the
// threaded cgroup that holds the pids limit (threadsDir), where a
// container's workload is.
type intoThreads struct{ *v2 }

func (m intoThreads) Add(pid int) error {
	if err := m.v2.Add(pid); err != nil {
		return err
	}
	return writeFile(m.path, filepath.Join(m.dir, threadsDir), "cgroup.procs", strconv.Itoa(pid))
}
