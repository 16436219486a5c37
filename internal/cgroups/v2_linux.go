package cgroups

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
)

// v2Controllers are the controllers berth enables for its cgroups, where the
// parent offers them.
var v2Controllers = []string{"cpu", "memory", "pids", "cpuset", "io", "hugetlb"}

// v2 is a cgroup in a unified (cgroup2) hierarchy.
type v2 struct {
	mount, path, dir string
}

// NewV2 returns a Manager for the cgroup at path (e.g. "/berth/ID") in the
// cgroup2 hierarchy mounted at mountpoint ("/sys/fs/cgroup" on a v2 host,
// "/sys/fs/cgroup/unified" on a hybrid one, or a guest's own mount). It does
// not check the file system type nor touch the file system; call Create.
func NewV2(mountpoint, path string) (Manager, error) {
	if err := checkPath(path); err != nil {
		return nil, err
	}
	if !filepath.IsAbs(mountpoint) {
		return nil, fmt.Errorf("cgroup %s: mount point %q is not absolute: %w", path, mountpoint, errdefs.ErrInvalid)
	}
	mountpoint = filepath.Clean(mountpoint)
	return &v2{mount: mountpoint, path: path, dir: filepath.Join(mountpoint, path)}, nil
}

// Path implements Manager.
func (m *v2) Path() string { return m.path }

// FD implements Manager: it opens the cgroup's directory for
// SysProcAttr.UseCgroupFD.
func (m *v2) FD() (int, bool, error) {
	fd, err := unix.Open(m.dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, false, fsError(m.path, "open", m.dir, err)
	}
	return fd, true, nil
}

// Create implements Manager. From the mount point down to the cgroup's parent
// it enables, in each level's cgroup.subtree_control, those of cpu, memory
// and pids that the level offers in cgroup.controllers, making missing
// levels on the way; then it makes the cgroup and applies r. Directories this
// call made are removed again if it fails.
func (m *v2) Create(r Resources) (err error) {
	if err := checkResources(m.path, r); err != nil {
		return err
	}
	var made []string
	defer func() {
		if err != nil {
			for i := len(made) - 1; i >= 0; i-- {
				_ = unix.Rmdir(made[i])
			}
		}
	}()
	cur := m.mount
	for _, p := range strings.Split(strings.TrimPrefix(m.path, "/"), "/") {
		if err := m.enable(cur); err != nil {
			return err
		}
		cur = filepath.Join(cur, p)
		if made, err = mkdirOnce(m.path, cur, made); err != nil {
			return err
		}
	}
	return m.Update(r)
}

// enable turns on, in dir's cgroup.subtree_control, the wanted controllers
// that dir offers and has not enabled yet.
func (m *v2) enable(dir string) error {
	offered, err := readString(m.path, dir, "cgroup.controllers")
	if err != nil {
		return err
	}
	enabled, err := readString(m.path, dir, "cgroup.subtree_control")
	if err != nil {
		return err
	}
	var add []string
	for _, c := range v2Controllers {
		if slices.Contains(strings.Fields(offered), c) && !slices.Contains(strings.Fields(enabled), c) {
			add = append(add, "+"+c)
		}
	}
	if len(add) == 0 {
		return nil
	}
	return writeFile(m.path, dir, "cgroup.subtree_control", strings.Join(add, " "))
}

// has reports whether controller c is enabled for this cgroup (listed in its
// cgroup.controllers).
func (m *v2) has(c string) (bool, error) {
	s, err := readString(m.path, m.dir, "cgroup.controllers")
	if err != nil {
		return false, err
	}
	return slices.Contains(strings.Fields(s), c), nil
}

