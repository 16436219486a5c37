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
	"github.com/berth-dev/berth/internal/regcli"
	"github.com/berth-dev/berth/internal/registry"
)

func cmdPull(root string, args []string) error {
	var f regcli.Pull
	ref, err := parseVerb("pull", &f, args, oneOperand)
	if err != nil {
		return err
	}
	o, err := transferOptions(root, f.Insecure, "max-concurrent-downloads", f.Jobs)
	if err != nil {
		return err
	}
	if f.Platform != "" {
		p, err := registry.ParsePlatform(f.Platform)
		if err != nil {
			return err
		}
		o.Platform = p
	}
	var out io.Writer = os.Stdout
	if f.Quiet {
		out = io.Discard
	}
	res, err := pullImage(root, ref, o, out)
	if err != nil {
		return err
	}
	if f.Quiet {
		fmt.Println(res.Ref.String())
	}
	return nil
}

// cmdRunPull pulls for berth run --pull POLICY ("missing": berth found
// no such image in the store; "always"), progress on standard error, and
// prints the pinned reference of the pulled image for berth to resolve.
func cmdRunPull(root string, args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("want POLICY and REF: %w", errdefs.ErrInvalid)
	}
	policy, ref := args[0], args[1]
	// A berth run that is gone (a signal abandons its start at once)
	// leaves its pipes without readers: a write must fail, not kill the
	// pull before it has removed what it staged.
	signal.Ignore(syscall.SIGPIPE)
	var preface []string
	if policy == "missing" {
		r, err := registry.ParseReference(ref)
		if err != nil {
			return errNotAName // berth reports the store's error
		}
		preface = append(preface, fmt.Sprintf("Unable to find image '%s' locally", r.Familiar()))
	}
	o, err := registryOptions(root, nil)
	if err != nil {
		return err
	}
	res, err := pullImage(root, ref, o, os.Stderr, preface...)
	if err != nil {
		return err
	}
	fmt.Println(res.Ref.Pinned(res.Image.Manifest))
	return nil
}

// pullImage pulls ref into the store under root as `berth pull` does,
// progress and summary written to out. SIGINT or SIGTERM stops it,
// leaving the store as it was. The lines of preface come first, once the
// pull has something to show: a pull that fails before it finds the
// image prints only its error.
func pullImage(root, ref string, o registry.Options, out io.Writer, preface ...string) (*registry.Result, error) {
	r, err := registry.ParseReference(ref)
	if err != nil {
		return nil, err
	}
	s, err := openStore(root)
	if err != nil {
		return nil, err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
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
