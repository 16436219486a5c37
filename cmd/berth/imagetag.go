package main

import (
	"fmt"

	"github.com/berth-dev/berth/internal/errdefs"
)

func cmdImageTag(g *globals, args []string) error {
	fs := newFlags("image tag")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return fmt.Errorf("want SOURCE and TARGET images: %w", errdefs.ErrInvalid)
	}
	s, err := g.imageStore()
	if err != nil {
		return err
	}
	_, err = s.Tag(fs.Arg(0), fs.Arg(1))
	return err
}
