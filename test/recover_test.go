package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A foreground berth killed with SIGKILL leaves an instance without an
// owner; the next berth command notices, kills what is left of it and
// records it as stopped, and rm removes every trace.
func TestKilledOwnerIsReconciled(t *testing.T) {
	img := busybox(t)
	cmd := exec.Command(berthBin, "--root", berthRoot, "run", "--name", "orphaned", img, "sleep", "100")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer berth(t, "rm", "-f", "orphaned")
	var initPid float64
	waitFor(t, "the instance to run", func() bool {
		r := berth(t, "inspect", "orphaned")
		if r.code != 0 || !strings.Contains(r.stdout, `"running"`) {
			return false
		}
		initPid, _ = inspect(t, "orphaned")["pid"].(float64)
		return initPid > 0
	})
	id, _ := inspect(t, "orphaned")["id"].(string)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	in := inspect(t, "orphaned")
	if in["status"] != "stopped" || in["error"] == nil {
		t.Fatalf("after its owner died: status %v error %v", in["status"], in["error"])
	}
	waitFor(t, "the instance's init to end", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", int(initPid)))
		return err != nil || strings.Contains(string(b), ") Z ")
	})
	if dirs, _ := filepath.Glob("/sys/fs/cgroup/*/berth/" + id); len(dirs) > 0 {
		t.Fatalf("cgroups left: %v", dirs)
	}
	must(t, "rm", "orphaned")
	if _, err := os.Stat(filepath.Join(berthRoot, "instances", id)); err == nil {
		t.Fatal("rm left the instance's directory")
	}
}

// monitorOf returns the pid of the monitor process of instance id.
func monitorOf(t *testing.T, id string) int {
	t.Helper()
	pid, _ := inspect(t, id)["monitor_pid"].(float64)
	if pid <= 0 {
		t.Fatalf("instance %s has no monitor pid", id[:12])
	}
	return int(pid)
}

// A detached instance whose monitor is killed is reconciled by the next
// berth command: its log stays readable, its record says what happened,
// its processes and cgroups are gone; a --rm one is removed and never
// shown again.
func TestKilledMonitorIsReconciled(t *testing.T) {
	img := busybox(t)
	id := detach(t, img, "sh", "-c", "echo started; sleep 100")
	waitFor(t, "the first output", func() bool { return strings.Contains(berth(t, "logs", id).stdout, "started") })
	initPid, _ := inspect(t, id)["pid"].(float64)
	if err := syscall.Kill(monitorOf(t, id), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the record to say stopped", func() bool { return status(t, id) == "stopped" })
	if in := inspect(t, id); in["exit_code"] != 137.0 || in["error"] == nil {
		t.Errorf("after its monitor died: exit %v error %v", in["exit_code"], in["error"])
	}
	if out := must(t, "logs", id); !strings.Contains(out, "started") {
		t.Errorf("logs after the monitor died: %q", out)
	}
	waitFor(t, "the instance's init to end", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", int(initPid)))
		return err != nil || strings.Contains(string(b), ") Z ")
	})
	if dirs, _ := filepath.Glob("/sys/fs/cgroup/*/berth/" + id); len(dirs) > 0 {
		t.Fatalf("cgroups left: %v", dirs)
	}

	rmID := strings.TrimSpace(must(t, "run", "-d", "--rm", img, "sleep", "100"))
	mon := monitorOf(t, rmID)
	if err := syscall.Kill(mon, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// No berth command may run before ps: it is the one that finds out.
	waitFor(t, "the monitor to be gone", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", mon))
		return err != nil || strings.Contains(string(b), ") Z ")
	})
	if out := must(t, "ps", "-a", "-q"); strings.Contains(out, rmID[:12]) {
		t.Errorf("ps -a lists a --rm instance whose monitor died:\n%s", out)
	}
	if r := berth(t, "inspect", rmID); r.code == 0 {
		t.Errorf("a --rm instance whose monitor died was not removed")
	}
}

// SIGTERM sent to a foreground `berth run` while its instance is being
// created and started ends it with 143, as it would a moment later: it
// cancels the start, or reaches the workload if that already runs. The
// CLI neither dies of it nor leaves the workload running without an
// owner (see also hostile_run_test.go). With --init: sleep as PID 1
// would ignore the SIGTERM (TestStopPID1), which berth's init relays.
func TestSignalDuringStartReachesWorkload(t *testing.T) {
	img := busybox(t)
	for i := 0; i < 5; i++ {
		out, err := os.CreateTemp(t.TempDir(), "out")
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(berthBin, "--root", berthRoot, "run", "--rm", "--init", "--name", "early-signal", img, "sleep", "100")
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The name is claimed once the record exists, before the start.
		nameFile := filepath.Join(berthRoot, "instances", ".names", "early-signal")
		var id []byte
		for deadline := time.Now().Add(30 * time.Second); len(id) == 0; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatal("the instance was never created")
			}
			id, _ = os.ReadFile(nameFile)
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		err = cmd.Wait()
		ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if ws.Signaled() || cmd.ProcessState.ExitCode() != 143 {
			b, _ := os.ReadFile(out.Name())
			berth(t, "rm", "-f", "early-signal")
			t.Fatalf("round %d: berth run got SIGTERM during the start: %v (%s); want exit 143 from the workload", i, err, b)
		}
		if dirs, _ := filepath.Glob("/sys/fs/cgroup/*/berth/" + string(id)); len(dirs) > 0 {
			t.Fatalf("round %d: cgroups left: %v", i, dirs)
		}
		if _, err := os.Stat(filepath.Join(berthRoot, "instances", string(id))); err == nil {
			t.Fatalf("round %d: the --rm instance was not removed", i)
		}
	}
}
