package test

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// hostState is what an instance could leak on the host.
type hostState struct {
	mounts    int
	cgroups   []string
	instances int
}

func snapshotHost(t *testing.T) hostState {
	t.Helper()
	var s hostState
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	s.mounts = strings.Count(string(b), "\n")
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/berth/*")
	more, _ := filepath.Glob("/sys/fs/cgroup/berth/*")
	s.cgroups = append(dirs, more...)
	ents, _ := os.ReadDir(filepath.Join(berthRoot, "instances"))
	for _, e := range ents {
		switch {
		case e.Name() == ".new" || e.Name() == ".trash":
			// Half-made and half-removed instances: anything here is left over.
			inner, _ := os.ReadDir(filepath.Join(berthRoot, "instances", e.Name()))
			s.instances += len(inner)
		case strings.HasPrefix(e.Name(), "."):
			// bookkeeping (.names)
		case e.IsDir():
			s.instances++
		}
	}
	return s
}

// orphanZombie says whether process pid has exited and waits for the
// system's init (PID 1) to reap it. A detached instance's monitor ends
// so, its parent (the berth that started it) long gone; some inits (this
// sandbox's) reap such orphans seconds later. It is no process berth left
// running, nor one it could reap.
func orphanZombie(pid string) bool {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 1 && f[0] == "Z" && f[1] == "1"
}

// A failed start says why in one line and leaves nothing behind.
func TestFailedStartLeavesNothing(t *testing.T) {
	img := busybox(t)
	before := snapshotHost(t)
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"run", "--rm", img, "/no/such"}, 127, "/no/such"},
		{[]string{"run", img, "/no/such"}, 127, "/no/such"},
		{[]string{"run", "-d", img, "/no/such"}, 127, "/no/such"},
		{[]string{"run", "-u", "ghost", img, "true"}, 125, "ghost"},
		{[]string{"run", "-v", "/no/such/dir:/x", img, "true"}, 125, "/no/such/dir"},
		{[]string{"run", "no-such-image", "true"}, 125, "no-such-image"},
		{[]string{"run", "--memory", "lots", img, "true"}, 125, "lots"},
	} {
		r := berth(t, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and one line naming %q", tc.args, r.code, r.stderr, tc.code, tc.msg)
		}
	}
	// Foreground failures that got as far as an instance keep no record
	// unless they ran; check nothing else is left.
	after := snapshotHost(t)
	if after.mounts != before.mounts || len(after.cgroups) != len(before.cgroups) {
		t.Errorf("left behind: mounts %d -> %d, cgroups %v -> %v", before.mounts, after.mounts, before.cgroups, after.cgroups)
	}
}

// 200 run/rm cycles leave no mount, cgroup, record, or process of berth's
// (one in its cgroups, running its binaries, or holding its files) that
// was not there before.
func TestRunRmLeaks(t *testing.T) {
	img := busybox(t)
	if testing.Short() {
		t.Skip("200 cycles: skipped in -short mode")
	}
	before := snapshotHost(t)
	procsBefore := berthProcs(t)
	for i := 0; i < 200; i++ {
		if i%2 == 0 {
			if r := berth(t, "run", "--rm", img, "true"); r.code != 0 {
				t.Fatalf("cycle %d: exit %d: %s", i, r.code, r.stderr)
			}
			continue
		}
		id := strings.TrimSpace(must(t, "run", "-d", img, "sleep", "30"))
		must(t, "rm", "-f", id)
	}
	after := snapshotHost(t)
	if after.mounts != before.mounts {
		t.Errorf("mounts: %d before, %d after", before.mounts, after.mounts)
	}
	if len(after.cgroups) > len(before.cgroups) {
		t.Errorf("cgroups left: %v", after.cgroups)
	}
	if after.instances > before.instances {
		t.Errorf("instance records: %d before, %d after", before.instances, after.instances)
	}
	if left := berthProcs(t); len(left) > 0 {
		var extra []string
		for pid, desc := range left {
			if _, ok := procsBefore[pid]; !ok {
				extra = append(extra, pid+" "+desc)
			}
		}
		if len(extra) > 0 {
			t.Errorf("processes of berth's left after the cycles: %v", extra)
		}
	}
}

// berthProcs lists the live processes that are berth's, by what they
// hold: a cgroup of berth's, a berth binary under test, the shared data
// root on the command line, or an open file under it. The values say why.
func berthProcs(t *testing.T) map[string]string {
	t.Helper()
	binDir := filepath.Dir(berthBin)
	out := map[string]string{}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid := p.Name()
		if _, err := strconv.Atoi(pid); err != nil || orphanZombie(pid) || pid == strconv.Itoa(os.Getpid()) {
			continue
		}
		dir := filepath.Join("/proc", pid)
		if cg, _ := os.ReadFile(filepath.Join(dir, "cgroup")); bytes.Contains(cg, []byte("/berth/")) {
			out[pid] = "in a cgroup of berth's"
			continue
		}
		if exe, _ := os.Readlink(filepath.Join(dir, "exe")); strings.HasPrefix(exe, binDir+"/") {
			out[pid] = "runs " + exe
			continue
		}
		if cmd, _ := os.ReadFile(filepath.Join(dir, "cmdline")); bytes.Contains(cmd, []byte(berthRoot)) {
			out[pid] = "names the data root: " + strings.ReplaceAll(string(cmd), "\x00", " ")
			continue
		}
		fds, _ := os.ReadDir(filepath.Join(dir, "fd"))
		for _, fd := range fds {
			if l, _ := os.Readlink(filepath.Join(dir, "fd", fd.Name())); strings.HasPrefix(l, berthRoot+"/") {
				out[pid] = "holds " + l
				break
			}
		}
	}
	return out
}
