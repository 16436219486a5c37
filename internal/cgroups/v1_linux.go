package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
)

// v1Required are the controllers every v1 cgroup of berth's lives in;
// v1Optional are joined when the host mounts them.
var (
	v1Required = []string{"memory", "cpu", "cpuacct", "pids"}
	v1Optional = []string{"cpuset", "freezer", "devices", "blkio", "hugetlb", "net_cls", "net_prio"}
)

// v1 is a cgroup spread over the v1 controller hierarchies.
type v1 struct {
	path string
	dirs map[string]string // controller -> this cgroup's directory
	// hier lists each hierarchy once (co-mounted controllers share one).
	hier []v1Hier
}

// v1Hier is one mounted v1 hierarchy and this cgroup's directory in it.
type v1Hier struct {
	mount, dir string
	ctrl       string // one controller of the hierarchy, naming it in /proc/*/cgroup
	cpuset     bool   // the hierarchy carries cpuset, whose new cgroups start empty
	pids       bool   // the hierarchy carries pids
}

// NewV1 returns a Manager for the cgroup at path (e.g. "/berth/ID") in the
// host's v1 hierarchies, found in /proc/self/mountinfo. The memory, cpu,
// cpuacct and pids controllers must be mounted; cpuset, freezer, devices,
// blkio, hugetlb, net_cls and net_prio are used when they are. It does not
// touch the file system; call Create.
func NewV1(path string) (Manager, error) {
	if err := checkPath(path); err != nil {
		return nil, err
	}
	mounts, err := v1Mounts()
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", path, err)
	}
	return newV1(path, mounts)
}

// newV1 builds the Manager from a controller -> mount point map.
func newV1(path string, mounts map[string]string) (*v1, error) {
	m := &v1{path: path, dirs: map[string]string{}}
	seen := map[string]bool{}
	add := func(c string) {
		mnt := mounts[c]
		dir := filepath.Join(mnt, path)
		m.dirs[c] = dir
		if !seen[mnt] {
			seen[mnt] = true
			m.hier = append(m.hier, v1Hier{mount: mnt, dir: dir, ctrl: c})
		}
		for i := range m.hier {
			if m.hier[i].mount == mnt {
				m.hier[i].cpuset = m.hier[i].cpuset || c == "cpuset"
				m.hier[i].pids = m.hier[i].pids || c == "pids"
			}
		}
	}
	for _, c := range v1Required {
		if _, ok := mounts[c]; !ok {
			return nil, fmt.Errorf("cgroup %s: %s controller not mounted: %w", path, c, errdefs.ErrUnavailable)
		}
		add(c)
	}
	for _, c := range v1Optional {
		if _, ok := mounts[c]; ok {
			add(c)
		}
	}
	return m, nil
}

// Path implements Manager.
func (m *v1) Path() string { return m.path }

// FD implements Manager: v1 has no CLONE_INTO_CGROUP, the caller uses Add.
func (m *v1) FD() (int, bool, error) { return -1, false, nil }

// Create implements Manager. It makes the cgroup's directory, and any missing
// parent, in every hierarchy, seeding cpuset.cpus and cpuset.mems from the
// parent (a new cpuset cgroup starts empty and no task could join it), then
// applies r. Directories this call made are removed again if it fails.
// A cgroup made anew starts at the kernel's defaults, so only the limits
// r sets are written to it (a container start pays for each write).
func (m *v1) Create(r Resources) (err error) {
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
	fresh := true
	for _, h := range m.hier {
		// The parents exist but on first use: one mkdir, usually.
		err := unix.Mkdir(h.dir, 0o755)
		switch {
		case err == nil:
			made = append(made, h.dir)
		case errors.Is(err, unix.EEXIST):
			fresh = false
		case errors.Is(err, unix.ENOENT):
			if made, err = m.makeParents(h, made); err != nil {
				return err
			}
			if err := unix.Mkdir(h.dir, 0o755); err != nil {
				return fsError(m.path, "create", h.dir, err)
			}
			made = append(made, h.dir)
		default:
			return fsError(m.path, "create", h.dir, err)
		}
		if h.cpuset {
			if err := m.seedCpuset(filepath.Dir(h.dir), h.dir); err != nil {
				return err
			}
		}
	}
	return m.apply(r, fresh)
}

