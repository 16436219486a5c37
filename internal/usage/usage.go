// Package usage owns what `berth stats` and `berth top` show of an
// instance: its resource figures (Stats), its processes (Process), and
// reading both from a cgroup and a /proc, the host's for a container and
// the guest's, through berth-agent, for a VM.
package usage

import (
	"time"

	"github.com/berth-dev/berth/internal/cgroups"
)

// Stats are a workload's resource figures at one moment.
type Stats struct {
	// CPUNanos is the CPU time the workload used so far.
	CPUNanos uint64 `json:"cpuNanos"`
	// Memory is the memory in use, MemoryLimit its limit (the whole
	// machine's memory when the workload has none), in bytes.
	Memory      int64 `json:"memory"`
	MemoryLimit int64 `json:"memoryLimit"`
	// Pids is the number of tasks.
	Pids int64 `json:"pids"`
	// BlockRead and BlockWrite are bytes read from and written to block
	// devices; NetRx and NetTx bytes received and sent on the network
	// interfaces other than lo. -1: not known.
	BlockRead  int64 `json:"blockRead"`
	BlockWrite int64 `json:"blockWrite"`
	NetRx      int64 `json:"netRx"`
	NetTx      int64 `json:"netTx"`
	// Host is, for a VM, its QEMU process as the host sees it: the
	// figures above are the guest's.
	Host *Host `json:"host,omitempty"`
}

// Host is one host process's usage and, for a VM, that of the host
// cgroup QEMU runs in.
type Host struct {
	PID      int    `json:"pid"`
	CPUNanos uint64 `json:"cpuNanos"`
	RSS      int64  `json:"rss"` // bytes
	// Cgroup is QEMU's host cgroup (path below the hierarchy's root),
	// "" when it has none of berth's; then the figures below are 0.
	Cgroup string `json:"cgroup,omitempty"`
	// Memory and MemoryLimit are the cgroup's memory use and limit
	// (bytes), Pids its tasks (QEMU's threads, virtiofsd).
	Memory      int64 `json:"memory,omitempty"`
	MemoryLimit int64 `json:"memoryLimit,omitempty"`
	Pids        int64 `json:"pids,omitempty"`
}

// FromCgroup makes Stats of a cgroup's figures; machineMemory is the
// limit when the cgroup has none. The network figures are left unknown.
func FromCgroup(c cgroups.Stats, machineMemory int64) Stats {
	s := Stats{
		CPUNanos:    c.CPUUsageNS,
		Memory:      c.MemoryUsage,
		MemoryLimit: c.MemoryLimit,
		Pids:        c.Pids,
		BlockRead:   c.IORead,
		BlockWrite:  c.IOWrite,
		NetRx:       -1,
		NetTx:       -1,
	}
	if s.MemoryLimit <= 0 || (machineMemory > 0 && s.MemoryLimit > machineMemory) {
		s.MemoryLimit = machineMemory
	}
	return s
}

// Sample is a CPU time read at a moment.
type Sample struct {
	CPUNanos uint64
	At       time.Time
}

// CPUPercent is the CPU used between two samples as a percentage of one
// CPU's time over the same wall time: a workload busy on two CPUs reads
// 200, as in `docker stats`. It is 0 when no time passed or the counter
// went back (a restarted workload).
func CPUPercent(prev, cur Sample) float64 {
	wall := cur.At.Sub(prev.At)
	if wall <= 0 || cur.CPUNanos < prev.CPUNanos {
		return 0
	}
	return float64(cur.CPUNanos-prev.CPUNanos) / float64(wall.Nanoseconds()) * 100
}
