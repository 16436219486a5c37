// Package health is an instance's health check as Docker defines it: the
// check (an image's HEALTHCHECK, or run's --health-* flags), the state a
// run of checks builds (starting, healthy, unhealthy, the failing streak,
// the last results) and the loop that runs it. It knows nothing of
// engines or records: its owner gives it a Probe that runs the check's
// command in the instance (berth's lifecycle does, through an engine's
// exec, for containers and VMs alike) and stores the state it reports.
package health

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
)

// Docker's defaults for what a check leaves unset (Config.Effective).
const (
	DefaultInterval = 30 * time.Second
	DefaultTimeout  = 30 * time.Second
	DefaultRetries  = 3
	// MinDuration is the least interval, timeout or start period a check
	// may set, Docker's.
	MinDuration = time.Millisecond
	// MaxLog is how many results a State keeps, the newest last.
	MaxLog = 5
	// MaxOutput is how much of a result's output is kept, in bytes.
	MaxOutput = 4096
)

// The statuses of a State.
const (
	Starting  = "starting"  // no check has passed yet
	Healthy   = "healthy"   // the last check passed
	Unhealthy = "unhealthy" // Retries checks in a row failed (after the start period)
)

// Config is a health check. Zero durations and retries take Docker's
// defaults (see Effective).
type Config struct {
	// Test is the check: ["CMD", ARG...] runs ARG... as is,
	// ["CMD-SHELL", COMMAND] runs COMMAND with /bin/sh -c, ["NONE"]
	// disables the image's check.
	Test []string `json:"test"`
	// Interval is the time between checks.
	Interval time.Duration `json:"interval,omitempty"`
	// Timeout is how long a check may run before it counts as failed.
	Timeout time.Duration `json:"timeout,omitempty"`
	// StartPeriod is the time after a start during which failures do
	// not count, until a first check passes.
	StartPeriod time.Duration `json:"start_period,omitempty"`
	// Retries is how many failures in a row make the instance unhealthy.
	Retries int `json:"retries,omitempty"`
}

// Effective is c with Docker's defaults in place of what it leaves unset.
func (c Config) Effective() Config {
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Retries <= 0 {
		c.Retries = DefaultRetries
	}
	return c
}

// Disabled reports whether the check runs nothing (no test, or NONE).
func (c *Config) Disabled() bool { return c == nil || len(c.Test) == 0 || c.Test[0] == "NONE" }

// Command is the process the check runs in the instance.
func (c *Config) Command() []string {
	if c.Disabled() {
		return nil
	}
	if c.Test[0] == "CMD-SHELL" {
		return []string{"/bin/sh", "-c", c.Test[1]}
	}
	return c.Test[1:]
}

// Validate checks a test's form and the durations and retries, naming
// the run flag each comes from.
func (c *Config) Validate() error {
	if len(c.Test) > 0 {
		switch c.Test[0] {
		case "NONE":
		case "CMD":
			if len(c.Test) < 2 {
				return fmt.Errorf("health check %q: CMD without a command: %w", c.Test, errdefs.ErrInvalid)
			}
		case "CMD-SHELL":
			if len(c.Test) != 2 || c.Test[1] == "" {
				return fmt.Errorf("health check %q: CMD-SHELL wants one command: %w", c.Test, errdefs.ErrInvalid)
			}
		default:
			return fmt.Errorf("health check %q: want CMD, CMD-SHELL or NONE first: %w", c.Test, errdefs.ErrInvalid)
		}
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--health-interval", c.Interval}, {"--health-timeout", c.Timeout}, {"--health-start-period", c.StartPeriod}} {
		if d.v != 0 && d.v < MinDuration {
			return fmt.Errorf("%s %v: want at least %v (0 for the default): %w", d.flag, d.v, MinDuration, errdefs.ErrInvalid)
		}
	}
	if c.Retries < 0 {
		return fmt.Errorf("--health-retries %d: must not be negative: %w", c.Retries, errdefs.ErrInvalid)
	}
	return nil
}

// Merge is the check an instance runs: the image's, with what the run's
// flags set replacing it field by field, as Docker merges them; nil when
// there is none or it is disabled (NONE, --no-healthcheck).
func Merge(image, flags *Config, disable bool) *Config {
	if disable {
		return nil
	}
	var c Config
	if image != nil {
		c = *image
	}
	if flags != nil {
		if len(flags.Test) > 0 {
			c.Test = flags.Test
		}
		if flags.Interval != 0 {
			c.Interval = flags.Interval
		}
		if flags.Timeout != 0 {
			c.Timeout = flags.Timeout
		}
		if flags.StartPeriod != 0 {
			c.StartPeriod = flags.StartPeriod
		}
		if flags.Retries != 0 {
			c.Retries = flags.Retries
		}
	}
	if c.Disabled() {
		return nil
	}
	return &c
}

