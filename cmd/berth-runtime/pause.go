package main

import "context"

// cmdPause: freeze every process of the container.
func cmdPause(_ context.Context, g *globals, args []string) error {
	id, err := oneID(newFlags("pause"), args)
	if err != nil {
		return err
	}
	st, err := g.store()
	if err != nil {
		return err
	}
	return st.Pause(id)
}
