package main

import (
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
	var out []*instance.Instance
	for _, ref := range fs.Args() {
		_, in, err := lookupInstance(g, ref)
		if err != nil {
			return err
		}
		out = append(out, in)
	}
	return printJSON(out)
}
