package engine

import (
	"errors"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
)

// A VM whose owner is gone still ends on SIGKILL: the handle kills the
// recorded QEMU (here a stand-in) by its pid; other signals fail as the
// owner cannot be reached. A pid whose start time is not the recorded one
// (reused) is left alone.
func TestVMHandleKillWithoutOwner(t *testing.T) {
	qemu := exec.Command("sleep", "1000")
	if err := qemu.Start(); err != nil {
		t.Fatal(err)
	}
	defer qemu.Process.Kill()
	exited := make(chan struct{})
	go func() { _ = qemu.Wait(); close(exited) }()
	pid := qemu.Process.Pid
	e, err := For(instance.IsolationVM)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir() // no control socket: no owner
	in := &instance.Instance{ID: "0123456789abcdef", Isolation: instance.IsolationVM, Pid: pid, PidStart: instance.ProcStart(pid)}

	if err := e.Open(in, dir).Signal(syscall.SIGTERM); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("SIGTERM without an owner: %v, want unavailable", err)
	}
	reused := *in
	reused.PidStart++
	if err := e.Open(&reused, dir).Signal(syscall.SIGKILL); err == nil {
		t.Fatal("SIGKILL to a reused pid succeeded")
	}
	select {
	case <-exited:
		t.Fatal("a process whose start time is not the recorded one was killed")
	case <-time.After(100 * time.Millisecond):
	}
	if err := e.Open(in, dir).Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL without an owner: %v", err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the recorded QEMU was not killed")
	}
}