// Update implements Manager. r replaces every limit: a zero field removes
// that limit. A limit whose controller the cgroup lacks is an error
// (ErrUnavailable); removing one is not. memory.swap.max is swap alone, so
// it is MemorySwap-Memory: 0 by default, "max" when MemorySwap is -1.
func (m *v2) Update(r Resources) error {
	if err := checkResources(m.path, r); err != nil {
		return err
	}
	mem, swap := "max", "max"
	if r.Memory > 0 {
		mem = strconv.FormatInt(r.Memory, 10)
		switch {
		case r.MemorySwap == 0:
			swap = "0"
		case r.MemorySwap > 0:
			swap = strconv.FormatInt(r.MemorySwap-r.Memory, 10)
		}
	}
	period := r.CPUPeriod
	if period == 0 {
		period = DefaultCPUPeriod
	}
	quota := "max"
	if r.CPUQuota > 0 {
		quota = strconv.FormatInt(r.CPUQuota, 10)
	}
	weight := uint64(100)
	if r.CPUShares > 0 {
		weight = sharesToWeight(r.CPUShares)
	}
	writes := []struct {
		ctrl, file, val string
		limit, optional bool
	}{
		{"memory", "memory.max", mem, r.Memory > 0, false},
		{"memory", "memory.swap.max", swap, r.Memory > 0, true},
		{"cpu", "cpu.max", quota + " " + strconv.FormatUint(period, 10), r.CPUQuota > 0 || r.CPUPeriod > 0, false},
		{"cpu", "cpu.weight", strconv.FormatUint(weight, 10), r.CPUShares > 0, false},
	}
	for _, w := range writes {
		ok, err := m.has(w.ctrl)
		if err != nil {
			return err
		}
		if !ok {
			if w.limit {
				return fmt.Errorf("cgroup %s: %s controller not available for %s: %w", m.path, w.ctrl, w.file, errdefs.ErrUnavailable)
			}
			continue
		}
		if w.optional && !exists(filepath.Join(m.dir, w.file)) {
			continue // no swap accounting in this kernel
		}
		if err := writeFile(m.path, m.dir, w.file, w.val); err != nil {
			return err
		}
	}
	if err := m.SetPids(r.Pids); err != nil {
		return err
	}
	return m.setDevices(r.Devices)
}

// threadsDir is the threaded cgroup below a v2 cgroup under a pids limit:
// the limit is its pids.max, and the workload's threads join it alone
// (ThreadFiles), as on v1. A container's init is a Go process whose
// threads (half a dozen) would otherwise count against the limit from
// its clone into the cgroup on: a limit below them kills the init, and
// one above lets the workload have fewer processes than it asked for.
// The cgroup itself becomes a threaded domain: memory, io and the device
// program stay on it and cover the whole subtree, and cgroup.procs,
// cgroup.kill and cgroup.freeze there still act on every process.
const threadsDir = "workload"

// SetPids implements Manager. The limit is on the threaded cgroup
// threadsDir, made on the first limit; the cgroup's own pids.max stays
// "max". Removing the limit leaves threadsDir in place, unlimited.
func (m *v2) SetPids(n int64) error {
	ok, err := m.has("pids")
	if err != nil {
		return err
	}
	if !ok {
		if n > 0 {
			return fmt.Errorf("cgroup %s: pids controller not available for pids.max: %w", m.path, errdefs.ErrUnavailable)
		}
		return nil
	}
	dir := filepath.Join(m.dir, threadsDir)
	if n <= 0 {
		if !exists(dir) {
			return nil
		}
		return writeFile(m.path, dir, "pids.max", "max")
	}
	if !exists(filepath.Join(dir, "pids.max")) {
		// The child first, made threaded (which turns the cgroup into
		// a threaded domain, with or without the init in it), then the
		// pids controller for it: a threaded controller may be enabled
		// where processes are.
		if _, err := mkdirOnce(m.path, dir, nil); err != nil {
			return err
		}
		if err := writeFile(m.path, dir, "cgroup.type", "threaded"); err != nil {
			return err
		}
		if err := writeFile(m.path, m.dir, "cgroup.subtree_control", "+pids"); err != nil {
			return err
		}
	}
	return writeFile(m.path, dir, "pids.max", pidsValue(n))
}

