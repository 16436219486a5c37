package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testutil"
)

// A foreground `berth run` whose start is stuck or slow (blocked on a lock
// another process holds, a guest booting under software emulation) ends
// on SIGTERM or SIGINT before its workload runs: the start is cancelled,
// everything it made is undone and berth exits 128+N, one line saying
// so. A second SIGINT ends it even when the start cannot be interrupted.
// An instance whose record was damaged is ended whole by rm -f, VM
// included, before its directory goes.

// rootWithBusybox is a data root of the test's own holding the busybox
// image, so that what is left under it is the test's doing alone.
func rootWithBusybox(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	layout := testutil.OCILayout(t, testutil.BusyboxRootfs(t), testutil.ImageOptions{Ref: "latest", Cmd: []string{"/bin/sh"}})
	if r := berthAt(t, root, "image", "import", "--name", "busybox", layout); r.code != 0 {
		t.Fatalf("import busybox: %s", r.stderr)
	}
	t.Cleanup(func() {
		out := berthAt(t, root, "ps", "-a", "-q").stdout
		for _, id := range strings.Fields(out) {
			berthAt(t, root, "rm", "-f", id)
		}
	})
	return root
}

// started is a berth process running in the background.
type started struct {
	cmd    *exec.Cmd
	stderr string // file
	done   chan struct{}
}

// startAt starts berth with data root root and env added to its
// environment; its stderr goes to a file, read by errors.
func startAt(t *testing.T, root string, env []string, args ...string) *started {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(berthBin, append([]string{"--root", root}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &started{cmd: cmd, stderr: f.Name(), done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		if !s.ended() {
			_ = cmd.Process.Kill()
			<-s.done
		}
	})
	return s
}

// ended says whether berth has exited.
func (s *started) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// signal sends sig, unless berth has exited.
func (s *started) signal(sig syscall.Signal) {
	if !s.ended() {
		_ = s.cmd.Process.Signal(sig)
	}
}

// errors is what berth wrote on stderr, trace lines left out.
func (s *started) errors() string {
	b, _ := os.ReadFile(s.stderr)
	var keep []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if !strings.HasPrefix(l, "berth trace:") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// end waits for berth to exit and checks that it exited 128+sig with one
// line naming sig and every one of wants. A berth that does not end
// within a minute fails the test.
func (s *started) end(t *testing.T, what string, sig syscall.Signal, wants ...string) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(time.Minute):
		_ = s.cmd.Process.Kill()
		<-s.done
		t.Fatalf("%s: berth run still running a minute after %v; stderr: %s", what, sig, s.errors())
	}
	ws := s.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() || ws.ExitStatus() != 128+int(sig) {
		t.Fatalf("%s: berth run ended with %v after %v; want exit %d; stderr: %s", what, s.cmd.ProcessState, sig, 128+int(sig), s.errors())
	}
	name := map[syscall.Signal]string{syscall.SIGINT: "SIGINT", syscall.SIGTERM: "SIGTERM"}[sig]
	oneErrorLine(t, what, s.errors(), append([]string{"berth run: ", name, "before the workload started"}, wants...)...)
}

// waitsOnLock says whether process pid waits for a file lock (its request
// is listed in /proc/locks, marked "->").
func waitsOnLock(pid int) bool {
	b, _ := os.ReadFile("/proc/locks")
	for _, l := range strings.Split(string(b), "\n") {
		// "1: -> FLOCK  ADVISORY  READ 424 fe:00:9978405 0 EOF"
		if f := strings.Fields(l); len(f) > 5 && f[1] == "->" && f[5] == strconv.Itoa(pid) {
			return true
		}
	}
	return false
}

// running says whether process pid exists and is not a zombie.
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

