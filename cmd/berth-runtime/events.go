package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
)

// event is runc's event envelope; data is a stats object for "stats".
type event struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Data any    `json:"data,omitempty"`
}

// stats is the subset of runc's stats berth's cgroup managers read.
type stats struct {
	CPU struct {
		Usage struct {
			Total uint64 `json:"total"`
		} `json:"usage"`
	} `json:"cpu"`
	Memory struct {
		Usage struct {
			Usage uint64 `json:"usage"`
			Max   uint64 `json:"max"`
		} `json:"usage"`
		OOMKills uint64 `json:"oom_kill"`
	} `json:"memory"`
	Pids struct {
		Current uint64 `json:"current"`
	} `json:"pids"`
}

func statsOf(s cgroups.Stats) stats {
	var out stats
	out.CPU.Usage.Total = s.CPUUsageNS
	out.Memory.Usage.Usage = uint64(s.MemoryUsage)
	out.Memory.Usage.Max = uint64(s.MemoryPeak)
	out.Memory.OOMKills = s.OOMKills
	out.Pids.Current = uint64(s.Pids)
	return out
}

// cmdEvents: with --stats print one stats event; otherwise print a stats
// event every --interval until the container stops.
func cmdEvents(_ context.Context, g *globals, args []string) error {
	fs := newFlags("events")
	once := fs.Bool("stats", false, "print one stats event and exit")
	interval := fs.Duration("interval", 5*time.Second, "time between stats events")
	id, err := oneID(fs, args)
	if err != nil {
		return err
	}
	if *interval <= 0 {
		return fmt.Errorf("--interval %v: must be positive: %w", *interval, errdefs.ErrInvalid)
	}
	st, err := g.store()
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	for {
		s, err := st.Load(id)
		if err != nil {
			return err
		}
		if s.Status == instance.Stopped && !*once {
			return nil
		}
		cs, err := st.Stats(id) // refuses a stopped container
		if err != nil {
			return err
		}
		if err := enc.Encode(event{Type: "stats", ID: id, Data: statsOf(cs)}); err != nil {
			return err
		}
		if *once {
			return nil
		}
		time.Sleep(*interval)
	}
}
