package main

import (
	"errors"
	"fmt"

	"github.com/berth-dev/berth/internal/instance"
)

func cmdInspect(g *globals, args []string) error {
	fs := newFlags("inspect")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("want at least one instance")
	}
	// As Docker does, the instances found are printed even when others
	// are not; the missing ones make the command fail.
	out := []*instance.Instance{}
	var errs []error
	for _, ref := range fs.Args() {
		_, in, err := lookupInstance(g, ref)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, in)
	}
	if len(out) > 0 {
		if err := printJSON(out); err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}
