package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
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