// makeParents makes the missing parents of h's cgroup directory, top
// down, seeding the cpuset ones, and adds them to made.
func (m *v1) makeParents(h v1Hier, made []string) ([]string, error) {
	parts := strings.Split(strings.TrimPrefix(m.path, "/"), "/")
	cur := h.mount
	for _, p := range parts[:len(parts)-1] {
		parent := cur
		cur = filepath.Join(cur, p)
		var err error
		if made, err = mkdirOnce(m.path, cur, made); err != nil {
			return made, err
		}
		if h.cpuset {
			if err := m.seedCpuset(parent, cur); err != nil {
				return made, err
			}
		}
	}
	return made, nil
}

// seedCpuset copies cpuset.cpus and cpuset.mems from parent into dir where
// dir's are empty.
func (m *v1) seedCpuset(parent, dir string) error {
	for _, name := range []string{"cpuset.cpus", "cpuset.mems"} {
		cur, err := readString(m.path, dir, name)
		if err != nil {
			return err
		}
		if cur != "" {
			continue
		}
		val, err := readString(m.path, parent, name)
		if err != nil {
			return err
		}
		if err := writeFile(m.path, dir, name, val); err != nil {
			return err
		}
	}
	return nil
}

// Update implements Manager. r replaces every limit: a zero field removes
// that limit (memory and swap unlimited, no CFS quota, 1024 shares, no pids
// limit).
func (m *v1) Update(r Resources) error {
	if err := checkResources(m.path, r); err != nil {
		return err
	}
	return m.apply(r, false)
}

// apply writes r; fresh skips the limits r leaves unset, which a new
// cgroup has already.
func (m *v1) apply(r Resources, fresh bool) error {
	if !fresh || r.Memory > 0 {
		if err := m.setMemory(r); err != nil {
			return err
		}
	}
	cpu := m.dirs["cpu"]
	period := r.CPUPeriod
	if period == 0 && r.CPUQuota > 0 {
		period = DefaultCPUPeriod
	}
	if period > 0 {
		if err := writeFile(m.path, cpu, "cpu.cfs_period_us", strconv.FormatUint(period, 10)); err != nil {
			return err
		}
	}
	quota := int64(-1)
	if r.CPUQuota > 0 {
		quota = r.CPUQuota
	}
	if !fresh || r.CPUQuota > 0 {
		if err := writeFile(m.path, cpu, "cpu.cfs_quota_us", strconv.FormatInt(quota, 10)); err != nil {
			return err
		}
	}
	shares := uint64(1024)
	if r.CPUShares > 0 {
		shares = r.CPUShares
	}
	if !fresh || r.CPUShares > 0 {
		if err := writeFile(m.path, cpu, "cpu.shares", strconv.FormatUint(shares, 10)); err != nil {
			return err
		}
	}
	if !fresh || r.Pids > 0 {
		if err := m.SetPids(r.Pids); err != nil {
			return err
		}
	}
	return m.setDevices(r.Devices)
}

