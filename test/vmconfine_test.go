package test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A VM's QEMU is confined, for both front ends: an unprivileged uid with
// no capability, no_new_privs, its seccomp sandbox, a host cgroup with a
// memory and a pids limit, and a root that shows none of the host's
// files.

// checkConfined checks QEMU (pid) as above; its cgroup's path must end
// in cgroupEnd. It returns the cgroup's memory limit.
func checkConfined(t *testing.T, pid int, cgroupEnd string) int64 {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("QEMU (pid %d): %v", pid, err)
	}
	fields := map[string][]string{}
	for _, l := range strings.Split(string(status), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			fields[k] = strings.Fields(v)
		}
	}
	for _, k := range []string{"Uid", "Gid"} {
		for _, id := range fields[k] {
			if id == "0" {
				t.Errorf("QEMU's %s: %v, want no 0", k, fields[k])
			}
		}
	}
	for k, want := range map[string]string{"NoNewPrivs": "1", "Seccomp": "2", "CapEff": "0000000000000000", "CapPrm": "0000000000000000"} {
		if got := strings.Join(fields[k], " "); got != want {
			t.Errorf("QEMU's %s: %q, want %s", k, got, want)
		}
	}

	// Its root is an empty directory: no host file is in its view.
	root := fmt.Sprintf("/proc/%d/root", pid)
	if _, err := os.Stat(filepath.Join(root, "etc", "shadow")); !os.IsNotExist(err) {
		t.Errorf("QEMU sees the host's /etc/shadow: %v", err)
	}
	if ents, err := os.ReadDir(root); err != nil || len(ents) != 0 {
		t.Errorf("QEMU's root holds %d entries (%v), want none", len(ents), err)
	}
	if mi, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid)); err != nil || strings.Contains(string(mi), " / / ") {
		t.Errorf("QEMU's mountinfo shows the host's root (%v):\n%s", err, mi)
	}

	// Its cgroup, and that cgroup's limits.
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(cg)), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) == 3 {
			for _, c := range strings.Split(parts[1], ",") {
				paths[c] = parts[2]
			}
		}
	}
	limit := func(ctrl, file, v2file string) string {
		var p string
		if path, ok := paths[ctrl]; ok {
			p = filepath.Join("/sys/fs/cgroup", ctrl, path, file)
		} else if path, ok := paths[""]; ok {
			p = filepath.Join("/sys/fs/cgroup", path, v2file)
		} else {
			t.Fatalf("QEMU is in no %s cgroup:\n%s", ctrl, cg)
		}
		if !strings.HasSuffix(filepath.Dir(p), cgroupEnd) {
			t.Errorf("QEMU's %s cgroup is %s, want one ending in %s", ctrl, filepath.Dir(p), cgroupEnd)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("QEMU's %s cgroup: %v", ctrl, err)
		}
		return strings.TrimSpace(string(b))
	}
	mem, _ := strconv.ParseInt(limit("memory", "memory.limit_in_bytes", "memory.max"), 10, 64)
	if mem <= 0 || mem > 4<<30 {
		t.Errorf("QEMU's memory limit: %d, want one (guest RAM and QEMU's overhead)", mem)
	}
	if pids, err := strconv.Atoi(limit("pids", "pids.max", "pids.max")); err != nil || pids <= 0 {
		t.Errorf("QEMU's pids limit: %v, want one", err)
	}
	return mem
}

func TestVMConfinedQEMU(t *testing.T) {
	img := busybox(t)
	needVM(t)
	t.Parallel()
	name := "confined-vm"
	must(t, "run", "-d", "--vm", "--name", name, img, "sleep", "1000")
	t.Cleanup(func() { berth(t, "rm", "-f", name) })
	pid, _ := qemuOf(t, name)
	id, _ := inspect(t, name)["id"].(string)
	mem := checkConfined(t, pid, "/berth/"+id)
	// 256 MiB of guest RAM (the least) and QEMU's overhead.
	if mem < 256<<20+128<<20 {
		t.Errorf("QEMU's memory limit %d is below guest RAM and overhead", mem)
	}

	// Nothing is left of the cgroup once the VM is removed.
	must(t, "rm", "-f", name)
	waitFor(t, "QEMU to end", func() bool { _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); return err != nil })
	for _, ctrl := range []string{"memory", "pids", "cpu", ""} {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", ctrl, "berth", id)); !os.IsNotExist(err) {
			t.Errorf("QEMU's %s cgroup left behind: %v", ctrl, err)
		}
	}
}

func TestRuntimeVMConfinedQEMU(t *testing.T) {
	t.Parallel()
	needRuntimeVM(t)
	rt := berthRuntime(t)
	root := runtimeRoot(t)
	id := fmt.Sprintf("vmconf%d", os.Getpid())
	bundle := vmBundle(t, rt, nil, "sleep", "1000")
	createQuiet(t, rt, root, bundle, id)
	defer runCmd(t, nil, rt, "--root", root, "delete", "--force", id)
	mustCmd(t, rt, "--root", root, "start", id)
	var q struct{ Pid int }
	deadline := time.Now().Add(time.Minute)
	for {
		b, err := os.ReadFile(filepath.Join(root, id, "qemu.json"))
		if err == nil && json.Unmarshal(b, &q) == nil && q.Pid != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu.json: %q %v", b, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// QEMU is in the cgroup the bundle asked for, with its owner.
	checkConfined(t, q.Pid, "/"+id)
	mustCmd(t, rt, "--root", root, "kill", id, "KILL")
	waitGone(t, q.Pid)
	mustCmd(t, rt, "--root", root, "delete", id)
	checkNoVMLeftovers(t, id, filepath.Join(root, id))
}
