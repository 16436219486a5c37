package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/berth-dev/berth/internal/errdefs"
)

// cmdPs: list the container's processes: their host pids as a JSON array
// (--format json, what the containerd shim reads) or a PID/CMD table.
func cmdPs(_ context.Context, g *globals, args []string) error {
	fs := newFlags("ps")
	format := fs.String("format", "table", "table or json")
	fs.StringVar(format, "f", "table", "table or json")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%v: %w", err, errdefs.ErrInvalid)
	}
	if fs.NArg() < 1 {
		return fmt.Errorf("want a container ID: %w", errdefs.ErrInvalid)
	}
	st, err := g.store()
	if err != nil {
		return err
	}
	pids, err := st.Pids(fs.Arg(0))
	if err != nil {
		return err
	}
	switch *format {
	case "json":
		return json.NewEncoder(os.Stdout).Encode(pids)
	case "table":
		fmt.Println("PID\tCMD")
		for _, p := range pids {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
			fmt.Printf("%d\t%s\n", p, strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " ")))
		}
		return nil
	}
	return fmt.Errorf("--format %q: want table or json: %w", *format, errdefs.ErrInvalid)
}
