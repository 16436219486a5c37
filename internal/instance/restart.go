package instance

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
)

// The names of restart policies (run --restart), Docker's.
const (
	RestartNo            = "no"
	RestartOnFailure     = "on-failure"
	RestartAlways        = "always"
	RestartUnlessStopped = "unless-stopped"
)

// RestartPolicy says when the owner of an instance starts it again after
// it ends (Docker's HostConfig.RestartPolicy).
type RestartPolicy struct {
	Name string `json:"name"` // RestartNo, RestartOnFailure, RestartAlways or RestartUnlessStopped
	// MaximumRetryCount bounds on-failure's restarts; 0 is no bound.
	MaximumRetryCount int `json:"maximum_retry_count,omitempty"`
}

// ParseRestartPolicy reads run's --restart: no, on-failure[:N],
// always or unless-stopped.
func ParseRestartPolicy(s string) (RestartPolicy, error) {
	name, max, hasMax := strings.Cut(s, ":")
	p := RestartPolicy{Name: name}
	switch name {
	case RestartNo, RestartAlways, RestartUnlessStopped:
		if !hasMax {
			return p, nil
		}
		return p, fmt.Errorf("--restart %q: only on-failure takes a maximum retry count: %w", s, errdefs.ErrInvalid)
	case RestartOnFailure:
		if !hasMax {
			return p, nil
		}
		n, err := strconv.Atoi(max)
		if err != nil || n < 0 {
			return p, fmt.Errorf("--restart %q: the maximum retry count must be a whole number, 0 or more: %w", s, errdefs.ErrInvalid)
		}
		p.MaximumRetryCount = n
		return p, nil
	}
	return p, fmt.Errorf("--restart %q: want no, on-failure[:N], always or unless-stopped: %w", s, errdefs.ErrInvalid)
}

// Restarts reports whether the policy restarts anything at all.
func (p *RestartPolicy) Restarts() bool { return p != nil && p.Name != "" && p.Name != RestartNo }

// WantsRestart reports whether in, which has ended (stopped), should be
// started again by its restart policy: never once the user stopped it
// (StoppedByUser); always and unless-stopped whatever its exit;
// on-failure after a non-zero exit, while it has restarts left.
func (in *Instance) WantsRestart() bool {
	p := in.RestartPolicy
	if !p.Restarts() || in.StoppedByUser || in.AutoRemove {
		return false
	}
	if p.Name != RestartOnFailure {
		return true
	}
	failed := in.ExitCode == nil || *in.ExitCode != 0
	return failed && (p.MaximumRetryCount == 0 || in.RestartCount < p.MaximumRetryCount)
}

// Docker's restart back-off.
const (
	firstRestartDelay = 100 * time.Millisecond
	maxRestartDelay   = time.Minute
	// restartResetAfter is how long a run must last for the delay to
	// start over from firstRestartDelay.
	restartResetAfter = 10 * time.Second
)

// Backoff is the delay before each restart, Docker's: 100 ms, doubled
// at each restart up to a minute, and back to 100 ms once a run lasted
// 10 s. The zero value is ready to use.
type Backoff struct{ last time.Duration }

// Next is the delay before the restart that follows a run of length ran.
func (b *Backoff) Next(ran time.Duration) time.Duration {
	switch {
	case b.last == 0 || ran >= restartResetAfter:
		b.last = firstRestartDelay
	case b.last < maxRestartDelay:
		b.last = min(2*b.last, maxRestartDelay)
	}
	return b.last
}

// What the owner does when an instance turns unhealthy (run
// --health-on-failure, Podman's).
const (
	HealthNone    = ""        // nothing: the status says it
	HealthKill    = "kill"    // SIGKILL; the restart policy decides what follows
	HealthRestart = "restart" // stop it and start it again, whatever the policy
	HealthStop    = "stop"    // stop it as berth stop does: no policy restarts it
)

// ParseHealthOnFailure reads --health-on-failure: none, kill, restart
// or stop.
func ParseHealthOnFailure(s string) (string, error) {
	switch s {
	case "none", "":
		return HealthNone, nil
	case HealthKill, HealthRestart, HealthStop:
		return s, nil
	}
	return "", fmt.Errorf("--health-on-failure %q: want none, kill, restart or stop: %w", s, errdefs.ErrInvalid)
}
