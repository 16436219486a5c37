package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/engine"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/instance"
)

// startInstance runs the bundle of a created instance (b, or the one on
// disk when nil), as a container or a VM, and records it as running,
// owned by this process. A container takes pre, an init prestarted for
// it, when not nil. saved, when not nil, reports the bundle's write
// going on meanwhile; the instance is recorded as running only once it
// is done. Cancelling ctx cancels the start until the workload runs. On
// failure nothing of the instance's processes, cgroup or guest is left;
// the record is the caller's to remove.
func startInstance(ctx context.Context, g *globals, st *instance.Store, in *instance.Instance, b *instance.Bundle, saved <-chan error, stdio engine.Stdio, pre engine.Prepared) (engine.Running, error) {
	var err error
	waitSaved := func() error {
		if saved == nil {
			return nil
		}
		ch := saved
		saved = nil
		return <-ch
	}
	defer waitSaved() // never leave the write racing the caller's removal
	if b == nil {
		if b, err = st.LoadBundle(in.ID); err != nil {
			return nil, err
		}
	}
	eng, err := engine.For(in.Isolation)
	if err != nil {
		return nil, err
	}
	w, err := eng.Start(ctx, engine.Config{
		ID:       in.ID,
		Dir:      st.Dir(in.ID),
		Spec:     b.Spec,
		Layers:   b.Layers,
		Cgroup:   in.Cgroup,
		Prepared: pre,
		Kernel:   in.Kernel,
		Root:     g.root,
	}, stdio)
	if err != nil {
		return nil, err
	}
	trace("workload running")
	if err := waitSaved(); err != nil {
		_ = w.Signal(syscall.SIGKILL)
		_ = w.Destroy()
		return nil, err
	}
	_, err = st.Update(in.ID, func(x *instance.Instance) error {
		x.Status = instance.Running
		x.Pid = w.Pid()
		x.PidStart = instance.ProcStart(w.Pid())
		x.MonitorPid = os.Getpid()
		x.MonStart = instance.ProcStart(os.Getpid())
		x.Started = time.Now().UTC()
		f := w.Facts()
		x.Accel, x.Transport, x.VMStart, x.VMTemplate = f.Accel, f.Transport, f.VMStart, f.VMTemplate
		return nil
	})
	if err != nil {
		_ = w.Signal(syscall.SIGKILL)
		_ = w.Destroy()
		return nil, err
	}
	return w, nil
}

// finishInstance waits for a started instance, releases its resources,
// records how it ended and, for --rm, removes it. The error is the one
// recorded: the instance ended abnormally (a VM's guest died) or could
// not be cleaned up.
// drain, if not nil, is called once the workload has ended, to let its
// output reach the log before the end is recorded.
func finishInstance(st *instance.Store, in *instance.Instance, c engine.Running, drain func()) (engine.Exit, error) {
	exit, waitErr := c.Wait()
	trace("workload exited")
	// An instance run with --rm in the foreground is removed while it is
	// torn down when its directory holds nothing the end needs (a
	// container's; a VM's holds the sockets QEMU is stopped through).
	var removed chan error
	if traitsOf(in).RemoveWhileEnding && in.AutoRemove && drain == nil && waitErr == nil {
		removed = make(chan error, 1)
		go func() { removed <- st.Remove(in.ID) }()
	}
	destroyErr := c.Destroy()
	trace("container destroyed")
	if drain != nil {
		drain()
	}
	endErr := errors.Join(waitErr, destroyErr)
	if removed != nil && <-removed == nil {
		return exit, endErr // nothing left to record the end in
	}
	if in.AutoRemove && endErr == nil && removed == nil && st.Remove(in.ID) == nil {
		return exit, nil
	}
	_, recErr := st.Update(in.ID, func(x *instance.Instance) error {
		x.Status = instance.Stopped
		code := exit.Code
		x.ExitCode = &code
		x.Signal = exit.Signal
		x.OOMKilled = exit.OOMKilled
		x.Finished = time.Now().UTC()
		if endErr != nil {
			x.Error = oneLine(endErr)
		}
		return nil
	})
	if in.AutoRemove {
		_ = st.Remove(in.ID)
	} else if recErr != nil {
		endErr = errors.Join(endErr, recErr)
	}
	return exit, endErr
}

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

// reconcile repairs the record of an instance whose owner (the foreground
// CLI or the monitor) died without recording its end: whatever is left of
// it is killed and it is marked stopped. It returns the current record.
func reconcile(st *instance.Store, in *instance.Instance) *instance.Instance {
	if in.Status == instance.Stopped || instance.Alive(in.MonitorPid, in.MonStart) {
		return in
	}
	if instance.Alive(in.Pid, in.PidStart) {
		_ = syscall.Kill(in.Pid, syscall.SIGKILL)
	}
	if in.Cgroup != "" {
		_ = container.Cleanup(in.Cgroup)
	}
	lost := func(x *instance.Instance) error {
		if x.Status == instance.Stopped {
			return nil
		}
		x.Status = instance.Stopped
		code := 137
		x.ExitCode = &code
		x.Finished = time.Now().UTC()
		x.Error = "the process that owned the instance exited without recording its end"
		return nil
	}
	out, err := st.Update(in.ID, lost)
	if err != nil {
		// The record cannot be written (a full or read-only file
		// system): what is shown must still be the truth, and rm must
		// still be able to remove it.
		cp := *in
		_ = lost(&cp)
		return &cp
	}
	if out.AutoRemove {
		_ = st.Remove(out.ID)
	}
	return out
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
	return st, reconcile(st, in), nil
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

// requireRunning refuses instances that have no live process.
func requireRunning(in *instance.Instance) error {
	if !in.Status.Active() {
		return fmt.Errorf("instance %s is %s: %w", in.ShortID(), in.Status, errdefs.ErrConflict)
	}
	return nil
}
