package main

import (
	"fmt"
	"os"
	"time"

	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/lifecycle"
)

// processStart is when this process's main began; BERTH_TRACE=1 makes
// the start path print how long each step took, for profiling start-up.
var (
	processStart = time.Now()
	tracing      = os.Getenv("BERTH_TRACE") != ""
)

func trace(step string) { traceAt(step, time.Now()) }

func traceAt(step string, at time.Time) {
	if tracing {
		fmt.Fprintf(os.Stderr, "berth trace: %7.2f ms  %s\n", float64(at.Sub(processStart).Microseconds())/1000, step)
	}
}

func init() {
	if tracing {
		container.Trace = func(step string, at time.Time) { traceAt("engine: "+step, at) }
		lifecycle.Trace = traceAt
	}
}
