package container

// cleanup is a stack of undo steps for a half-built container: each step
// that creates something pushes the function that removes it; on failure
// run undoes them in reverse order, on success release forgets them.
type cleanup struct {
	fns []func()
}

// add pushes an undo step.
func (c *cleanup) add(f func()) { c.fns = append(c.fns, f) }

// run undoes everything pushed so far, newest first.
func (c *cleanup) run() {
	for i := len(c.fns) - 1; i >= 0; i-- {
		c.fns[i]()
	}
	c.fns = nil
}

// release forgets the undo steps: the resource is complete.
func (c *cleanup) release() { c.fns = nil }
