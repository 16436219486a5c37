// Command sigpid1 is a hostile workload for the end-to-end tests: it
// signals its container's PID 1 every way a process can, a signal at a
// time: sigqueue with a siginfo that claims an outside sender, kill, and
// tgkill to each of PID 1's threads. Then it waits a while, in case PID
// 1 died of one (which would kill it too), and says it is still alive.
package main

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	sigs := []syscall.Signal{
		syscall.SIGSEGV, syscall.SIGBUS, syscall.SIGFPE, syscall.SIGILL, syscall.SIGTRAP,
		syscall.SIGSYS, syscall.SIGABRT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGALRM,
		syscall.SIGXCPU, 32, 33, 34,
	}
	ents, err := os.ReadDir("/proc/1/task")
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	for _, s := range sigs {
		var info [128]byte
		*(*int32)(unsafe.Pointer(&info[0])) = int32(s)
		*(*int32)(unsafe.Pointer(&info[8])) = -1 // SI_QUEUE; si_pid 0: "from outside"
		if _, _, errno := syscall.RawSyscall(syscall.SYS_RT_SIGQUEUEINFO, 1, uintptr(s), uintptr(unsafe.Pointer(&info[0]))); errno != 0 {
			fmt.Println("rt_sigqueueinfo:", errno)
			os.Exit(1)
		}
		syscall.Kill(1, s)
		for _, e := range ents {
			if tid, err := strconv.Atoi(e.Name()); err == nil {
				syscall.Tgkill(1, tid, s)
			}
		}
	}
	time.Sleep(time.Second)
	fmt.Println("alive")
}
