package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/berth-dev/berth/internal/engine"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/lifecycle"
	"github.com/berth-dev/berth/internal/units"
	ustats "github.com/berth-dev/berth/internal/usage" // main has a usage()
)

// statsGap is the wall time between the two readings of an instance's
// first sample, and statsTick the period of a streaming redraw.
const (
	statsGap  = 500 * time.Millisecond
	statsTick = time.Second
)

// cmdStats shows the resource usage of running instances, as `docker
// stats` does: CPU % (CPU time over wall time between two readings),
// memory, network and block I/O, pids. A VM's figures are its guest
// workload cgroup's; its QEMU process's host memory has a column of its
// own (and, in JSON, its CPU time too).
func cmdStats(g *globals, args []string) error {
	fs := newFlags("stats")
	noStream := fs.Bool("no-stream", false, "print one sample and exit")
	format := fs.String("format", "", "output format: json (one object a line)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *format != "" && *format != "json" {
		return fmt.Errorf("--format %q: want json", *format)
	}
	named := fs.Args()
	targets, err := statsTargets(g, named)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	prev := map[string]ustats.Sample{}
	// The first sample of each instance reads it twice, statsGap apart.
	if _, errs := sampleAll(targets, prev); len(errs) > 0 && *noStream {
		return errors.Join(errs...)
	}
	if !sleepCtx(ctx, statsGap) {
		return nil
	}
	redraw := !*noStream && *format == "" && term.IsTerminal(int(os.Stdout.Fd()))
	for {
		rows, errs := sampleAll(targets, prev)
		if *noStream {
			if len(errs) > 0 {
				return errors.Join(errs...)
			}
			return printStats(os.Stdout, rows, *format)
		}
		if redraw {
			fmt.Print("\033[2J\033[H") // clear the screen, cursor home
		}
		if err := printStats(os.Stdout, rows, *format); err != nil {
			return err
		}
		if !sleepCtx(ctx, statsTick) {
			return nil
		}
		if len(named) == 0 {
			// Instances started meanwhile join; ended ones fail their
			// reading and leave the table.
			if targets, err = statsTargets(g, nil); err != nil {
				return err
			}
		}
	}
}

// statsTarget is an instance stats reads, and the handle it reads with.
type statsTarget struct {
	in *instance.Instance
	h  engine.Handle
}

// statsTargets are the instances named, which must be running or
// paused, or every running instance.
func statsTargets(g *globals, refs []string) ([]statsTarget, error) {
	st, err := g.instanceStore()
	if err != nil {
		return nil, err
	}
	var list []*instance.Instance
	if len(refs) == 0 {
		all, err := st.List()
		if err != nil {
			return nil, err
		}
		for _, in := range all {
			if in = lifecycle.Reconcile(st, in); in.Status == instance.Running {
				list = append(list, in)
			}
		}
	}
	for _, ref := range refs {
		_, in, err := lookupInstance(g, ref)
		if err != nil {
			return nil, err
		}
		if err := lifecycle.RequireActive(in); err != nil {
			return nil, err
		}
		list = append(list, in)
	}
	var out []statsTarget
	for _, in := range list {
		h, err := lifecycle.Handle(st, in)
		if err != nil {
			return nil, err
		}
		out = append(out, statsTarget{in: in, h: h})
	}
	return out, nil
}

// statsRow is one instance's line of stats, and its JSON object.
type statsRow struct {
	ID         string  `json:"id"`
	Name       string  `json:"name"`
	Isolation  string  `json:"isolation"`
	CPUPercent float64 `json:"cpuPercent"`
	MemPercent float64 `json:"memoryPercent"`
	ustats.Stats
}

// sampleAll reads every target once, with CPU % against its previous
// reading in prev (0 for a first one), which it replaces.
func sampleAll(targets []statsTarget, prev map[string]ustats.Sample) ([]statsRow, []error) {
	var rows []statsRow
	var errs []error
	for _, t := range targets {
		s, err := t.h.Stats()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cur := ustats.Sample{CPUNanos: s.CPUNanos, At: time.Now()}
		r := statsRow{ID: t.in.ShortID(), Name: t.in.Name, Isolation: t.in.Isolation, Stats: s}
		if p, ok := prev[t.in.ID]; ok {
			r.CPUPercent = ustats.CPUPercent(p, cur)
		}
		prev[t.in.ID] = cur
		if s.MemoryLimit > 0 {
			r.MemPercent = float64(s.Memory) / float64(s.MemoryLimit) * 100
		}
		rows = append(rows, r)
	}
	return rows, errs
}

func printStats(w io.Writer, rows []statsRow, format string) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		for _, r := range rows {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "CONTAINER ID\tNAME\tCPU %\tMEM USAGE / LIMIT\tMEM %\tNET I/O\tBLOCK I/O\tPIDS\tQEMU MEM / LIMIT")
	for _, r := range rows {
		// A VM's QEMU: its host cgroup's use and limit, or without one
		// (a VM started before berth gave QEMU one) its resident memory.
		qemu := "--"
		switch {
		case r.Host != nil && r.Host.Cgroup != "":
			qemu = binarySize(r.Host.Memory) + " / " + binarySize(r.Host.MemoryLimit)
		case r.Host != nil:
			qemu = binarySize(r.Host.RSS)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2f%%\t%s / %s\t%.2f%%\t%s / %s\t%s / %s\t%d\t%s\n",
			r.ID, r.Name, r.CPUPercent, binarySize(r.Memory), binarySize(r.MemoryLimit), r.MemPercent,
			decimalSize(r.NetRx), decimalSize(r.NetTx), decimalSize(r.BlockRead), decimalSize(r.BlockWrite),
			r.Pids, qemu)
	}
	return tw.Flush()
}

// binarySize writes memory as Docker does: 1.5MiB.
func binarySize(n int64) string {
	v, units, i := float64(n), []string{"B", "KiB", "MiB", "GiB", "TiB"}, 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".") + units[i]
}

// decimalSize writes I/O as Docker does: 1.5MB; "--" when unknown.
func decimalSize(n int64) string {
	if n < 0 {
		return "--"
	}
	return units.HumanSize(n)
}

// sleepCtx sleeps for d, false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