// PidsFiles implements Manager: those of threadsDir, where the limit is.
func (m *v2) PidsFiles() (*PidsFiles, error) {
	if dir := filepath.Join(m.dir, threadsDir); exists(dir) {
		return openPidsFiles(m.path, dir)
	}
	return openPidsFiles(m.path, m.dir)
}

// Add implements Manager.
func (m *v2) Add(pid int) error {
	return writeFile(m.path, m.dir, "cgroup.procs", strconv.Itoa(pid))
}

// ThreadFiles implements Manager. v2 moves threads only inside a
// threaded subtree: under a pids limit, Join is threadsDir's
// cgroup.threads and Leave the cgroup's own (the thread comes from a
// process cloned into the cgroup, FD); without one there is no subtree,
// and a process is cloned into the cgroup instead.
func (m *v2) ThreadFiles() (_ *ThreadFiles, err error) {
	dir := filepath.Join(m.dir, threadsDir)
	if !exists(dir) {
		return nil, fmt.Errorf("cgroup %s: a thread cannot join a v2 domain cgroup alone; clone into it: %w", m.path, errdefs.ErrNotSupported)
	}
	join, err := os.OpenFile(filepath.Join(dir, "cgroup.threads"), os.O_WRONLY, 0)
	if err != nil {
		return nil, fsError(m.path, "open", filepath.Join(dir, "cgroup.threads"), err)
	}
	leave, err := os.OpenFile(filepath.Join(m.dir, "cgroup.threads"), os.O_WRONLY, 0)
	if err != nil {
		join.Close()
		return nil, fsError(m.path, "open", filepath.Join(m.dir, "cgroup.threads"), err)
	}
	return &ThreadFiles{Join: []*os.File{join}, Leave: []*os.File{leave}}, nil
}

// Pids implements Manager.
func (m *v2) Pids() ([]int, error) {
	return readProcs(m.path, m.dir)
}

// Stats implements Manager. Counters of controllers the cgroup lacks read as
// zero; CPU time comes from cpu.stat, which every non-root cgroup has.
func (m *v2) Stats() (Stats, error) {
	var s Stats
	if !exists(m.dir) {
		return s, fsError(m.path, "read", m.dir, os.ErrNotExist)
	}
	var err error
	optInt := func(name string) (int64, error) {
		if !exists(filepath.Join(m.dir, name)) {
			return 0, nil
		}
		return readInt(m.path, m.dir, name)
	}
	optKey := func(name, key string) (uint64, error) {
		if !exists(filepath.Join(m.dir, name)) {
			return 0, nil
		}
		v, _, err := readKey(m.path, m.dir, name, key)
		return v, err
	}
	if s.MemoryUsage, err = optInt("memory.current"); err != nil {
		return Stats{}, err
	}
	if s.MemoryPeak, err = optInt("memory.peak"); err != nil {
		return Stats{}, err
	}
	if s.OOMKills, err = optKey("memory.events", "oom_kill"); err != nil {
		return Stats{}, err
	}
	// Under a pids limit, the workload's tasks (threadsDir), as on v1;
	// an init that stays is outside, as there.
	if exists(filepath.Join(m.dir, threadsDir, "pids.current")) {
		s.Pids, err = readInt(m.path, filepath.Join(m.dir, threadsDir), "pids.current")
	} else {
		s.Pids, err = optInt("pids.current")
	}
	if err != nil {
		return Stats{}, err
	}
	usec, err := optKey("cpu.stat", "usage_usec")
	if err != nil {
		return Stats{}, err
	}
	s.CPUUsageNS = usec * 1000
	if s.MemoryLimit, err = optInt("memory.max"); err != nil {
		return Stats{}, err
	}
	s.MemoryLimit = max(s.MemoryLimit, 0) // "max" reads as -1
	s.IORead, s.IOWrite = -1, -1
	if exists(filepath.Join(m.dir, "io.stat")) {
		if s.IORead, s.IOWrite, err = readIOStat(m.path, m.dir); err != nil {
			return Stats{}, err
		}
	}
	return s, nil
}