// processesNaming lists the live processes whose command line holds s.
func processesNaming(s string) []string {
	var found []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || !running(pid) {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), s) {
			found = append(found, e.Name()+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return found
}

// leftovers lists what berth left under root or of the instances ids:
// processes naming root, mounts under it, instance directories (and
// half-made or half-removed ones), instances ps -a lists, cgroups.
func leftovers(t *testing.T, root string, ids ...string) []string {
	left := processesNaming(root)
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		if strings.Contains(l, root) {
			left = append(left, "mount: "+l)
		}
	}
	inst := filepath.Join(root, "instances")
	ents, _ := os.ReadDir(inst)
	for _, e := range ents {
		switch e.Name() {
		case ".names":
			names, _ := os.ReadDir(filepath.Join(inst, e.Name()))
			for _, n := range names {
				left = append(left, "name claim: "+n.Name())
			}
		case ".new", ".trash":
			inner, _ := os.ReadDir(filepath.Join(inst, e.Name()))
			for _, d := range inner {
				left = append(left, "instance directory: "+e.Name()+"/"+d.Name())
			}
		default:
			left = append(left, "instance directory: "+e.Name())
		}
	}
	if out := strings.TrimSpace(berthAt(t, root, "ps", "-a", "-q").stdout); out != "" {
		left = append(left, "ps -a: "+out)
	}
	for _, id := range ids {
		for _, g := range []string{"/sys/fs/cgroup/*/berth/" + id, "/sys/fs/cgroup/berth/" + id} {
			dirs, _ := filepath.Glob(g)
			left = append(left, dirs...)
		}
	}
	return left
}

// checkNothingLeft waits for what berth left to go (a QEMU ends a moment
// after the berth that owned it) and fails the test if some stays.
func checkNothingLeft(t *testing.T, what, root string, ids ...string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		left := leftovers(t, root, ids...)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: left behind:\n%s", what, strings.Join(left, "\n"))
		}
	}
}

// holdLock takes an exclusive flock on path, as another berth process
// would, until the test ends or release is called.
func holdLock(t *testing.T, path string) (release func()) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return func() { f.Close() }
}

// A container run blocked on the image store's lock (held, as by an
// `image import` or `image rm` of another berth, here by the test) ends
// at once on SIGTERM, SIGINT, or SIGINT twice, detached too: no record,
// no process (a foreground run's prestarted init included), nothing
// under the root.
func TestSignalCancelsBlockedContainerStart(t *testing.T) {
	root := rootWithBusybox(t)
	release := holdLock(t, filepath.Join(root, "image", "lock"))
	for _, tc := range []struct {
		name string
		rm   bool
		sigs []syscall.Signal
	}{
		{"SIGTERM", true, []syscall.Signal{syscall.SIGTERM}},
		{"SIGINT", false, []syscall.Signal{syscall.SIGINT}},
		{"SIGINT twice", true, []syscall.Signal{syscall.SIGINT, syscall.SIGINT}},
		{"detached", false, []syscall.Signal{syscall.SIGTERM}},
	} {
		args := []string{"run", "--name", "blocked", "busybox", "true"}
		switch {
		case tc.rm:
			args = append([]string{"run", "--rm"}, args[1:]...)
		case tc.name == "detached":
			args = append([]string{"run", "-d"}, args[1:]...)
		}
		b := startAt(t, root, nil, args...)
		waitFor(t, "berth run to wait for the image store's lock", func() bool { return waitsOnLock(b.cmd.Process.Pid) })
		kids := childrenOf(b.cmd.Process.Pid)
		for _, sig := range tc.sigs {
			b.signal(sig)
		}
		b.end(t, tc.name, tc.sigs[0])
		for _, pid := range kids {
			if running(pid) {
				t.Errorf("%s: berth run's child %d outlived it", tc.name, pid)
			}
		}
		checkNothingLeft(t, tc.name, root)
	}
	release()
	// The root is sound: the name is free, the image runs.
	if r := berthAt(t, root, "run", "--rm", "--name", "blocked", "busybox", "true"); r.code != 0 {
		t.Fatalf("run after the cancelled starts: exit %d: %s", r.code, r.stderr)
	}
	checkNothingLeft(t, "after a run", root)
}

