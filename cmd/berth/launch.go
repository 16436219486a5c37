package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/berth-dev/berth/internal/engine"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/lifecycle"
)

// relayed are the signals `berth run` relays to its instance.
var relayed = instance.Relayed

// earlySignals holds the signals `berth run` received before its
// instance ran (see catchEarlySignals).
var earlySignals chan os.Signal

// catchEarlySignals makes `berth run` catch the signals it relays from
// before it creates anything: one that came while the instance was being
// created and started would otherwise kill the CLI and leave the
// workload running without an owner. Until the workload runs, a
// startGuard watches them (some cancel the start); forwardSignals then
// delivers them to the workload. The handlers are set up in the
// background (the Go runtime enables each signal through a round trip to
// a thread of its own); awaitEarlySignals waits for them, before the
// first record is written.
func catchEarlySignals() {
	earlySignals = make(chan os.Signal, 8)
	caught := make(chan struct{})
	earlyCaught = caught
	go func() {
		signal.Notify(earlySignals, relayed...)
		close(caught)
	}()
}

// earlyCaught is closed once catchEarlySignals' handlers are in place.
var earlyCaught chan struct{}

// awaitEarlySignals returns once catchEarlySignals' handlers are in
// place (at once without them).
func awaitEarlySignals() {
	if earlyCaught != nil {
		<-earlyCaught
	}
}

// forwardSignals relays the signals a user sends to the CLI to the
// instance, as `docker run` does, until stop is called: first those
// caught during the start (pending, in order), then those that come.
// Call it only for an instance whose end berth then waits for and exits
// after.
func forwardSignals(c engine.Running, pending []syscall.Signal) (stop func()) {
	awaitEarlySignals()
	ch := earlySignals
	if ch == nil {
		ch = make(chan os.Signal, 8)
		signal.Notify(ch, relayed...)
	}
	for _, s := range pending {
		_ = c.Signal(s)
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-ch:
				_ = c.Signal(s.(syscall.Signal))
			case <-done:
				return
			}
		}
	}()
	// Stopping leaves the handlers in place: berth exits once the
	// instance has ended, and undoing them costs a round trip to the
	// runtime's signal thread each. A signal that comes meanwhile is
	// swallowed; the exit status stays the workload's.
	return func() { close(done) }
}

// holdImage takes a lease on the image for the rest of this process's
// life, so `image rm` cannot take its layers from under a running
// instance; the lease ends when the process does.
func holdImage(images *image.Store, img image.Image) error {
	lease, err := images.Use(img)
	if err != nil {
		return err
	}
	heldLeases = append(heldLeases, lease)
	return nil
}

// heldLeases keeps this process's image leases referenced until it exits.
var heldLeases []*image.Lease

// lookupInstance finds an instance by ID, prefix or name and reconciles it.
func lookupInstance(g *globals, ref string) (*instance.Store, *instance.Instance, error) {
	st, err := g.instanceStore()
	if err != nil {
		return nil, nil, err
	}
	in, err := st.Get(ref)
	if err != nil {
		return st, nil, err
	}
	return st, lifecycle.Reconcile(st, in), nil
}

// eachInstance applies fn to every instance named in refs, printing each
// reference once it is done, as Docker's verbs that take several do. A
// reference that fails does not stop the others; the failures come back
// together, each naming its instance.
func eachInstance(g *globals, refs []string, fn func(*instance.Store, *instance.Instance) error) error {
	return forEachInstance(g, refs, fn, nil)
}

// forEachInstance is eachInstance that hands instances whose record is
// unreadable to corrupt, when not nil, instead of failing on them.
func forEachInstance(g *globals, refs []string, fn func(*instance.Store, *instance.Instance) error, corrupt func(*instance.Store, string) error) error {
	if len(refs) == 0 {
		return fmt.Errorf("want at least one instance: %w", errdefs.ErrInvalid)
	}
	var errs []error
	for _, ref := range refs {
		st, in, err := lookupInstance(g, ref)
		var ce *instance.CorruptError
		switch {
		case err == nil:
			err = fn(st, in)
		case corrupt != nil && errors.As(err, &ce):
			err = corrupt(st, ce.ID)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Println(ref)
	}
	return errors.Join(errs...)
}
