package main

import (
	"flag"
	"fmt"
	"math"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/lifecycle"
)

func cmdStop(g *globals, args []string) error {
	fs, grace, err := parseGrace("stop", args)
	if err != nil {
		return err
	}
	return eachInstance(g, fs.Args(), func(st *instance.Store, in *instance.Instance) error {
		return lifecycle.Stop(st, in, grace)
	})
}

// parseGrace parses the flags of a verb that stops instances (stop,
// restart): -t, the grace period between SIGTERM and SIGKILL.
func parseGrace(verb string, args []string) (*flag.FlagSet, time.Duration, error) {
	fs := newFlags(verb)
	secs := fs.Int("t", 10, "seconds to wait after SIGTERM before SIGKILL (-1: no limit)")
	fs.IntVar(secs, "time", 10, "seconds to wait after SIGTERM before SIGKILL (-1: no limit)")
	if err := parse(fs, args); err != nil {
		return nil, 0, err
	}
	grace, err := gracePeriod(*secs)
	return fs, grace, err
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