// A VM run, foreground or detached, ends on SIGTERM or SIGINT while its
// guest boots (under software emulation the guest its template is made
// from takes seconds), and on SIGINT twice or, after a grace period, on
// one SIGTERM while it waits for the lock of that template (held, as by
// another berth making it, here by the test): no record, no QEMU,
// nothing under the root.
func TestSignalCancelsVMStart(t *testing.T) {
	needVM(t)
	root := rootWithBusybox(t)
	run := func(name string, flags ...string) *started {
		// The workload ignores the signals (sleep inherits that): one
		// that reached it instead of cancelling the start would show as
		// exit 0.
		args := append([]string{"run", "--vm", "--name", name}, flags...)
		return startAt(t, root, nil, append(args, "busybox", "sh", "-c", "trap '' INT TERM; exec sleep 3")...)
	}
	// waiting says whether berth, or the monitor it started, waits for a
	// lock.
	waiting := func() bool {
		for _, p := range processesNaming(root) {
			pid, _, _ := strings.Cut(p, ":")
			if n, _ := strconv.Atoi(pid); waitsOnLock(n) {
				return true
			}
		}
		return false
	}
	qemuUp := func() bool {
		for _, p := range processesNaming(root) {
			if strings.Contains(p, "qemu-system") {
				return true
			}
		}
		return false
	}
	type step struct {
		name  string
		flags []string
		sig   syscall.Signal
		want  string
	}

	var lock string
	for _, tc := range []step{
		{"booting", []string{"--rm"}, syscall.SIGTERM, "start cancelled"},
		{"booting-kept", nil, syscall.SIGINT, "start cancelled"},
		{"booting-detached", []string{"-d"}, syscall.SIGTERM, "start cancelled"},
	} {
		b := run(tc.name, tc.flags...)
		waitFor(t, "the QEMU of "+tc.name, qemuUp)
		if locks, _ := filepath.Glob(filepath.Join(root, "vm", "templates", "*.lock")); len(locks) == 1 {
			lock = locks[0]
		}
		b.signal(tc.sig)
		b.end(t, tc.name, tc.sig, tc.want)
		checkNothingLeft(t, tc.name, root)
	}
	if lock == "" {
		t.Fatal("no template lock seen while the guest of a template booted")
	}

	holdLock(t, lock)
	for _, tc := range []step{
		// SIGINT cannot interrupt the wait for the lock; a second one
		// ends berth. (SIGINT is sent until berth ends: two sent at once
		// could come as one.)
		{"waiting", nil, syscall.SIGINT, "without waiting for the start to unwind"},
		// One SIGTERM does the same once berth has waited in vain for
		// the start to unwind.
		{"waiting-rm", []string{"--rm"}, syscall.SIGTERM, "did not unwind"},
		{"waiting-detached", []string{"-d"}, syscall.SIGTERM, "did not unwind"},
	} {
		b := run(tc.name, tc.flags...)
		waitFor(t, tc.name+" to wait for the template", waiting)
		id, _ := os.ReadFile(filepath.Join(root, "instances", ".names", tc.name))
		b.signal(tc.sig)
		for deadline := time.Now().Add(time.Minute); tc.sig == syscall.SIGINT && !b.ended() && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			b.signal(tc.sig)
		}
		b.end(t, tc.name, tc.sig, tc.want)
		checkNothingLeft(t, tc.name, root, string(id))
		if len(id) == 0 {
			t.Errorf("%s: no record while it waited", tc.name)
		}
	}
}

