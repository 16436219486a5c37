package main

import "context"

// cmdDelete: remove a stopped (or created) container; --force kills a
// running one first.
func cmdDelete(_ context.Context, g *globals, args []string) error {
	fs := newFlags("delete")
	force := fs.Bool("force", false, "kill a running container first")
	fs.BoolVar(force, "f", false, "kill a running container first")
	id, err := oneID(fs, args)
	if err != nil {
		return err
	}
	st, err := g.store()
	if err != nil {
		return err
	}
	return st.Delete(id, *force)
}
