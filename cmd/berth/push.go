package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/registry"
)

func cmdPush(g *globals, args []string) error {
	fs := newFlags("push")
	quiet := fs.Bool("q", false, "print only the image's reference, no progress")
	fs.BoolVar(quiet, "quiet", false, "print only the image's reference, no progress")
	jobs := fs.Int("max-concurrent-uploads", 5, "how many layers to upload at once")
	insecure := insecureFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("want exactly one image reference: %w", errdefs.ErrInvalid)
	}
	if *jobs < 1 {
		return fmt.Errorf("--max-concurrent-uploads %d: want at least 1: %w", *jobs, errdefs.ErrInvalid)
	}
	o, err := registryOptions(g, insecure)
	if err != nil {
		return err
	}
	o.Jobs = *jobs
	ref := fs.Arg(0)
	r, err := registry.ParseReference(ref)
	if err != nil {
		return err
	}
	s, err := g.imageStore()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := newLayerDisplay(os.Stdout, "")
	d.preface = []string{fmt.Sprintf("The push refers to repository [%s]", r.Repo())}
	var progress func(registry.PushEvent)
	if !*quiet {
		progress = func(e registry.PushEvent) {
			st := layerState{status: e.Status.String(), current: e.Current, total: e.Total,
				moving: e.Status == registry.Pushing, done: e.Status >= registry.Pushed}
			if e.Status == registry.Mounted {
				st.status += " " + e.From
			}
			d.update(e.Layer, st)
		}
	}
	res, err := registry.Push(ctx, s, ref, o, progress)
	if !*quiet {
		d.finish(err == nil)
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return fmt.Errorf("%s: interrupted", ref)
		}
		return err
	}
	if *quiet {
		fmt.Println(res.Ref.String())
		return nil
	}
	fmt.Printf("%s: digest: %s size: %d\n", res.Ref.Identifier(), res.Digest, res.Size)
	return nil
}
