// Command ptrace1 is a hostile workload for the end-to-end tests: it
// stops its kernel's PID 1 (a VM guest's agent) under ptrace, every
// thread of it, and holds it stopped for as long as it lives. Signals
// cannot stop an init (the kernel ignores SIGSTOP sent to it), so each
// thread is seized (PTRACE_SEIZE, with new threads traced as they are
// made) and interrupted (PTRACE_INTERRUPT). It prints how many threads it
// stopped, then sleeps.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"
)

const (
	ptraceSeize       = 0x4206
	ptraceInterrupt   = 0x4207
	ptraceOTraceClone = 0x8
)

func ptrace(req, tid, data uintptr) error {
	if _, _, e := syscall.Syscall6(syscall.SYS_PTRACE, req, tid, 0, data, 0, 0); e != 0 {
		return e
	}
	return nil
}

func main() {
	// Every ptrace request must come from the thread that seized.
	runtime.LockOSThread()
	seized := map[int]bool{}
	for round := 0; round < 5; round++ {
		ents, err := os.ReadDir("/proc/1/task")
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil || seized[tid] {
				continue
			}
			if err := ptrace(ptraceSeize, uintptr(tid), ptraceOTraceClone); err != nil {
				fmt.Printf("seize %d: %v\n", tid, err)
				os.Exit(1)
			}
			if err := ptrace(ptraceInterrupt, uintptr(tid), 0); err != nil {
				fmt.Printf("interrupt %d: %v\n", tid, err)
				os.Exit(1)
			}
			seized[tid] = true
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Printf("stopped %d threads\n", len(seized))
	for {
		time.Sleep(time.Hour)
	}
}
