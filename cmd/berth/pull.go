package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/registry"
)

func cmdPull(g *globals, args []string) error {
	fs := newFlags("pull")
	platform := fs.String("platform", "", "the `OS/ARCH[/VARIANT]` to take from a multi-platform image (default this host's)")
	quiet := fs.Bool("q", false, "print only the image's reference, no progress")
	fs.BoolVar(quiet, "quiet", false, "print only the image's reference, no progress")
	jobs := fs.Int("max-concurrent-downloads", 3, "how many layers to download at once")
	insecure := insecureFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("want exactly one image reference: %w", errdefs.ErrInvalid)
	}
	o, err := registryOptions(g, insecure)
	if err != nil {
		return err
	}
	o.Jobs = *jobs
	if *jobs < 1 {
		return fmt.Errorf("--max-concurrent-downloads %d: want at least 1: %w", *jobs, errdefs.ErrInvalid)
	}
	if *platform != "" {
		p, err := registry.ParsePlatform(*platform)
		if err != nil {
			return err
		}
		o.Platform = p
	}
	s, err := g.imageStore()
	if err != nil {
		return err
	}
	var out io.Writer = os.Stdout
	if *quiet {
		out = io.Discard
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := pullImage(ctx, s, fs.Arg(0), o, out)
	if err != nil {
		return err
	}
	if *quiet {
		fmt.Println(res.Ref.String())
	}
	return nil
}

// pullImage pulls ref as `berth pull` does, progress and summary written
// to out. Cancelling ctx stops it, leaving the store as it was.
// The lines of preface come first, once the pull has something to show:
// a pull that fails before it finds the image prints only its error.
func pullImage(ctx context.Context, s *image.Store, ref string, o registry.Options, out io.Writer, preface ...string) (*registry.Result, error) {
	r, err := registry.ParseReference(ref)
	if err != nil {
		return nil, err
	}
	d := newLayerDisplay(out, "Pull complete")
	d.preface = append(preface, fmt.Sprintf("%s: Pulling from %s", r.Identifier(), r.Repository()))
	o.Progress = func(e registry.Event) {
		d.update(e.Layer, layerState{status: e.Status.String(), current: e.Current, total: e.Total,
			moving: e.Status == registry.Downloading, done: e.Status == registry.Done})
	}
	res, err := registry.Pull(ctx, s, ref, o)
	d.finish(err == nil)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return nil, fmt.Errorf("%s: interrupted", ref)
		}
		return nil, err
	}
	fmt.Fprintf(out, "Digest: %s\n", res.Digest)
	if res.Fresh {
		fmt.Fprintf(out, "Status: Downloaded newer image for %s\n", r.Familiar())
	} else {
		fmt.Fprintf(out, "Status: Image is up to date for %s\n", r.Familiar())
	}
	fmt.Fprintln(out, r.String())
	return res, nil
}

// resolveForRun finds the image run uses, pulling it first as policy
// says (Docker's --pull): "missing" pulls it when the store lacks it,
// "always" pulls it, "never" leaves it to the store. Cancelling ctx (the
// start's guard) stops a pull. An image the store has costs run nothing
// more than its lookup.
func resolveForRun(ctx context.Context, g *globals, s *image.Store, policy, ref string) (image.Image, error) {
	var preface []string
	switch policy {
	case "always":
	case "missing", "never":
		img, err := s.Resolve(ref)
		if policy == "never" || !errors.Is(err, errdefs.ErrNotFound) {
			return img, err // found, or an error that run reports
		}
		r, perr := registry.ParseReference(ref)
		if perr != nil {
			return img, err // not a name a registry has: the store's error
		}
		preface = append(preface, fmt.Sprintf("Unable to find image '%s' locally", r.Familiar()))
	default:
		return image.Image{}, fmt.Errorf("--pull %q: want missing, always or never: %w", policy, errdefs.ErrInvalid)
	}
	o, err := registryOptions(g, nil)
	if err != nil {
		return image.Image{}, err
	}
	res, err := pullImage(ctx, s, ref, o, os.Stderr, preface...)
	if err != nil {
		return image.Image{}, fmt.Errorf("pull %w", err)
	}
	return s.Resolve(res.Ref.Pinned(res.Image.Manifest))
}
