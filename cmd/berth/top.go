package main

import (
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/lifecycle"
)

// cmdTop lists the processes of an instance with `docker top`'s default
// columns (ps -ef's): UID PID PPID C STIME TTY TIME CMD. A container's
// are read from the host's /proc, with host pids; a VM's from its
// guest's /proc by the guest agent, with guest pids. UID is numeric: the
// host's and the image's user names need not agree. Options after the
// instance (ps's, in Docker) are accepted and ignored.
func cmdTop(g *globals, args []string) error {
	fs := newFlags("top")
	if err := parseStrict(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 1 {
		return fmt.Errorf("want an instance: %w", errdefs.ErrInvalid)
	}
	st, in, err := lookupInstance(g, fs.Arg(0))
	if err != nil {
		return err
	}
	if err := lifecycle.RequireActive(in); err != nil {
		return err
	}
	h, err := lifecycle.Handle(st, in)
	if err != nil {
		return err
	}
	procs, err := h.Top()
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "UID\tPID\tPPID\tC\tSTIME\tTTY\tTIME\tCMD")
	now := time.Now()
	for _, p := range procs {
		fmt.Fprintf(w, "%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n", p.UID, p.PID, p.PPID, p.C,
			startText(time.Unix(p.Start, 0), now), p.TTY, cpuText(time.Duration(p.CPUNanos)), p.Cmd)
	}
	return w.Flush()
}

// startText is ps's STIME: the time of day for a start today, else the
// month and day.
func startText(t, now time.Time) string {
	if t.Year() == now.Year() && t.YearDay() == now.YearDay() {
		return t.Format("15:04")
	}
	return t.Format("Jan02")
}

// cpuText is ps's TIME: [DD-]HH:MM:SS.
func cpuText(d time.Duration) string {
	s := int64(d / time.Second)
	days, h, m := s/86400, s/3600%24, s/60%60
	if days > 0 {
		return fmt.Sprintf("%d-%02d:%02d:%02d", days, h, m, s%60)
	}
	return fmt.Sprintf("%02d:%02d:%02d", h, m, s%60)
}
