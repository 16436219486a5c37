package lifecycle

import (
	"fmt"
	"os"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/health"
	"github.com/berth-dev/berth/internal/instance"
)

// An instance with a restart policy is restarted by its owner, the
// monitor that runs it: when the workload ends, Finish records the end,
// Ended decides (under the record lock) whether it starts again, the
// owner waits its back-off (instance.Backoff) and Again makes the
// record created once more for a new Start: same ID, name, directory
// and bundle; new processes; its network attached again. Whoever stops
// it (Stop, Kill) records StoppedByUser under the same lock before
// signalling, so a restart never undoes a user's stop.
//
// When an owner dies (kill -9), Reconcile, which every berth command
// runs on the records it reads, ends what is left and, when the policy
// wants the instance back, starts a new owner through Spawner, recorded
// as the instance's owner in the same locked step. Revive does the same
// for a user's start (berth start, restart, the boot-time start).

// Spawn starts a new owner process for instance id and returns its pid,
// without waiting for it: the caller holds the instance's record lock,
// which the new owner takes (in Again) once the caller has recorded it
// as the owner. The new owner calls Again and then Start.
type Spawn func(id string) (pid int, err error)

// Spawner, when set, is how Reconcile gives an instance whose restart
// policy wants it back a new owner (berth sets it in main to start a
// monitor). When nil, Reconcile only records such an instance lost.
var Spawner Spawn

// Revive is a user's start of instance id (berth start): when no owner
// of it lives it ends what is left of it, starts a new owner with spawn
// and records that owner, all under the record lock; the user's stop is
// forgotten and the restart count starts over. It reports whether it
// spawned an owner: an instance that runs, or that its owner is starting
// or restarting, is left as it is. An instance whose owner is still
// recording its end is waited for (up to 10 s).
func Revive(st *instance.Store, id string, spawn Spawn) (bool, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		spawned, busy := false, false
		err := st.Locked(id, func(x *instance.Instance, write func(*instance.Instance) error) error {
			if instance.Alive(x.MonitorPid, x.MonStart) {
				if x.Status == instance.Stopped && !x.Restarting {
					busy = true // its owner is recording its end
				}
				return nil
			}
			if x.Status != instance.Stopped {
				endRemains(st, x)
				markLost(x)
			}
			pid, err := spawn(x.ID)
			if err != nil {
				return fmt.Errorf("instance %s: start its monitor: %w", x.ShortID(), err)
			}
			x.MonitorPid, x.MonStart, x.Restarting = pid, instance.ProcStart(pid), true
			x.StoppedByUser, x.RestartCount, x.Detached = false, 0, true
			spawned = true
			return write(x)
		})
		if err != nil || !busy {
			return spawned, err
		}
		if time.Now().After(deadline) {
			return false, fmt.Errorf("instance %.12s: its owner has not recorded its end: %w", id, errdefs.ErrConflict)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Again makes the stopped instance id, whose recorded owner is the
// calling process (Reconcile, Revive or Ended recorded it), created once
// more, for Start to run it again. counted adds one to RestartCount (a
// restart, not a user's start). It fails with ErrStoppedByUser when the
// user stopped the instance meanwhile, and with errdefs.ErrConflict when
// another process owns it or it is not stopped.
func Again(st *instance.Store, id string, counted bool) (*instance.Instance, error) {
	var out *instance.Instance
	err := st.Locked(id, func(x *instance.Instance, write func(*instance.Instance) error) error {
		if x.MonitorPid != os.Getpid() || x.Status != instance.Stopped {
			return fmt.Errorf("instance %s: %s, owned by process %d: %w", x.ShortID(), x.Status, x.MonitorPid, errdefs.ErrConflict)
		}
		if x.StoppedByUser {
			if x.Restarting {
				x.Restarting = false
				_ = write(x)
			}
			return fmt.Errorf("instance %s: %w", x.ShortID(), ErrStoppedByUser)
		}
		x.Status, x.Restarting = instance.Created, false
		if counted {
			x.RestartCount++
		}
		x.Pid, x.PidStart, x.ExitCode, x.Signal, x.OOMKilled, x.Error, x.Endpoint = 0, 0, nil, 0, false, "", nil
		x.Health = nil
		if x.Healthcheck != nil {
			x.Health = health.NewState()
		}
		out = x
		return write(x)
	})
	return out, err
}

// Ended is the owner's decision, once Finish (or Failed) recorded the
// instance's end, whether to start it again: its restart policy wants it
// back (or force: its health check asked for a restart) and the user has
// not stopped it. Restarting is recorded with the answer.
func Ended(st *instance.Store, id string, force bool) (bool, error) {
	again := false
	err := st.Locked(id, func(x *instance.Instance, write func(*instance.Instance) error) error {
		if x.MonitorPid != os.Getpid() || x.Status != instance.Stopped {
			return nil
		}
		again = !x.StoppedByUser && !x.AutoRemove && (force || x.WantsRestart())
		if x.Restarting == again {
			return nil
		}
		x.Restarting = again
		return write(x)
	})
	return again, err
}

// Failed records that the owner's start of instance id failed (Start
// leaves the record created): it is stopped with code and the error.
func Failed(st *instance.Store, id string, code int, err error) error {
	_, recErr := st.Update(id, func(x *instance.Instance) error {
		if x.Status == instance.Stopped {
			return nil
		}
		x.Status, x.ExitCode, x.Error = instance.Stopped, &code, errdefs.OneLine(err)
		x.Finished = time.Now().UTC()
		return nil
	})
	return recErr
}

// Waiting reports whether the owner of instance id, waiting its back-off
// before a restart, should still start it: false once the user stopped
// it or its record is gone.
func Waiting(st *instance.Store, id string) bool {
	x, err := st.Get(id)
	return err == nil && !x.StoppedByUser && x.MonitorPid == os.Getpid()
}