// corruptRecord overwrites the record of instance id with garbage and
// checks that every verb but rm -f refuses it in one line naming it.
func corruptRecord(t *testing.T, id string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(berthRoot, "instances", id, "state.json"), []byte("garbage\x00{"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, verb := range [][]string{{"stop"}, {"kill"}, {"inspect"}, {"logs"}, {"exec"}, {"rm"}} {
		args := append(verb, id)
		if verb[0] == "exec" {
			args = append(args, "true")
		}
		refused(t, verb[0]+" of a damaged record", berth(t, args...), verb[0], id[:12], "unreadable record", "rm -f")
	}
	for _, ps := range [][]string{{"ps"}, {"ps", "-a"}} {
		r := berth(t, ps...)
		var line string
		for _, l := range strings.Split(r.stdout, "\n") {
			if strings.HasPrefix(l, id[:12]) {
				line = l
			}
		}
		if r.code != 0 || !strings.Contains(line, "unreadable record") {
			t.Errorf("%v with a damaged record: exit %d, its line %q; want it listed as an unreadable record\n%s%s", ps, r.code, line, r.stdout, r.stderr)
		}
	}
}

// rmForceEndsAll removes the damaged instance id with rm -f and checks
// that none of pids runs, and nothing of the instance is left, by the time
// rm -f has returned.
func rmForceEndsAll(t *testing.T, id string, pids ...int) {
	t.Helper()
	if r := berth(t, "rm", "-f", id); r.code != 0 {
		t.Fatalf("rm -f of a damaged record: exit %d: %s", r.code, r.stderr)
	}
	for _, pid := range pids {
		if running(pid) {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			t.Errorf("process %d (%s) of the instance outlived rm -f", pid, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	dir := filepath.Join(berthRoot, "instances", id)
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("rm -f left %s", dir)
	}
	if p := processesNaming(id); len(p) > 0 {
		t.Errorf("processes naming the instance outlived rm -f: %v", p)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), dir) {
		t.Errorf("mounts under %s left", dir)
	}
	for _, g := range []string{"/sys/fs/cgroup/*/berth/" + id, "/sys/fs/cgroup/berth/" + id} {
		if dirs, _ := filepath.Glob(g); len(dirs) > 0 {
			t.Errorf("cgroups left: %v", dirs)
		}
	}
}

// pidOf is a pid field of an instance's record.
func pidOf(t *testing.T, id, field string) int {
	t.Helper()
	pid, _ := inspect(t, id)[field].(float64)
	if pid <= 0 {
		t.Fatalf("instance %s has no %s", id[:12], field)
	}
	return int(pid)
}

// rm -f of a container whose record is damaged ends its monitor, init and
// workload (detached), or its init and workload (in the foreground, whose
// berth then ends), before its directory goes.
func TestCorruptRecordRmForceEndsContainer(t *testing.T) {
	img := busybox(t)
	id := detach(t, img, "sh", "-c", "sleep 1000 & sleep 1000")
	mon, init := pidOf(t, id, "monitor_pid"), pidOf(t, id, "pid")
	workload := childrenOf(init)
	corruptRecord(t, id)
	rmForceEndsAll(t, id, append(workload, mon, init)...)

	fg := startAt(t, berthRoot, nil, "run", "--name", "damaged-fg", img, "sleep", "1000")
	waitFor(t, "the foreground instance to run", func() bool {
		r := berth(t, "inspect", "damaged-fg")
		return r.code == 0 && strings.Contains(r.stdout, `"running"`)
	})
	id, _ = inspect(t, "damaged-fg")["id"].(string)
	init = pidOf(t, id, "pid")
	workload = childrenOf(init)
	corruptRecord(t, id)
	rmForceEndsAll(t, id, append(workload, init)...)
	select {
	case <-fg.done:
	case <-time.After(time.Minute):
		t.Fatal("the foreground berth run of the removed instance did not end")
	}
}

// rm -f of a VM whose record is damaged ends its QEMU and its owner,
// detached (the monitor) or in the foreground, before its directory goes.
func TestCorruptRecordRmForceEndsVM(t *testing.T) {
	needVM(t)
	img := busybox(t)
	id := detach(t, "--vm", img, "sleep", "1000")
	mon, qemu := pidOf(t, id, "monitor_pid"), pidOf(t, id, "pid")
	corruptRecord(t, id)
	rmForceEndsAll(t, id, mon, qemu)

	fg := startAt(t, berthRoot, nil, "run", "--vm", "--name", "damaged-vm", img, "sleep", "1000")
	waitFor(t, "the foreground VM to run", func() bool {
		r := berth(t, "inspect", "damaged-vm")
		return r.code == 0 && strings.Contains(r.stdout, `"running"`)
	})
	id, _ = inspect(t, "damaged-vm")["id"].(string)
	qemu = pidOf(t, id, "pid")
	corruptRecord(t, id)
	rmForceEndsAll(t, id, qemu, fg.cmd.Process.Pid)
}
