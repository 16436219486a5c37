package main

import "context"

// cmdStart: run a created container's workload.
func cmdStart(_ context.Context, g *globals, args []string) error {
	id, err := oneID(newFlags("start"), args)
	if err != nil {
		return err
	}
	st, err := g.store()
	if err != nil {
		return err
	}
	return st.Start(id)
}