// readIOStat sums rbytes and wbytes over the devices of io.stat, whose
// lines read "MAJ:MIN rbytes=N wbytes=N rios=N ...".
func readIOStat(cg, dir string) (read, write int64, err error) {
	b, err := os.ReadFile(filepath.Join(dir, "io.stat"))
	if err != nil {
		return 0, 0, fsError(cg, "read", "io.stat", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		for _, kv := range strings.Fields(line) {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "rbytes":
				read += n
			case "wbytes":
				write += n
			}
		}
	}
	return read, write, nil
}

// OOMKills implements Manager: memory.events' oom_kill (0 without the
// memory controller).
func (m *v2) OOMKills() (uint64, error) {
	if !exists(filepath.Join(m.dir, "memory.events")) {
		return 0, nil
	}
	n, _, err := readKey(m.path, m.dir, "memory.events", "oom_kill")
	return n, err
}

// Freeze implements Manager with cgroup.freeze, waiting until cgroup.events
// reports "frozen 1". If that does not happen within settleTimeout the cgroup
// is thawed again and an error returned.
func (m *v2) Freeze() error { return m.setFrozen(true) }

// Thaw implements Manager.
func (m *v2) Thaw() error { return m.setFrozen(false) }

func (m *v2) setFrozen(on bool) error {
	want := uint64(0)
	if on {
		want = 1
	}
	if err := writeFile(m.path, m.dir, "cgroup.freeze", strconv.FormatUint(want, 10)); err != nil {
		return err
	}
	deadline := time.Now().Add(settleTimeout)
	for {
		v, _, err := readKey(m.path, m.dir, "cgroup.events", "frozen")
		if err != nil {
			return err
		}
		if v == want {
			return nil
		}
		if time.Now().After(deadline) {
			if on {
				_ = writeFile(m.path, m.dir, "cgroup.freeze", "0")
			}
			return fmt.Errorf("cgroup %s: cgroup.events still says frozen %d after %v: %w", m.path, v, settleTimeout, errdefs.ErrConflict)
		}
		time.Sleep(pollInterval)
	}
}

// Destroy implements Manager: it kills every process in the cgroup and below
// it (with cgroup.kill where the kernel has it, 5.14 and later, otherwise by
// freezing, SIGKILLing each pid and thawing), waits (bounded) until
// cgroup.events says "populated 0", and removes the directories bottom-up.
// Parents such as /berth are left in place.
func (m *v2) Destroy() error {
	attachedRules.Delete(m.dir)
	if !exists(m.dir) {
		return nil
	}
	useKill := exists(filepath.Join(m.dir, "cgroup.kill"))
	if useKill {
		if err := writeFile(m.path, m.dir, "cgroup.kill", "1"); err != nil {
			return err
		}
	}
	frozen := !useKill && m.Freeze() == nil
	deadline := time.Now().Add(settleTimeout)
	for {
		populated, _, err := readKey(m.path, m.dir, "cgroup.events", "populated")
		if err != nil {
			return err
		}
		if populated == 0 {
			break
		}
		if !useKill {
			pids, err := treeProcs(m.path, m.dir)
			if err != nil {
				return err
			}
			if err := killAll(m.path, pids); err != nil {
				return err
			}
			if frozen {
				if err := m.Thaw(); err != nil {
					return err
				}
				frozen = false
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s: processes still present %v after SIGKILL: %w", m.path, settleTimeout, errdefs.ErrConflict)
		}
		time.Sleep(pollInterval)
	}
	if frozen {
		_ = m.Thaw()
	}
	return removeTree(m.path, m.dir)
}

// sharesToWeight converts v1 cpu.shares (2..262144) to a v2 cpu.weight
// (1..10000), mapping the v1 default 1024 close to the v2 default 100.
func sharesToWeight(shares uint64) uint64 {
	if shares < 2 {
		shares = 2
	}
	if shares > 262144 {
		shares = 262144
	}
	return 1 + ((shares-2)*9999)/262142
}
