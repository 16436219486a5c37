package lifecycle

import (
	"errors"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/instance"
)

// deadPid is the pid and start time of a process that has exited.
func deadPid(t *testing.T) (int, uint64) {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid, start := cmd.Process.Pid, instance.ProcStart(cmd.Process.Pid)
	_ = cmd.Wait()
	return pid, start
}

// Several processes reconcile an instance whose owner died at once: one
// gives it a new owner, the others find that owner alive.
func TestReconcileSpawnsOneOwner(t *testing.T) {
	st, err := instance.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pid, start := deadPid(t)
	code := 1
	in := &instance.Instance{ID: instance.NewID(), Status: instance.Stopped, ExitCode: &code, Created: time.Now(),
		RestartPolicy: &instance.RestartPolicy{Name: instance.RestartAlways}, MonitorPid: pid, MonStart: start}
	in.Name = in.ID[:12]
	if err := st.Create(in); err != nil {
		t.Fatal(err)
	}
	var spawned atomic.Int32
	Spawner = func(string) (int, error) { spawned.Add(1); return os.Getpid(), nil }
	defer func() { Spawner = nil }()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); Reconcile(st, in) }()
	}
	wg.Wait()
	got, err := st.Get(in.ID)
	if err != nil {
		t.Fatal(err)
	}
	if spawned.Load() != 1 || !got.Restarting || got.MonitorPid != os.Getpid() {
		t.Fatalf("%d owners spawned; record restarting %v, owner %d", spawned.Load(), got.Restarting, got.MonitorPid)
	}
	// The new owner (this process) starts it again, counted.
	again, err := Again(st, in.ID, true)
	if err != nil || again.Status != instance.Created || again.RestartCount != 1 || again.ExitCode != nil {
		t.Fatalf("again: %+v, %v", again, err)
	}
}

// A user's stop recorded while the owner waits its back-off calls the
// restart off; one recorded by the user before the owner decides is
// never undone.
func TestUserStopWins(t *testing.T) {
	st, err := instance.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	code := 0
	in := &instance.Instance{ID: instance.NewID(), Status: instance.Stopped, ExitCode: &code, Created: time.Now(),
		RestartPolicy: &instance.RestartPolicy{Name: instance.RestartUnlessStopped},
		MonitorPid:    os.Getpid(), MonStart: instance.ProcStart(os.Getpid())}
	in.Name = in.ID[:12]
	if err := st.Create(in); err != nil {
		t.Fatal(err)
	}
	if again, err := Ended(st, in.ID, false); err != nil || !again {
		t.Fatalf("ended: %v %v", again, err)
	}
	if !Waiting(st, in.ID) {
		t.Fatal("not waiting before the stop")
	}
	if err := Kill(st, in, 15); err != nil {
		t.Fatalf("stop of a restarting instance: %v", err)
	}
	if Waiting(st, in.ID) {
		t.Fatal("still waiting after the stop")
	}
	if _, err := Again(st, in.ID, true); !errors.Is(err, ErrStoppedByUser) {
		t.Fatalf("again after the stop: %v", err)
	}
	got, _ := st.Get(in.ID)
	if got.Restarting || !got.StoppedByUser || got.Status != instance.Stopped {
		t.Fatalf("record: %+v", got)
	}
	if again, _ := Ended(st, in.ID, true); again {
		t.Fatal("a health check's restart undid the user's stop")
	}
}
