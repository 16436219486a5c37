package main

import (
	"errors"
	"fmt"
	"math"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/lifecycle"
)

func cmdStop(g *globals, args []string) error {
	fs := newFlags("stop")
	secs := fs.Int("t", 10, "seconds to wait after SIGTERM before SIGKILL (-1: no limit)")
	fs.IntVar(secs, "time", 10, "seconds to wait after SIGTERM before SIGKILL (-1: no limit)")
	if err := parse(fs, args); err != nil {
		return err
	}
	grace, err := gracePeriod(*secs)
	if err != nil {
		return err
	}
	return eachInstance(g, fs.Args(), func(st *instance.Store, in *instance.Instance) error {
		return stopInstance(st, in, grace)
	})
}

// noLimit is the grace period of `stop -t -1`: wait as long as the
// workload takes, as Docker does.
const noLimit = time.Duration(math.MaxInt64)

// gracePeriod turns stop's -t into a duration. A negative value other
// than -1 is refused: it must not mean "kill at once".
func gracePeriod(secs int) (time.Duration, error) {
	switch {
	case secs == -1:
		return noLimit, nil
	case secs < 0:
		return 0, fmt.Errorf("-t %d: want seconds (0 or more), or -1 to wait without limit: %w", secs, errdefs.ErrInvalid)
	case secs > int(noLimit/time.Second):
		return noLimit, nil
	}
	return time.Duration(secs) * time.Second, nil
}

// stopInstance sends SIGTERM, waits up to grace for the instance to end,
// then sends SIGKILL and waits for its owner to record the end.
func stopInstance(st *instance.Store, in *instance.Instance, grace time.Duration) error {
	if !in.Status.Active() {
		return nil
	}
	if err := lifecycle.Signal(st, in, syscall.SIGTERM); err == nil && waitStopped(st, in.ID, grace) {
		return nil
	}
	_ = lifecycle.Signal(st, in, syscall.SIGKILL)
	if waitStopped(st, in.ID, 10*time.Second) {
		return nil
	}
	return fmt.Errorf("instance %s did not stop after SIGKILL", in.ShortID())
}

// waitStopped waits until the record says stopped (or is gone, for --rm
// instances), reconciling it in case its owner died.
func waitStopped(st *instance.Store, id string, timeout time.Duration) bool {
	start := time.Now()
	for {
		in, err := st.Get(id)
		if errors.Is(err, errdefs.ErrNotFound) {
			return true
		}
		if err == nil && lifecycle.Reconcile(st, in).Status == instance.Stopped {
			return true
		}
		if time.Since(start) > timeout {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
