package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
)

// cmdList: the containers under --root, as runc's table, JSON or IDs.
func cmdList(_ context.Context, g *globals, args []string) error {
	fs := newFlags("list")
	format := fs.String("format", "table", "table or json")
	fs.StringVar(format, "f", "table", "table or json")
	quiet := fs.Bool("quiet", false, "IDs only")
	fs.BoolVar(quiet, "q", false, "IDs only")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%v: %w", err, errdefs.ErrInvalid)
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("list takes no arguments: %w", errdefs.ErrInvalid)
	}
	st, err := g.store()
	if err != nil {
		return err
	}
	all, err := st.List()
	if err != nil {
		return err
	}
	if *quiet {
		for _, s := range all {
			fmt.Println(s.ID)
		}
		return nil
	}
	switch *format {
	case "json":
		out := make([]stateJSON, 0, len(all))
		for _, s := range all {
			oci := s.OCI()
			out = append(out, stateJSON{OCIVersion: oci.Version, ID: s.ID, Pid: oci.Pid, Status: string(oci.Status),
				Bundle: s.Bundle, Rootfs: s.Rootfs, Created: s.Created, Owner: s.Owner, Annotations: s.Annotations})
		}
		return json.NewEncoder(os.Stdout).Encode(out)
	case "table":
		w := tabwriter.NewWriter(os.Stdout, 12, 1, 3, ' ', 0)
		fmt.Fprintln(w, "ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER")
		for _, s := range all {
			oci := s.OCI()
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\n", s.ID, oci.Pid, oci.Status, s.Bundle, s.Created.Format(time.RFC3339Nano), s.Owner)
		}
		return w.Flush()
	}
	return fmt.Errorf("--format %q: want table or json: %w", *format, errdefs.ErrInvalid)
}
