package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func hostKernel(t *testing.T) string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	return unix.ByteSliceToString(u.Release[:])
}

// The guest has its own kernel and sees none of the host's processes or
// mounts.
func TestVMIsolation(t *testing.T) {
	img := busybox(t)
	needVM(t)
	t.Parallel()
	marker := exec.Command("sleep", "4242.4242")
	if err := marker.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { marker.Process.Kill(); marker.Wait() }()
	r := berth(t, "run", "--rm", "--vm", img, "sh", "-c",
		"uname -r; cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -c '424[2].4242'; awk '{print $2}' /proc/mounts")
	if r.code != 0 && r.code != 1 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	lines := strings.SplitN(r.stdout, "\n", 3)
	if len(lines) < 3 || lines[0] == hostKernel(t) || lines[0] == "" {
		t.Fatalf("guest kernel %q, host kernel %q", lines[0], hostKernel(t))
	}
	if lines[1] != "0" {
		t.Errorf("the guest sees the host's process (grep -c says %q)", lines[1])
	}
	for _, mp := range strings.Fields(lines[2]) {
		if strings.HasPrefix(mp, berthRoot) || strings.HasPrefix(mp, "/work") || strings.HasPrefix(mp, "/tmp/") {
			t.Errorf("host mount point %s visible in the guest", mp)
		}
	}
}

func TestVMDetachedLifecycle(t *testing.T) {
	img := busybox(t)
	needVM(t)
	t.Parallel()
	id := detach(t, "--vm", "--memory", "64m", img, "sh", "-c", "echo up; trap 'echo term; exit 9' TERM; while :; do sleep 0.2; done")
	in := inspect(t, id)
	if in["isolation"] != "vm" || (in["accel"] != "tcg" && in["accel"] != "kvm") {
		t.Fatalf("inspect: isolation %v accel %v", in["isolation"], in["accel"])
	}
	if in["transport"] != "virtio-serial" && in["transport"] != "vsock" {
		t.Fatalf("inspect: transport %v", in["transport"])
	}
	if ps := must(t, "ps"); !strings.Contains(ps, id[:12]) || !strings.Contains(ps, "vm") {
		t.Fatalf("ps:\n%s", ps)
	}
	if out := must(t, "exec", id, "uname", "-r"); strings.TrimSpace(out) == hostKernel(t) {
		t.Fatalf("exec ran on the host kernel: %q", out)
	}
	if r := berth(t, "exec", id, "sh", "-c", "exit 6"); r.code != 6 {
		t.Fatalf("exec exit %d, want 6", r.code)
	}
	if r := berth(t, "exec", id, "nosuch"); r.code != 127 {
		t.Fatalf("exec of a missing command: exit %d", r.code)
	}
	if r := berthIn(t, []byte("via stdin"), "exec", "-i", id, "cat"); r.stdout != "via stdin" {
		t.Fatalf("exec -i: %q", r.stdout)
	}
	// The workload sees its own cgroup at /sys/fs/cgroup, as a container does.
	if out := must(t, "exec", id, "cat", "/sys/fs/cgroup/memory.max"); strings.TrimSpace(out) != "67108864" {
		t.Fatalf("memory limit inside the guest: %q", out)
	}
	waitFor(t, "output in the log", func() bool { return strings.Contains(berth(t, "logs", id).stdout, "up") })
	must(t, "stop", "-t", "20", id)
	in = inspect(t, id)
	if in["status"] != "stopped" || in["exit_code"] != float64(9) {
		t.Fatalf("after stop: %v %v", in["status"], in["exit_code"])
	}
	if out := must(t, "logs", id); out != "up\nterm\n" {
		t.Fatalf("logs: %q", out)
	}
	pid := int(in["pid"].(float64))
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("QEMU (pid %d) still runs after stop", pid)
	}
	must(t, "rm", id)
}

func TestVMOOM(t *testing.T) {
	img := busybox(t)
	needVM(t)
	t.Parallel()
	r := berth(t, "run", "--name", "vmoom", "--vm", "--memory", "32m", img, "sh", "-c", "head -c 200m /dev/zero | tail > /dev/null")
	defer berth(t, "rm", "-f", "vmoom")
	if r.code != 137 {
		t.Fatalf("exit %d, want 137; stderr %q", r.code, r.stderr)
	}
	if in := inspect(t, "vmoom"); in["oom_killed"] != true {
		t.Fatalf("inspect does not report the OOM kill inside the guest: %v", in)
	}
}

// Faults end with one clear line and leave no QEMU, socket or disk.
func TestVMFaults(t *testing.T) {
	img := busybox(t)
	needVM(t)
	t.Parallel()
	r := berth(t, "run", "--rm", "--vm", "--kernel", "/no/such/kernel", img, "true")
	if r.code != 125 || !strings.Contains(r.stderr, "/no/such/kernel") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("missing kernel: exit %d stderr %q", r.code, r.stderr)
	}
	notKernel := filepath.Join(t.TempDir(), "vmlinuz")
	os.WriteFile(notKernel, []byte("not a kernel"), 0o644)
	r = berth(t, "run", "--rm", "--vm", "--kernel", notKernel, img, "true")
	if r.code != 125 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("bad kernel: exit %d stderr %q", r.code, r.stderr)
	}

	// QEMU killed from outside: the owner records the end and cleans up.
	id := detach(t, "--vm", img, "sleep", "1000")
	qemu := int(inspect(t, id)["pid"].(float64))
	syscall.Kill(qemu, syscall.SIGKILL)
	waitFor(t, "the instance to stop", func() bool { return status(t, id) == "stopped" })
	if in := inspect(t, id); in["error"] == nil {
		t.Fatalf("a killed QEMU left no error in the record: %v", in)
	}
	leftovers, _ := filepath.Glob(filepath.Join(berthRoot, "instances", id, "*.sock"))
	disks, _ := filepath.Glob(filepath.Join(berthRoot, "instances", id, "*.img"))
	if len(leftovers)+len(disks) > 0 {
		t.Fatalf("left behind: %v %v", leftovers, disks)
	}
	if out, _ := exec.Command("pgrep", "-f", "berth-"+id).Output(); len(out) > 0 {
		t.Fatalf("processes left: %s", out)
	}
}
