package main

import (
	"fmt"
	"os"
	"time"

	"github.com/berth-dev/berth/internal/container"
)

// processStart is when this process's main began; BERTH_TRACE=1 makes
// the start path print how long each step took, for profiling start-up.
var (
	processStart = time.Now()
	tracing      = os.Getenv("BERTH_TRACE") != ""
)

func trace(step string) {
	if tracing {
		fmt.Fprintf(os.Stderr, "berth trace: %7.2f ms  %s\n", float64(time.Since(processStart).Microseconds())/1000, step)
	}
}

func init() {
	if tracing {
		container.Trace = func(step string) { trace("engine: " + step) }
	}
}
