package container

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Tracing a stage: when the parent traces (Trace is set), the stage
// notes when it reaches each step, on the monotonic clock both share, and
// sends its notes with its next message; the parent passes them on to
// Trace at the times they happened.

// stamp is one step a stage reached, and when (CLOCK_MONOTONIC, ns).
type stamp struct {
	Step string `json:"step"`
	Mono int64  `json:"mono"`
}

const stageTraceEnv = "BERTH_STAGE_TRACE=1"

var (
	stageTracing = os.Getenv("BERTH_STAGE_TRACE") != ""
	stamps       []stamp
)

// note records that the stage reached step, when tracing.
func note(step string) {
	if stageTracing {
		stamps = append(stamps, stamp{Step: step, Mono: monotonic()})
	}
}

// takeStamps returns the steps noted since the last call.
func takeStamps() []stamp {
	s := stamps
	stamps = nil
	return s
}

func monotonic() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// traceStamps hands a stage's steps to Trace, each at its time.
func traceStamps(stage string, s []stamp) {
	if Trace == nil || len(s) == 0 {
		return
	}
	now, mono := time.Now(), monotonic()
	for _, st := range s {
		Trace(stage+": "+st.Step, now.Add(-time.Duration(mono-st.Mono)))
	}
}
