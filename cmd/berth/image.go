package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/berth-dev/berth/internal/units"
)

func cmdImageImport(g *globals, args []string) error {
	fs := newFlags("image import")
	name := fs.String("name", "", "reference to give the image")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("want exactly one PATH (an OCI layout directory or tar, or a docker-save tar)")
	}
	s, err := g.imageStore()
	if err != nil {
		return err
	}
	img, err := s.Import(context.Background(), fs.Arg(0), *name)
	if err != nil {
		return err
	}
	fmt.Printf("%s %s\n", strings.Join(img.Names, ","), img.ID)
	return nil
}

func cmdImageLs(g *globals, args []string) error {
	fs := newFlags("image ls")
	format := fs.String("format", "", "output format: json")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *format != "" && *format != "json" {
		return fmt.Errorf("--format %q: want json", *format)
	}
	s, err := g.imageStore()
	if err != nil {
		return err
	}
	imgs, err := s.List()
	if err != nil {
		return err
	}
	if *format == "json" {
		return printJSON(imgs)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
	fmt.Fprintln(w, "NAME\tID\tCREATED\tSIZE")
	for _, img := range imgs {
		names := strings.Join(img.Names, ",")
		if names == "" {
			names = "<none>"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", names, img.ID.Encoded()[:12], ago(img.Created), units.HumanSize(img.Size))
	}
	return w.Flush()
}

func cmdImageRm(g *globals, args []string) error {
	fs := newFlags("image rm")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("want at least one image")
	}
	s, err := g.imageStore()
	if err != nil {
		return err
	}
	for _, ref := range fs.Args() {
		if err := s.Remove(ref); err != nil {
			return err
		}
		fmt.Println(ref)
	}
	return nil
}

func cmdImageInspect(g *globals, args []string) error {
	fs := newFlags("image inspect")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("want exactly one image")
	}
	s, err := g.imageStore()
	if err != nil {
		return err
	}
	img, err := s.Resolve(fs.Arg(0))
	if err != nil {
		return err
	}
	return printJSON(img)
}

// ago renders a past time as Docker does: "3 minutes ago".
func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d seconds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d minutes ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d hours ago", int(d.Hours()))
	}
	return fmt.Sprintf("%d days ago", int(d.Hours()/24))
}
