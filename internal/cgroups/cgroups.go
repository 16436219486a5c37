// Package cgroups owns berth's control groups: one Manager interface with a
// cgroup v1 implementation (hybrid and legacy hosts) and a v2 one (unified
// hosts, and the guest VM).
package cgroups

// Mode is the host's cgroup layout.
type Mode string

const (
	ModeV1     Mode = "v1"     // only v1 controller hierarchies
	ModeHybrid Mode = "hybrid" // v1 controllers plus an empty cgroup2 at /sys/fs/cgroup/unified
	ModeV2     Mode = "v2"     // unified hierarchy at /sys/fs/cgroup
	ModeNone   Mode = "none"   // no cgroup file system mounted
)

// Resources are the limits berth applies. Zero means "no limit".
type Resources struct {
	Memory     int64  // bytes; memory.limit_in_bytes / memory.max
	MemorySwap int64  // bytes, memory+swap; 0 = same as Memory (no swap), -1 = unlimited
	CPUQuota   int64  // microseconds per period; cpu.cfs_quota_us / cpu.max
	CPUPeriod  uint64 // microseconds; default 100000 when CPUQuota is set
	CPUShares  uint64 // v1 shares (v2 weight is converted)
	Pids       int64  // pids.max
}

// Stats is a snapshot of a cgroup's usage.
type Stats struct {
	MemoryUsage int64  // bytes now
	MemoryPeak  int64  // bytes, max seen (0 if the kernel does not say)
	OOMKills    uint64 // number of OOM kills inside the cgroup
	Pids        int64  // tasks now
	CPUUsageNS  uint64 // total CPU time in nanoseconds
}

// Manager is one instance's cgroup (in every controller on v1).
type Manager interface {
	// Create makes the cgroup (directories in every controller) and applies r.
	// Creating an existing cgroup is not an error (it is reused and r re-applied).
	Create(r Resources) error
	// Add moves pid (a process, all of its threads) into the cgroup.
	Add(pid int) error
	// Update changes the limits of an existing cgroup.
	Update(r Resources) error
	// Stats reads usage counters.
	Stats() (Stats, error)
	// Pids lists the processes in the cgroup.
	Pids() ([]int, error)
	// Freeze and Thaw pause and resume every process in the cgroup.
	Freeze() error
	Thaw() error
	// Destroy kills any process left in the cgroup (SIGKILL, waiting until it
	// is empty, bounded) and removes the cgroup directories. Destroying a
	// cgroup that does not exist is not an error.
	Destroy() error
	// Path is the cgroup's path relative to the hierarchy root, e.g. "/berth/ID".
	Path() string
	// FD opens the cgroup's v2 directory for clone3's CLONE_INTO_CGROUP
	// (syscall.SysProcAttr.UseCgroupFD). ok is false on v1, where the caller
	// must Add the pid instead. The caller closes the returned fd.
	FD() (fd int, ok bool, err error)
}

// New returns the Manager for the cgroup at path (relative to each
// hierarchy's root, e.g. "/berth/ID") using the host's cgroup layout:
// v1 controllers on v1 and hybrid hosts, the unified hierarchy on v2 hosts.
// It does not touch the file system; call Create.
//
//	func New(path string) (Manager, error)
//
// DetectMode reports the host's layout by looking at /sys/fs/cgroup.
//
//	func DetectMode() Mode
