package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// tracing is set by berth.trace on the kernel command line: the agent
// then prints when it reaches each step of a start, in seconds since the
// guest kernel started (CLOCK_BOOTTIME), for profiling.
var tracing bool

// traceKernel prints, when tracing, when the kernel started /init, from
// its log.
func traceKernel() {
	f, err := os.OpenFile("/dev/kmsg", os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return
	}
	defer f.Close()
	buf := make([]byte, 8192)
	for {
		n, err := f.Read(buf) // one record per read
		if err != nil {
			return
		}
		// "PRIO,SEQ,MICROSECONDS,FLAGS;MESSAGE"
		rec := string(buf[:n])
		head, msg, ok := strings.Cut(rec, ";")
		if !ok || !strings.HasPrefix(msg, "Run /init") {
			continue
		}
		if f := strings.Split(head, ","); len(f) > 2 {
			if us, err := strconv.ParseInt(f[2], 10, 64); err == nil {
				fmt.Fprintf(console, "berth-agent: trace %d.%03d s kernel runs /init\n", us/1e6, us/1000%1000)
			}
		}
		return
	}
}

// tracef prints a trace line when tracing.
func tracef(step string) {
	if tracing {
		traceAt(bootTime(), step)
	}
}

func traceAt(ts unix.Timespec, step string) {
	fmt.Fprintf(console, "berth-agent: trace %d.%03d s %s\n", ts.Sec, ts.Nsec/1e6, step)
}

// bootTime is the time since the guest kernel started.
func bootTime() unix.Timespec {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return ts
}
