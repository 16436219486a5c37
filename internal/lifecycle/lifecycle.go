// Package lifecycle owns an instance's life across processes, whatever its
// engine: its start by the process that owns it (the foreground CLI or a
// detached instance's monitor), its finish (waited for, torn down,
// recorded, removed with --rm), the reconcile of an instance whose owner
// died without recording its end, and the verbs other processes apply to
// it — signal, pause and resume — each checked against the transition
// table of internal/instance and done under the instance's record lock.
//
// It prints nothing and relays no signals of its own: those stay with the
// front ends.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/engine"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/network"
	"github.com/berth-dev/berth/internal/usage"
)

// Trace, when not nil, is told when each step of a start or finish is
// done (BERTH_TRACE's profile of start-up).
var Trace func(step string, at time.Time)

func trace(step string) {
	if Trace != nil {
		Trace(step, time.Now())
	}
}

func init() { network.Trace = trace }

// StartOptions is what Start takes.
type StartOptions struct {
	// Store holds Instance's record, which must be created.
	Store    *instance.Store
	Instance *instance.Instance
	// Bundle is what the instance runs; nil reads the one on disk.
	Bundle *instance.Bundle
	// Saved, when not nil, reports the bundle's write going on
	// meanwhile: the instance is recorded as running only once it is
	// done, and Start never returns before it is.
	Saved <-chan error
	// Stdio is the workload's standard streams.
	Stdio engine.Stdio
	// Prepared is what the engine's Prepare began for this instance (a
	// prestarted container init), or nil.
	Prepared engine.Prepared
	// Root is berth's data root, where the VM engine finds its guest.
	Root string
}

