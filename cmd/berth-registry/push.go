package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/berth-dev/berth/internal/regcli"
	"github.com/berth-dev/berth/internal/registry"
)

func cmdPush(root string, args []string) error {
	var f regcli.Push
	ref, err := parseVerb("push", &f, args, oneOperand)
	if err != nil {
		return err
	}
	o, err := transferOptions(root, f.Insecure, "max-concurrent-uploads", f.Jobs)
	if err != nil {
		return err
	}
	r, err := registry.ParseReference(ref)
	if err != nil {
		return err
	}
	s, err := openStore(root)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := newLayerDisplay(os.Stdout, "")
	d.preface = []string{fmt.Sprintf("The push refers to repository [%s]", r.Repo())}
	var progress func(registry.PushEvent)
	if !f.Quiet {
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
	if !f.Quiet {
		d.finish(err == nil)
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return fmt.Errorf("%s: interrupted", ref)
		}
		return err
	}
	if f.Quiet {
		fmt.Println(res.Ref.String())
		return nil
	}
	fmt.Printf("%s: digest: %s size: %d\n", res.Ref.Identifier(), res.Digest, res.Size)
	return nil
}
