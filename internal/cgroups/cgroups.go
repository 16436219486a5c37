// Package cgroups owns berth's control groups: one Manager interface with a
// cgroup v1 implementation (hybrid and legacy hosts) and a v2 one (unified
// hosts, and the guest VM).
package cgroups

import (
	"errors"
	"fmt"
	"os"
	gopath "path"

	"github.com/berth-dev/berth/internal/errdefs"
)

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
	// Devices are the device access rules, applied in order (v1:
	// devices.deny and devices.allow; v2: a BPF device program). nil
	// leaves device access as it is; Update with nil keeps the rules in
	// force.
	Devices []DeviceRule
}

// Stats is a snapshot of a cgroup's usage.
type Stats struct {
	MemoryUsage int64  // bytes now
	MemoryPeak  int64  // bytes, max seen (0 if the kernel does not say)
	OOMKills    uint64 // number of OOM kills inside the cgroup
	Pids        int64  // tasks now
	CPUUsageNS  uint64 // total CPU time in nanoseconds
	// MemoryLimit is the memory limit in bytes, 0 for none.
	MemoryLimit int64
	// IORead and IOWrite are the bytes read from and written to block
	// devices, summed over devices (v2 io.stat, v1 blkio); -1 when the
	// cgroup has no such counters.
	IORead, IOWrite int64
}

// Manager is one instance's cgroup (in every controller on v1).
type Manager interface {
	// Create makes the cgroup (directories in every controller) and applies r.
	// Creating an existing cgroup is not an error (it is reused and r re-applied).
	Create(r Resources) error
	// Add moves pid (a process, all of its threads) into the cgroup.
	// On v1 this waits for an RCU grace period, several milliseconds.
	Add(pid int) error
	// ThreadFiles opens the files through which one thread moves alone
	// into the cgroup and back out (v1's tasks files): see ThreadFiles.
	// On v2 it fails (ErrNotSupported) but under a pids limit: a domain
	// cgroup takes whole processes (see FD); the limit is on a threaded
	// cgroup below it, which threads join alone.
	ThreadFiles() (*ThreadFiles, error)
	// Update changes the limits of an existing cgroup. r replaces every
	// limit: a zero field removes that limit.
	Update(r Resources) error
	// SetPids changes the pids limit alone (0 removes it).
	SetPids(n int64) error
	// PidsFiles opens the cgroup's pids counter and limit: see PidsFiles.
	PidsFiles() (*PidsFiles, error)
	// Stats reads usage counters.
	Stats() (Stats, error)
	// OOMKills reads the number of OOM kills in the cgroup alone (one
	// file, where Stats reads five).
	OOMKills() (uint64, error)
	// Pids lists the processes in the cgroup itself (not in cgroups below it).
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

// ThreadFiles move the thread that writes "0" to them, and only it: Join
// into a v1 cgroup, Leave back into the cgroups of the thread that opened
// them (v2: Join into the threaded cgroup that holds the pids limit,
// Leave back into the cgroup, where the thread's process was cloned). Moving one thread of one's own is the case the kernel does
// without the threadgroup lock, whose write side waits for an RCU grace
// period (7 to 20 ms measured here) on every cgroup.procs write (Add);
// what the thread forks or execs while in the cgroup is born there, as
// with clone3's CLONE_INTO_CGROUP on v2. The files act with the opener's
// credentials, so a process that could not open them (in a user
// namespace) can be given them. The pids controller comes last in Join
// and first in Leave, so that the thread counts against a pids limit for
// no longer than it must.
type ThreadFiles struct {
	Join, Leave []*os.File
}

// Close closes the files.
func (t *ThreadFiles) Close() {
	for _, files := range [][]*os.File{t.Join, t.Leave} {
		for _, f := range files {
			f.Close()
		}
	}
}

// Move writes "0" to each file: the calling thread moves to its cgroup.
// The caller keeps its goroutine locked to the thread
// (runtime.LockOSThread) while the thread is out of its own cgroups.
func Move(files []*os.File) error {
	for _, f := range files {
		if _, err := f.WriteString("0"); err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return fmt.Errorf("move a thread to another cgroup: %w", err)
		}
	}
	return nil
}

// PidsFiles are a cgroup's pids.current and pids.max, open for reading.
// A thread that joined the cgroup alone (ThreadFiles) was not stopped by
// the pids limit, as a fork into the cgroup would be: it reads them to
// tell whether it went beyond the limit. Like ThreadFiles they can be
// handed to a process that could not open them.
type PidsFiles struct {
	Current, Max *os.File
}

// Over reports whether the cgroup holds more tasks than its limit
// allows, and the limit (-1: none).
func (p *PidsFiles) Over() (over bool, limit int64, err error) {
	cur, err := readFileInt(p.Current)
	if err != nil {
		return false, 0, err
	}
	if limit, err = readFileInt(p.Max); err != nil {
		return false, 0, err
	}
	return limit >= 0 && cur > limit, limit, nil
}

// Close closes the files.
func (p *PidsFiles) Close() {
	p.Current.Close()
	p.Max.Close()
}

// DefaultCPUPeriod is the CFS period, in microseconds, used when
// Resources.CPUQuota is set and CPUPeriod is not.
const DefaultCPUPeriod = 100000

// checkPath validates a cgroup path given to New, NewV1 or NewV2: it must be
// absolute, clean and below the hierarchy root (the root itself is refused so
// that Destroy can never empty a whole hierarchy).
func checkPath(path string) error {
	if path == "" || path[0] != '/' || gopath.Clean(path) != path || path == "/" {
		return fmt.Errorf("cgroup path %q: must be absolute, clean and below the root: %w", path, errdefs.ErrInvalid)
	}
	return nil
}

// SetFrozen freezes (frozen) or thaws every process of the cgroup at path
// with the host's layout (New).
func SetFrozen(path string, frozen bool) error {
	cg, err := New(path)
	if err != nil {
		return err
	}
	if frozen {
		return cg.Freeze()
	}
	return cg.Thaw()
}
