package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// berthEnv runs berth as berth() does, with env added to its environment.
func berthEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	return berthEnvIn(t, env, nil, args...)
}

func hasVhostVsock() bool {
	f, err := os.OpenFile("/dev/vhost-vsock", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// A guest whose agent talks vsock runs, execs and stops as one on
// virtio-serial does, and inspect says which it uses.
func TestVMVsock(t *testing.T) {
	img := busybox(t)
	needVM(t)
	if !hasVhostVsock() {
		t.Skip("needs /dev/vhost-vsock (vhost_vsock loaded on a KVM host)")
	}
	t.Parallel()
	vsock := []string{"BERTH_VM_TRANSPORT=vsock"}
	r := berthEnv(t, vsock, "run", "--rm", "--vm", img, "sh", "-c", "echo over vsock; exit 3")
	if r.code != 3 || r.stdout != "over vsock\n" {
		t.Fatalf("run: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	r = berthEnv(t, vsock, "run", "-d", "--vm", img, "sleep", "1000")
	if r.code != 0 {
		t.Fatalf("run -d: exit %d: %s", r.code, r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	defer berth(t, "rm", "-f", id)
	if in := inspect(t, id); in["transport"] != "vsock" {
		t.Fatalf("inspect: transport %v, want vsock", in["transport"])
	}
	if out := must(t, "exec", id, "echo", "exec over vsock"); out != "exec over vsock\n" {
		t.Fatalf("exec: %q", out)
	}
	must(t, "rm", "-f", id)
}

// BERTH_VM_TRANSPORT=vsock where the host has no vhost-vsock fails with
// one line and leaves no QEMU, socket or instance behind.
func TestVMVsockMissing(t *testing.T) {
	img := busybox(t)
	needVM(t)
	if hasVhostVsock() {
		t.Skip("this host has /dev/vhost-vsock")
	}
	// Not parallel: no other test starts instances or QEMU meanwhile.
	instances := func() []string {
		ents, _ := os.ReadDir(filepath.Join(berthRoot, "instances"))
		var names []string
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), ".") { // the store's own
				names = append(names, e.Name())
			}
		}
		return names
	}
	qemus := func() []string {
		out, _ := exec.Command("pgrep", "-f", "qemu-system-x86_64").Output()
		return strings.Fields(string(out))
	}
	before, qemuBefore := instances(), qemus()
	r := berthEnv(t, []string{"BERTH_VM_TRANSPORT=vsock"}, "run", "--rm", "--name", "vsockmissing", "--vm", img, "true")
	msg := strings.TrimSpace(r.stderr)
	if r.code != 125 || !strings.Contains(msg, "BERTH_VM_TRANSPORT=vsock") || !strings.Contains(msg, "/dev/vhost-vsock") || strings.Contains(msg, "\n") {
		t.Fatalf("exit %d, stderr %q: want 125 and one line naming BERTH_VM_TRANSPORT=vsock and /dev/vhost-vsock", r.code, r.stderr)
	}
	t.Logf("error: %s", msg)
	if after := instances(); !slices.Equal(before, after) {
		t.Errorf("instances before %v, after %v", before, after)
	}
	for _, p := range qemus() {
		if !slices.Contains(qemuBefore, p) {
			t.Errorf("QEMU left running: pid %s", p)
		}
	}
	if r := berth(t, "inspect", "vsockmissing"); r.code == 0 {
		t.Errorf("the failed instance is still recorded: %s", r.stdout)
	}
	socks, _ := filepath.Glob(filepath.Join(berthRoot, "instances", "*", "*.sock"))
	for _, s := range socks {
		if !slices.Contains(before, filepath.Base(filepath.Dir(s))) {
			t.Errorf("socket left: %s", s)
		}
	}
}