func (m *v1) setDevices(rules []DeviceRule) error {
	if rules == nil {
		return nil
	}
	dir, ok := m.dirs["devices"]
	if !ok {
		return fmt.Errorf("cgroup %s: device rules need the devices controller, which is not mounted: %w", m.path, errdefs.ErrUnavailable)
	}
	// One open per run of rules for the same file; one write per rule,
	// which is what the kernel parses.
	for i := 0; i < len(rules); {
		j := i + 1
		for j < len(rules) && rules[j].Allow == rules[i].Allow {
			j++
		}
		file := "devices.deny"
		if rules[i].Allow {
			file = "devices.allow"
		}
		vals := make([]string, 0, j-i)
		for _, d := range rules[i:j] {
			vals = append(vals, d.String())
		}
		if err := writeLines(m.path, dir, file, vals); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// setMemory writes memory.limit_in_bytes and, where swap accounting exists,
// memory.memsw.limit_in_bytes. The kernel insists that the memory limit never
// exceeds the memory+swap one, so a rising memsw is written first and a
// falling one last.
func (m *v1) setMemory(r Resources) error {
	dir := m.dirs["memory"]
	mem, memsw := int64(-1), int64(-1)
	if r.Memory > 0 {
		mem = r.Memory
		switch {
		case r.MemorySwap == 0:
			memsw = mem
		case r.MemorySwap > 0:
			memsw = r.MemorySwap
		}
	}
	const memFile, swFile = "memory.limit_in_bytes", "memory.memsw.limit_in_bytes"
	if !exists(filepath.Join(dir, swFile)) {
		return writeFile(m.path, dir, memFile, strconv.FormatInt(mem, 10))
	}
	cur, err := readInt(m.path, dir, swFile)
	if err != nil {
		return err
	}
	swapFirst := memsw == -1 || memsw > cur
	order := []struct {
		name string
		val  int64
	}{{memFile, mem}, {swFile, memsw}}
	if swapFirst {
		order[0], order[1] = order[1], order[0]
	}
	for _, w := range order {
		if err := writeFile(m.path, dir, w.name, strconv.FormatInt(w.val, 10)); err != nil {
			return err
		}
	}
	return nil
}

// Add implements Manager: it writes pid into cgroup.procs of every hierarchy.
func (m *v1) Add(pid int) error {
	for _, h := range m.hier {
		if err := writeFile(m.path, h.dir, "cgroup.procs", strconv.Itoa(pid)); err != nil {
			return err
		}
	}
	return nil
}

// SetPids implements Manager.
func (m *v1) SetPids(n int64) error {
	return writeFile(m.path, m.dirs["pids"], "pids.max", pidsValue(n))
}

// PidsFiles implements Manager.
func (m *v1) PidsFiles() (*PidsFiles, error) {
	return openPidsFiles(m.path, m.dirs["pids"])
}

// ThreadFiles implements Manager.
func (m *v1) ThreadFiles() (_ *ThreadFiles, err error) {
	own, err := threadCgroups()
	if err != nil {
		return nil, fsError(m.path, "read", "/proc/thread-self/cgroup", err)
	}
	// pids last in Join, first in Leave.
	hier := make([]v1Hier, 0, len(m.hier))
	for _, pids := range []bool{false, true} {
		for _, h := range m.hier {
			if h.pids == pids {
				hier = append(hier, h)
			}
		}
	}
	t := &ThreadFiles{}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	for _, h := range hier {
		p, ok := own[h.ctrl]
		if !ok {
			return nil, fmt.Errorf("cgroup %s: the calling thread is in no %s cgroup: %w", m.path, h.ctrl, errdefs.ErrUnavailable)
		}
		join, err := os.OpenFile(filepath.Join(h.dir, "tasks"), os.O_WRONLY, 0)
		if err != nil {
			return nil, fsError(m.path, "open", filepath.Join(h.dir, "tasks"), err)
		}
		t.Join = append(t.Join, join)
		back := filepath.Join(h.mount, p, "tasks")
		leave, err := os.OpenFile(back, os.O_WRONLY, 0)
		if err != nil {
			return nil, fsError(m.path, "open", back, err)
		}
		t.Leave = append([]*os.File{leave}, t.Leave...)
	}
	return t, nil
}

// threadCgroups maps each v1 controller to the calling thread's cgroup
// path in its hierarchy, from /proc/thread-self/cgroup.
func threadCgroups() (map[string]string, error) {
	b, err := os.ReadFile("/proc/thread-self/cgroup")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		// ID:CONTROLLERS:PATH
		_, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		ctrls, path, ok := strings.Cut(rest, ":")
		if !ok || ctrls == "" {
			continue
		}
		for _, c := range strings.Split(ctrls, ",") {
			out[c] = path
		}
	}
	return out, nil
}

// Pids implements Manager, reading the pids controller's cgroup.procs.
func (m *v1) Pids() ([]int, error) {
	return readProcs(m.path, m.dirs["pids"])
}

// presentProcs lists the processes in the cgroup trees at dirs, skipping
// those another berth process removed meanwhile.
func (m *v1) presentProcs(dirs []string) ([]int, error) {
	var pids []int
	for _, dir := range dirs {
		p, err := treeProcs(m.path, dir)
		if err != nil {
			if !exists(dir) {
				continue
			}
			return nil, err
		}
		pids = append(pids, p...)
	}
	return pids, nil
}

// Stats implements Manager. OOMKills is the oom_kill counter of
// memory.oom_control (kernels before 4.13 lack it and report 0).
func (m *v1) Stats() (Stats, error) {
	var s Stats
	var err error
	mem := m.dirs["memory"]
	if s.MemoryUsage, err = readInt(m.path, mem, "memory.usage_in_bytes"); err != nil {
		return Stats{}, err
	}
	if s.MemoryPeak, err = readInt(m.path, mem, "memory.max_usage_in_bytes"); err != nil {
		return Stats{}, err
	}
	if s.OOMKills, _, err = readKey(m.path, mem, "memory.oom_control", "oom_kill"); err != nil {
		return Stats{}, err
	}
	if s.Pids, err = readInt(m.path, m.dirs["pids"], "pids.current"); err != nil {
		return Stats{}, err
	}
	usage, err := readInt(m.path, m.dirs["cpuacct"], "cpuacct.usage")
	if err != nil {
		return Stats{}, err
	}
	s.CPUUsageNS = uint64(usage)
	if s.MemoryLimit, err = readInt(m.path, mem, "memory.limit_in_bytes"); err != nil {
		return Stats{}, err
	}
	if s.MemoryLimit >= v1NoLimit {
		s.MemoryLimit = 0
	}
	s.IORead, s.IOWrite = -1, -1
	if dir, ok := m.dirs["blkio"]; ok {
		if s.IORead, s.IOWrite, err = readBlkio(m.path, dir); err != nil {
			return Stats{}, err
		}
	}
	return s, nil
}

// v1NoLimit: memory.limit_in_bytes at or above it means no limit (the
// kernel reports its largest page-aligned value).
const v1NoLimit = 1 << 62

// readBlkio sums the Read and Write lines of the blkio controller's
// service bytes ("MAJ:MIN Read N"), counted by the throttling layer,
// which sees every request whatever the I/O scheduler; it reads -1, -1
// when the kernel has no such file.
func readBlkio(cg, dir string) (read, write int64, err error) {
	b, err := os.ReadFile(filepath.Join(dir, "blkio.throttle.io_service_bytes_recursive"))
	if os.IsNotExist(err) {
		return -1, -1, nil
	}
	if err != nil {
		return 0, 0, fsError(cg, "read", "blkio.throttle.io_service_bytes_recursive", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		n, _ := strconv.ParseInt(f[2], 10, 64)
		switch f[1] {
		case "Read":
			read += n
		case "Write":
			write += n
		}
	}
	return read, write, nil
}

// OOMKills implements Manager: memory.oom_control's oom_kill.
func (m *v1) OOMKills() (uint64, error) {
	n, _, err := readKey(m.path, m.dirs["memory"], "memory.oom_control", "oom_kill")
	return n, err
}

// Freeze implements Manager with the freezer controller, waiting until the
// kernel reports FROZEN. If that does not happen within settleTimeout the
// cgroup is thawed again and an error returned.
func (m *v1) Freeze() error { return m.setFreezer("FROZEN") }

// Thaw implements Manager.
func (m *v1) Thaw() error { return m.setFreezer("THAWED") }

func (m *v1) setFreezer(state string) error {
	dir, ok := m.dirs["freezer"]
	if !ok {
		return fmt.Errorf("cgroup %s: freezer controller not mounted: %w", m.path, errdefs.ErrUnavailable)
	}
	deadline := time.Now().Add(settleTimeout)
	for {
		// Writing the state again nudges tasks that were busy the first time.
		if err := writeFile(m.path, dir, "freezer.state", state); err != nil {
			return err
		}
		cur, err := readString(m.path, dir, "freezer.state")
		if err != nil {
			return err
		}
		if cur == state {
			return nil
		}
		if time.Now().After(deadline) {
			if state == "FROZEN" {
				_ = writeFile(m.path, dir, "freezer.state", "THAWED")
			}
			return fmt.Errorf("cgroup %s: freezer.state still %s after %v, wanted %s: %w", m.path, cur, settleTimeout, state, errdefs.ErrConflict)
		}
		time.Sleep(pollInterval)
	}
}

// Destroy implements Manager: it freezes the cgroup so nothing forks, sends
// SIGKILL to every task in it and below it, thaws it so they can die, waits
// (bounded) until every hierarchy's cgroup.procs is empty, then removes the
// directories bottom-up. Parents such as /berth are left in place.
func (m *v1) Destroy() error {
	// The usual case, a container whose processes are all gone, has
	// nothing to kill: each leaf goes with one rmdir. What is left (busy:
	// processes, or cgroups below) is dealt with below.
	var present []string
	for _, h := range m.hier {
		if err := unix.Rmdir(h.dir); err != nil && !errors.Is(err, unix.ENOENT) {
			present = append(present, h.dir)
		}
	}
	if len(present) == 0 {
		return nil
	}
	pids, err := m.presentProcs(present)
	if err != nil {
		return err
	}
	_, hasFreezer := m.dirs["freezer"]
	frozen := len(pids) > 0 && hasFreezer && exists(m.dirs["freezer"]) && m.Freeze() == nil
	deadline := time.Now().Add(settleTimeout)
	for len(pids) > 0 {
		if err := killAll(m.path, pids); err != nil {
			return err
		}
		if frozen {
			// Frozen tasks only act on SIGKILL once thawed. A freezer
			// cgroup another process (the instance's owner) removed
			// meanwhile reads ENODEV: nothing is left to thaw.
			if err := m.Thaw(); err != nil && exists(m.dirs["freezer"]) {
				return err
			}
			frozen = false
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s: %d processes still present %v after SIGKILL: %w", m.path, len(pids), settleTimeout, errdefs.ErrConflict)
		}
		time.Sleep(pollInterval)
		if pids, err = m.presentProcs(present); err != nil {
			return err
		}
	}
	if frozen {
		_ = m.Thaw()
	}
	for _, dir := range present {
		if err := removeTree(m.path, dir); err != nil {
			return err
		}
	}
	return nil
}

// checkResources refuses limits that contradict each other.
func checkResources(path string, r Resources) error {
	if r.MemorySwap > 0 && r.Memory <= 0 {
		return fmt.Errorf("cgroup %s: memory+swap limit %d without a memory limit: %w", path, r.MemorySwap, errdefs.ErrInvalid)
	}
	if r.MemorySwap > 0 && r.MemorySwap < r.Memory {
		return fmt.Errorf("cgroup %s: memory+swap limit %d below the memory limit %d: %w", path, r.MemorySwap, r.Memory, errdefs.ErrInvalid)
	}
	for _, d := range r.Devices {
		if err := d.Check(); err != nil {
			return fmt.Errorf("cgroup %s: %w", path, err)
		}
	}
	return nil
}
