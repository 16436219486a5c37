package instance

import (
	"fmt"

	"github.com/berth-dev/berth/internal/errdefs"
)

// Status is where an instance is in its life. Containers and VMs share the
// same machine:
//
//	created ──start──▶ running ──exit/kill──▶ stopped
//	   │                 │  ▲
//	   │               pause resume
//	   │                 ▼  │
//	   │                paused ──kill──▶ stopped
//	   └──────────fail/kill──────────────▶ stopped
//	   ▲                                      │
//	   └────────────────start again───────────┘
//
// A stopped instance starts again by becoming created once more, under
// its owner (a restart policy's restart, berth start): the same record,
// directory and bundle, new processes.
type Status string

const (
	Created Status = "created" // resources made, workload not started
	Running Status = "running" // workload started and not yet reaped
	Paused  Status = "paused"  // workload frozen
	Stopped Status = "stopped" // workload ended; exit status recorded
)

// transitions lists, for every status, the statuses it may move to.
var transitions = map[Status][]Status{
	Created: {Running, Stopped},
	Running: {Paused, Stopped},
	Paused:  {Running, Stopped},
	Stopped: {Created},
}

// TransitionError is returned for a move the state machine forbids.
type TransitionError struct {
	From, To Status
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("instance is %s, cannot become %s", e.From, e.To)
}

// Unwrap classes the error as a conflict with the current state.
func (e *TransitionError) Unwrap() error { return errdefs.ErrConflict }

// CanMove reports whether from may become to.
func CanMove(from, to Status) error {
	for _, s := range transitions[from] {
		if s == to {
			return nil
		}
	}
	return &TransitionError{From: from, To: to}
}

// Active reports whether the instance holds live resources (a process).
func (s Status) Active() bool { return s == Running || s == Paused }