// Start runs the bundle of a created instance with its engine and records
// it as running, owned by the calling process. Cancelling ctx cancels the
// start until the workload runs. On failure nothing of the instance's
// processes, cgroup or guest is left; the record is the caller's to
// remove.
func Start(ctx context.Context, o StartOptions) (engine.Running, error) {
	st, in, b, saved := o.Store, o.Instance, o.Bundle, o.Saved
	waitSaved := func() error {
		if saved == nil {
			return nil
		}
		ch := saved
		saved = nil
		return <-ch
	}
	defer waitSaved() // never leave the write racing the caller's removal
	var err error
	if b == nil {
		if b, err = st.LoadBundle(in.ID); err != nil {
			return nil, err
		}
	}
	eng, err := engine.For(in.Isolation)
	if err != nil {
		return nil, err
	}
	cfg := engine.Config{
		ID:       in.ID,
		Dir:      st.Dir(in.ID),
		Spec:     b.Spec,
		Layers:   b.Layers,
		Cgroup:   in.Cgroup,
		Prepared: o.Prepared,
		Kernel:   in.Kernel,
		Root:     o.Root,
	}
	var att *network.Attachment
	if in.Net.Attached() {
		if att, err = network.Attach(st.Root(), in, st.Dir(in.ID), StaleHolder(st)); err != nil {
			return nil, err
		}
		cfg.Network = att.Wire
		trace("network claimed")
	}
	w, err := eng.Start(ctx, cfg, o.Stdio)
	if err != nil {
		if att != nil {
			att.Close()
		}
		return nil, err
	}
	trace("workload running")
	if att != nil {
		w = networked{w, att}
		if err := att.Up(); err != nil {
			_ = w.Signal(syscall.SIGKILL)
			_ = w.Destroy()
			return nil, err
		}
		trace("network up")
	}
	if err := waitSaved(); err != nil {
		_ = w.Signal(syscall.SIGKILL)
		_ = w.Destroy()
		return nil, err
	}
	_, err = st.Update(in.ID, func(x *instance.Instance) error {
		if x.StoppedByUser {
			// stop, kill or rm -f came while it started (again).
			return fmt.Errorf("instance %s: %w", x.ShortID(), ErrStoppedByUser)
		}
		if att != nil {
			x.Endpoint = att.Endpoint()
		}
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

// Finish waits for a started instance, releases its resources, records
// how it ended and, for --rm, removes it. The error is the one recorded:
// the instance ended abnormally (a VM's guest died) or could not be
// cleaned up. drain, if not nil, is called once the workload has ended,
// to let its output reach the log before the end is recorded.
func Finish(st *instance.Store, in *instance.Instance, c engine.Running, drain func()) (engine.Exit, error) {
	exit, waitErr := c.Wait()
	trace("workload exited")
	// An instance run with --rm in the foreground is removed while it is
	// torn down when its directory holds nothing the end needs (a
	// container's; a VM's holds the sockets QEMU is stopped through).
	var removed chan error
	if Traits(in).RemoveWhileEnding && in.AutoRemove && drain == nil && waitErr == nil {
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
		x.Endpoint = nil
		code := exit.Code
		x.ExitCode = &code
		x.Signal = exit.Signal
		x.OOMKilled = exit.OOMKilled
		x.Finished = time.Now().UTC()
		if endErr != nil {
			x.Error = errdefs.OneLine(endErr)
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

// networked is a started instance and its hold on its network, given
// back when the instance is destroyed.
type networked struct {
	engine.Running
	att *network.Attachment
}

func (n networked) Destroy() error {
	err := n.Running.Destroy()
	return errors.Join(err, n.att.Close())
}

// StaleHolder says whether the instance that holds a network address is
// gone, stopped, or running with no owner left, so that its address may
// be taken back.
func StaleHolder(st *instance.Store) network.Stale {
	return func(id string) bool {
		in, err := st.Get(id)
		if errors.Is(err, errdefs.ErrNotFound) {
			return true
		}
		// A created instance may be starting: its owner is not recorded
		// yet.
		return err == nil && (in.Status == instance.Stopped ||
			in.Status.Active() && !instance.Alive(in.MonitorPid, in.MonStart))
	}
}

// LostError is the Error recorded for an instance whose owner died
// without recording its end (see Reconcile); its exit code is 137.
const LostError = "the process that owned the instance exited without recording its end"

// Reconcile repairs the record of an instance whose owner (the foreground
// CLI or the monitor) died without recording its end: whatever is left of
// it is killed, its cgroup removed, and it is recorded as stopped (137,
// LostError), or removed when it was run with --rm. Then, when Spawner is
// set and the instance's restart policy wants it back, a new owner is
// started for it (see Revive), which starts it again. An instance whose
// owner lives is left alone. All of it is one step under the record
// lock, so of several processes that reconcile an instance at once one
// ends it and gives it its new owner, and the others find that owner
// alive: an instance never runs twice. It returns the current record.
func Reconcile(st *instance.Store, in *instance.Instance) *instance.Instance {
	if instance.Alive(in.MonitorPid, in.MonStart) ||
		in.Status == instance.Stopped && (Spawner == nil || !in.WantsRestart()) {
		return in
	}
	var out *instance.Instance
	err := st.Locked(in.ID, func(x *instance.Instance, write func(*instance.Instance) error) error {
		out = x
		if instance.Alive(x.MonitorPid, x.MonStart) {
			return nil // another process reconciled it meanwhile
		}
		changed := false
		if x.Status != instance.Stopped {
			endRemains(st, x)
			markLost(x)
			changed = true
		}
		if Spawner != nil && x.WantsRestart() {
			if pid, err := Spawner(x.ID); err == nil {
				x.MonitorPid, x.MonStart, x.Restarting = pid, instance.ProcStart(pid), true
				changed = true
			}
		}
		if !changed {
			return nil
		}
		return write(x)
	})
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return in
		}
		// The record cannot be written (a full or read-only file
		// system): what is shown must still be the truth, and rm must
		// still be able to remove it.
		if in.Status != instance.Stopped && out != nil {
			cp := *in
			markLost(&cp)
			return &cp
		}
		return in
	}
	if out.AutoRemove && out.Status == instance.Stopped {
		_ = st.Remove(out.ID)
	}
	return out
}

// endRemains kills what is left of an instance whose owner is gone: its
// process (init or QEMU), its cgroup, its hold on its network.
func endRemains(st *instance.Store, in *instance.Instance) {
	if instance.Alive(in.Pid, in.PidStart) {
		_ = syscall.Kill(in.Pid, syscall.SIGKILL)
	}
	if in.Cgroup != "" {
		_ = container.Cleanup(in.Cgroup)
	}
	_ = network.Detach(st.Root(), in)
}

// markLost records in as ended by the loss of its owner.
func markLost(x *instance.Instance) {
	x.Status = instance.Stopped
	x.Endpoint = nil
	code := 137
	x.ExitCode = &code
	x.Finished = time.Now().UTC()
	x.Error = LostError
}

// RequireActive refuses an instance that has no live process (created or
// stopped), as verbs that reach into the workload (exec, top, stats) do.
func RequireActive(in *instance.Instance) error {
	if !in.Status.Active() {
		return fmt.Errorf("instance %s is %s: %w", in.ShortID(), in.Status, errdefs.ErrConflict)
	}
	return nil
}

// Signal relays sig to the instance's workload through its engine
// (SIGKILL ends the whole instance). A paused workload takes the signal
// once it thaws: as Docker does for a paused container, Signal then
// resumes it. The status is read, the signal sent and the thaw recorded
// under the record lock, so no pause slips in between.
func Signal(st *instance.Store, in *instance.Instance, sig syscall.Signal) error {
	return signal(st, in, sig, false)
}

// Kill is Signal for a user who ends the instance (stop, kill with a
// signal that ends it, rm -f): in the same step under the record lock it
// first records StoppedByUser, so that no restart policy undoes it, and
// calls off a restart under way. An instance its owner is restarting or
// starting again is then not an error: it does not start.
func Kill(st *instance.Store, in *instance.Instance, sig syscall.Signal) error {
	return signal(st, in, sig, true)
}

// ErrStoppedByUser is why an instance the user stopped does not start
// again (Again, and Start of an instance stopped while it started).
var ErrStoppedByUser = fmt.Errorf("stopped by the user: %w", errdefs.ErrConflict)

func signal(st *instance.Store, in *instance.Instance, sig syscall.Signal, byUser bool) error {
	return st.Locked(in.ID, func(x *instance.Instance, write func(*instance.Instance) error) error {
		if byUser && (!x.StoppedByUser || x.Restarting) {
			pending := (x.Restarting || x.Status == instance.Created) && instance.Alive(x.MonitorPid, x.MonStart)
			x.StoppedByUser, x.Restarting = true, false
			if err := write(x); err != nil {
				return err
			}
			if pending {
				return nil // its owner sees the mark and does not start it
			}
		}
		if !x.Status.Active() || !instance.Alive(x.Pid, x.PidStart) {
			return fmt.Errorf("instance %s is not running: %w", x.ShortID(), errdefs.ErrConflict)
		}
		h, err := Handle(st, x)
		if err != nil {
			return err
		}
		if err := h.Signal(sig); err != nil {
			return err
		}
		if x.Status != instance.Paused {
			return nil
		}
		if err := h.Resume(); err != nil {
			if dying(x.Pid, x.PidStart) {
				// It ended meanwhile (its cgroup may be gone): the
				// owner records the end.
				return nil
			}
			return err
		}
		x.Status = instance.Running
		return write(x)
	})
}

// Pause freezes the instance's workload (a container's processes through
// its cgroup's freezer, a VM's vCPUs through QEMU) and records it paused.
// Only a running instance can be paused; the check, the freeze and the
// record are one step under the record lock, so of concurrent pauses one
// succeeds and the others are refused (errdefs.ErrConflict). A workload
// already killed is thawed again and refused: frozen, it could not die.
func Pause(st *instance.Store, in *instance.Instance) error {
	return setPaused(st, in, true)
}

// Resume thaws what Pause froze and records the instance running. Only a
// paused instance can be resumed (a created one becomes running by its
// start alone).
func Resume(st *instance.Store, in *instance.Instance) error {
	return setPaused(st, in, false)
}

func setPaused(st *instance.Store, in *instance.Instance, on bool) error {
	to := instance.Running
	if on {
		to = instance.Paused
	}
	return st.Locked(in.ID, func(x *instance.Instance, write func(*instance.Instance) error) error {
		if err := instance.CanMove(x.Status, to); err != nil {
			return fmt.Errorf("instance %s: %w", x.ShortID(), err)
		}
		if !on && x.Status != instance.Paused {
			// A created instance becomes running by its start alone.
			return fmt.Errorf("instance %s is %s, not paused: %w", x.ShortID(), x.Status, errdefs.ErrConflict)
		}
		h, err := Handle(st, x)
		if err != nil {
			return err
		}
		undo := h.Pause
		if on {
			undo = h.Resume
			err = h.Pause()
		} else {
			err = h.Resume()
		}
		if err != nil {
			return err
		}
		if on && dying(x.Pid, x.PidStart) {
			_ = undo()
			return fmt.Errorf("instance %s is being killed: %w", x.ShortID(), errdefs.ErrConflict)
		}
		x.Status = to
		if err := write(x); err != nil {
			_ = undo()
			return err
		}
		return nil
	})
}

// dying reports whether the process (pid, start) has been sent SIGKILL
// (pending, or taken and exiting) or is gone. A process frozen with
// SIGKILL pending may never take it: under cgroup v1's freezer it can
// stay frozen until thawed.
func dying(pid int, start uint64) bool {
	if !instance.Alive(pid, start) {
		return true
	}
	const pfExiting = 0x4
	_, f, err := usage.StatFields(fmt.Sprintf("/proc/%d", pid))
	if err != nil || len(f) < 7 {
		return true
	}
	// f[6] is the flags field (the 9th of /proc/PID/stat).
	if flags, err := strconv.ParseUint(f[6], 10, 64); err != nil || flags&pfExiting != 0 {
		return true
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return true
	}
	const sigkill = 1 << (syscall.SIGKILL - 1)
	for _, l := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok || (k != "SigPnd" && k != "ShdPnd") {
			continue
		}
		if mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64); err == nil && mask&sigkill != 0 {
			return true
		}
	}
	return false
}

// Traits are the traits of in's engine: how it is wired to its owner. An
// instance whose isolation no engine knows (a record of a newer berth)
// has none.
func Traits(in *instance.Instance) engine.Traits {
	e, err := engine.For(in.Isolation)
	if err != nil {
		return engine.Traits{}
	}
	return e.Traits()
}

// Handle reaches in, which some process owns, through its engine.
func Handle(st *instance.Store, in *instance.Instance) (engine.Handle, error) {
	e, err := engine.For(in.Isolation)
	if err != nil {
		return nil, err
	}
	return e.Open(in, st.Dir(in.ID)), nil
}

// Stop is the user's stop: it records StoppedByUser (see Kill), sends
// SIGTERM, waits up to grace for the instance to end, then sends SIGKILL
// and waits for its owner to record the end. A restart under way is
// called off; an instance being started again is waited for until its
// owner has recorded that it did not start.
func Stop(st *instance.Store, in *instance.Instance, grace time.Duration) error {
	termErr := Kill(st, in, syscall.SIGTERM)
	cur, err := st.Get(in.ID)
	if err != nil {
		return nil // removed meanwhile (--rm)
	}
	if !cur.Status.Active() {
		if cur.Status == instance.Created && !WaitStopped(st, in.ID, 10*time.Second) {
			return fmt.Errorf("instance %s: its owner did not record its stop", in.ShortID())
		}
		return nil
	}
	if termErr == nil && WaitStopped(st, in.ID, grace) {
		return nil
	}
	_ = Kill(st, in, syscall.SIGKILL)
	if WaitStopped(st, in.ID, 10*time.Second) {
		return nil
	}
	return fmt.Errorf("instance %s did not stop after SIGKILL", in.ShortID())
}

// WaitStopped waits until the record says stopped (or is gone, for --rm
// instances), reconciling it in case its owner died.
func WaitStopped(st *instance.Store, id string, timeout time.Duration) bool {
	start := time.Now()
	for {
		in, err := st.Get(id)
		if errors.Is(err, errdefs.ErrNotFound) {
			return true
		}
		if err == nil && Reconcile(st, in).Status == instance.Stopped {
			return true
		}
		if time.Since(start) > timeout {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