// FromImageConfig reads the HEALTHCHECK of an image config blob (Docker's
// "Healthcheck" in "config", durations in nanoseconds; the OCI config
// has no such field and keeps it when Docker's tools write one). It
// returns nil when the image has none.
func FromImageConfig(blob []byte) (*Config, error) {
	var doc struct {
		Config struct {
			Healthcheck *struct {
				Test        []string
				Interval    time.Duration
				Timeout     time.Duration
				StartPeriod time.Duration
				Retries     int
			}
		} `json:"config"`
	}
	if err := json.Unmarshal(blob, &doc); err != nil {
		return nil, fmt.Errorf("image config: %v: %w", err, errdefs.ErrInvalid)
	}
	h := doc.Config.Healthcheck
	if h == nil || len(h.Test) == 0 {
		return nil, nil
	}
	c := &Config{Test: h.Test, Interval: h.Interval, Timeout: h.Timeout, StartPeriod: h.StartPeriod, Retries: h.Retries}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("image HEALTHCHECK: %w", err)
	}
	return c, nil
}

// Result is one check's outcome.
type Result struct {
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	ExitCode int       `json:"exit_code"` // -1: it could not run, or ran past its timeout
	Output   string    `json:"output"`    // the first MaxOutput bytes of its stdout and stderr
}

// State is what the checks of one run of an instance found.
type State struct {
	Status        string   `json:"status"` // Starting, Healthy or Unhealthy
	FailingStreak int      `json:"failing_streak"`
	Log           []Result `json:"log,omitempty"` // the last MaxLog results, oldest first
}

// NewState is the state of an instance that has just started.
func NewState() *State { return &State{Status: Starting} }

// Record adds r, a check of an instance that started at started, to s,
// with Docker's rules: a pass makes it healthy and ends the streak; a
// failure adds to the streak, except while the instance is still
// starting within its start period, and Retries failures in a row make
// it unhealthy. It reports whether the status changed.
func (s *State) Record(c *Config, started time.Time, r Result) bool {
	if len(r.Output) > MaxOutput {
		r.Output = r.Output[:MaxOutput]
	}
	s.Log = append(s.Log, r)
	if len(s.Log) > MaxLog {
		s.Log = append([]Result(nil), s.Log[len(s.Log)-MaxLog:]...)
	}
	before := s.Status
	switch {
	case r.ExitCode == 0:
		s.FailingStreak = 0
		s.Status = Healthy
	case s.Status == Starting && r.Start.Sub(started) < c.StartPeriod:
		// Still starting: the failure is logged, not counted.
	default:
		s.FailingStreak++
		if s.FailingStreak >= c.Effective().Retries {
			s.Status = Unhealthy
		}
	}
	return s.Status != before
}

// Probe runs the check's command (Config.Command) in the instance once
// and returns its exit code and output. ctx ends at the check's timeout;
// a probe that cannot stop its process then may keep running: Check
// stops waiting for it.
type Probe func(ctx context.Context, cmd []string) (code int, output string, err error)

// Check runs probe once under c's timeout. A probe that fails to run or
// outlasts the timeout is a failed check, exit code -1, as with Docker.
func Check(ctx context.Context, c *Config, probe Probe) Result {
	r := Result{Start: time.Now()}
	timeout := c.Effective().Timeout
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type outcome struct {
		code int
		out  string
		err  error
	}
	done := make(chan outcome, 1)
	go func() {
		code, out, err := probe(ctx, c.Command())
		done <- outcome{code, out, err}
	}()
	select {
	case o := <-done:
		r.ExitCode, r.Output = o.code, o.out
		if o.err != nil {
			r.ExitCode, r.Output = -1, o.err.Error()
		}
	case <-ctx.Done():
		r.ExitCode, r.Output = -1, fmt.Sprintf("health check exceeded timeout (%v)", timeout)
	}
	r.End = time.Now()
	return r
}

// Run checks the instance that started at started every Interval until
// ctx ends (the first check one Interval after the start, as Docker
// does), and calls report with the state after each check. skip, when
// not nil, is asked before each check: a paused instance is not checked.
func Run(ctx context.Context, c *Config, started time.Time, probe Probe, skip func() bool, report func(State, Result)) {
	s := NewState()
	every := c.Effective().Interval
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if skip == nil || !skip() {
			r := Check(ctx, c, probe)
			if ctx.Err() != nil {
				return // the instance ended meanwhile: no verdict
			}
			s.Record(c, started, r)
			report(State{Status: s.Status, FailingStreak: s.FailingStreak, Log: slices.Clone(s.Log)}, r)
		}
		t.Reset(every)
	}
}
