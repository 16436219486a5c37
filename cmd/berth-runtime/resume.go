package main

import "context"

// cmdResume: thaw a paused container.
func cmdResume(_ context.Context, g *globals, args []string) error {
	id, err := oneID(newFlags("resume"), args)
	if err != nil {
		return err
	}
	st, err := g.store()
	if err != nil {
		return err
	}
	return st.Resume(id)
}
