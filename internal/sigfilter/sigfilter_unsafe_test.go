//go:build linux && amd64

package sigfilter

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The test binary doubles as the two processes of the test: a PID 1 of a
// new pid namespace with the filter, and a process inside that namespace
// that signals it.
const helperEnv = "SIGFILTER_TEST_HELPER"

// marker is what PID 1 sends itself once the sender is done: the highest
// signal, so the kernel and the runtime hand it over after any other
// signal that got through.
const marker = syscall.Signal(64)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "init":
		os.Exit(helperInit())
	case "sender":
		os.Exit(helperSender())
	}
	os.Exit(m.Run())
}

// helperInit asks for the signals a workload would use against it,
// installs the filter (unless told not to), lets a process of its
// namespace send them, and reports on stdout what reached it: first from
// inside, then from the test (the host).
func helperInit() int {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGUSR1, unix.SIGSEGV, unix.SIGTERM, unix.SIGABRT, marker)
	if os.Getenv("SIGFILTER_TEST_OFF") == "" && !Install() {
		fmt.Println("not installed")
		return 1
	}
	sender := exec.Command("/proc/self/exe")
	sender.Env = append(os.Environ(), helperEnv+"=sender")
	sender.Stderr = os.Stderr
	if err := sender.Run(); err != nil {
		fmt.Println("sender:", err)
		return 1
	}
	unix.Kill(os.Getpid(), marker)
	var got []string
	for s := range sigs {
		if s == marker {
			break
		}
		got = append(got, s.String())
	}
	fmt.Printf("inside: %q\n", got)
	fmt.Printf("host: %v\n", <-sigs)
	return 0
}

// helperSender signals PID 1 every way a process can: kill, tgkill to its
// main thread, and sigqueue with a siginfo that claims to come from
// outside the namespace.
func helperSender() int {
	for _, s := range []syscall.Signal{unix.SIGUSR1, unix.SIGSEGV, unix.SIGTERM, unix.SIGABRT} {
		if err := unix.Kill(1, s); err != nil {
			fmt.Fprintln(os.Stderr, "kill:", err)
			return 1
		}
		if err := unix.Tgkill(1, 1, s); err != nil {
			fmt.Fprintln(os.Stderr, "tgkill:", err)
			return 1
		}
		var info [128]byte
		*(*int32)(unsafe.Pointer(&info[0])) = int32(s)
		*(*int32)(unsafe.Pointer(&info[8])) = -1 // SI_QUEUE
		// si_pid (offset 16) stays 0: "from an ancestor namespace".
		if _, _, errno := unix.RawSyscall(unix.SYS_RT_SIGQUEUEINFO, 1, uintptr(s), uintptr(unsafe.Pointer(&info[0]))); errno != 0 {
			fmt.Fprintln(os.Stderr, "rt_sigqueueinfo:", errno)
			return 1
		}
	}
	return 0
}

// PID 1 with the filter gets nothing of what its namespace sends it, not
// even a SIGSEGV that claims a fault, and still gets the host's signals.
func TestPID1DropsItsNamespacesSignals(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a new pid namespace")
	}
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(os.Environ(), helperEnv+"=init")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(out)
	if !lines.Scan() || lines.Text() != `inside: []` {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("PID 1 got from its namespace: %q (stderr %q)", lines.Text(), stderr.String())
	}
	if err := cmd.Process.Signal(unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if !lines.Scan() || lines.Text() != "host: user defined signal 1" {
		t.Errorf("PID 1 after the host's SIGUSR1: %q", lines.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("PID 1: %v (stderr %q)", err, stderr.String())
	}
}
