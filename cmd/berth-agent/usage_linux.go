package main

import (
	"fmt"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/usage"
)

// The guest answers the host's stats and top queries (agent.Querier)
// from its workload cgroup and its own /proc (guest pids).

// Stats implements agent.Querier: the workload cgroup's figures, the
// guest's memory as the limit when the cgroup has none, and the
// guest's network interfaces other than lo.
func (g *guest) Stats() (usage.Stats, error) {
	cg, err := g.workload()
	if err != nil {
		return usage.Stats{}, err
	}
	st, err := cg.Stats()
	if err != nil {
		return usage.Stats{}, err
	}
	total, err := usage.MemTotal("/proc")
	if err != nil {
		return usage.Stats{}, err
	}
	s := usage.FromCgroup(st, total)
	if s.NetRx, s.NetTx, err = usage.NetDev(fmt.Sprintf("/proc/%d/net/dev", g.pid1())); err != nil {
		s.NetRx, s.NetTx = -1, -1
	}
	return s, nil
}

// Top implements agent.Querier: the processes of the workload cgroup,
// with the guest's pids.
func (g *guest) Top() ([]usage.Process, error) {
	cg, err := g.workload()
	if err != nil {
		return nil, err
	}
	pids, err := cg.Pids()
	if err != nil {
		return nil, err
	}
	return usage.Processes("/proc", pids)
}

// pid1 is the guest pid of the workload's PID 1.
func (g *guest) pid1() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ctr.Pid()
}

// workload is the workload cgroup once the workload was started.
func (g *guest) workload() (cgroups.Manager, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ctr == nil || g.cg == nil {
		return nil, fmt.Errorf("the workload has not started")
	}
	return g.cg, nil
}

var _ agent.Querier = (*guest)(nil)
