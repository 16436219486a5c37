package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/berth-dev/berth/internal/health"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/lifecycle"
	"github.com/berth-dev/berth/internal/project"
)

func cmdPs(g *globals, args []string) error {
	fs := newFlags("ps")
	all := fs.Bool("a", false, "show stopped instances too")
	fs.BoolVar(all, "all", false, "show stopped instances too")
	format := fs.String("format", "", "output format: json")
	quiet := fs.Bool("q", false, "print IDs only")
	proj := fs.String("project", "", "show the instances of this compose project only")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *proj != "" {
		// Its supervisor is started again if it died.
		if _, err := projectInstances(g, *proj); err != nil {
			return err
		}
	}
	st, err := g.instanceStore()
	if err != nil {
		return err
	}
	list, err := st.List()
	if err != nil {
		return err
	}
	shown := []*instance.Instance{}
	for _, in := range list {
		in = lifecycle.Reconcile(st, in)
		if in.AutoRemove && in.Status == instance.Stopped {
			continue // reconcile removed it
		}
		if *proj != "" && in.Labels[project.LabelProject] != *proj {
			continue
		}
		// One whose record is unreadable may well be running: it is
		// shown until rm -f removes it.
		if *all || in.Status.Active() || in.Unreadable {
			shown = append(shown, in)
		}
	}
	switch {
	case *format == "json":
		return printJSON(shown)
	case *format != "":
		return fmt.Errorf("--format %q: want json", *format)
	case *quiet:
		for _, in := range shown {
			fmt.Println(in.ShortID())
		}
		return nil
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
	fmt.Fprintln(w, "ID\tIMAGE\tCOMMAND\tCREATED\tSTATUS\tISOLATION\tNAME")
	for _, in := range shown {
		cmd := strings.Join(in.Command, " ")
		if len(cmd) > 30 {
			cmd = cmd[:27] + "..."
		}
		fmt.Fprintf(w, "%s\t%s\t%q\t%s\t%s\t%s\t%s\n", in.ShortID(), in.Image, cmd, ago(in.Created), statusText(in), in.Isolation, in.Name)
	}
	return w.Flush()
}

// statusText is ps's STATUS column, Docker's in lower case: "up 3
// seconds (healthy)", "restarting (1) 2 seconds ago", "exited (3) 2
// minutes ago".
func statusText(in *instance.Instance) string {
	if in.Unreadable {
		return "unreadable record (rm -f removes it)"
	}
	switch in.Status {
	case instance.Stopped:
		code := -1
		if in.ExitCode != nil {
			code = *in.ExitCode
		}
		word := "exited"
		if in.Restarting && instance.Alive(in.MonitorPid, in.MonStart) {
			word = "restarting"
		}
		s := fmt.Sprintf("%s (%d) %s", word, code, ago(in.Finished))
		if in.OOMKilled {
			s += " oom"
		}
		return s
	case instance.Running:
		s := "up " + strings.TrimSuffix(ago(in.Started), " ago")
		if in.Health != nil {
			if in.Health.Status == health.Starting {
				s += " (health: starting)"
			} else {
				s += " (" + in.Health.Status + ")"
			}
		}
		switch {
		case in.RestartCount == 1:
			s += ", restarted once"
		case in.RestartCount > 1:
			s += fmt.Sprintf(", restarted %d times", in.RestartCount)
		}
		return s
	}
	return string(in.Status)
}
