package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testutil"
)

// Hostile workloads and careless users against the container engine
// (issue 10): what they did to the host or to berth's init, and what
// berth does now.

// snapshot is a directory's tree: each entry's mode and, for a regular
// file, its bytes, keyed by path.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		v := fi.Mode().String()
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += " " + string(b)
		}
		out[p] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for p, v := range after {
		if before[p] != v {
			t.Errorf("%s: %s is %q, was %q", what, p, v, before[p])
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			t.Errorf("%s: %s is gone", what, p)
		}
	}
}

// hostDev makes a host directory with files named like /dev's nodes.
func hostDev(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range map[string]string{"null": "keep\n", "zero": "host zero\n", "tty": "", "sub/random": "r"} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// A host directory bound on /dev, or under it, is the host's: berth's
// device setup writes nothing there, and the workload sees the host's
// files. A file bound on a device node stands for it.
func TestHostileDevVolumeLeavesHostAlone(t *testing.T) {
	img := busybox(t)
	dir := hostDev(t)
	before := snapshot(t, dir)
	// head: were /dev/zero berth's device node, cat would never end.
	r := berth(t, "run", "--rm", "-v", dir+":/dev", img, "sh", "-c", "cat /dev/null; head -c 100 /dev/zero")
	if r.code != 0 || r.stdout != "keep\nhost zero\n" {
		t.Errorf("-v DIR:/dev: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	sameTree(t, "-v DIR:/dev", before, snapshot(t, dir))

	for _, dest := range []string{"/dev/shm", "/dev/pts", "/dev/mqueue", "/dev/snd"} {
		dir := hostDev(t)
		before := snapshot(t, dir)
		r := berth(t, "run", "--rm", "-v", dir+":"+dest, img, "true")
		if r.code != 0 {
			t.Errorf("-v DIR:%s: exit %d, stderr %q", dest, r.code, r.stderr)
		}
		sameTree(t, "-v DIR:"+dest, before, snapshot(t, dir))
	}

	dir = hostDev(t)
	before = snapshot(t, dir)
	r = berth(t, "run", "--rm", "-v", filepath.Join(dir, "zero")+":/dev/zero", img, "head", "-c", "100", "/dev/zero")
	if r.code != 0 || r.stdout != "host zero\n" {
		t.Errorf("-v FILE:/dev/zero: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	sameTree(t, "-v FILE:/dev/zero", before, snapshot(t, dir))
}

// pid1Signals are the signals that ended berth's init, or came back from
// it to the workload, when the workload sent them to PID 1.
var pid1Signals = []string{"SEGV", "BUS", "FPE", "ILL", "ABRT", "TRAP", "SYS", "ALRM", "XCPU", "QUIT", "TERM", "HUP", "USR1", "34"}

// noTraceback fails the test when out holds a Go runtime's crash report.
func noTraceback(t *testing.T, what, out string) {
	t.Helper()
	for _, w := range []string{"goroutine ", "SIGSEGV", "fatal error", "runtime.", "rip "} {
		if strings.Contains(out, w) {
			t.Errorf("%s: a Go traceback reached the workload's streams (%q):\n%s", what, w, out)
			return
		}
	}
}

// The workload cannot kill berth's init (--init), nor have a signal it
// sends PID 1 come back to it: PID 1 is immune to every signal of the
// container, as the kernel makes a handler-less PID 1. The host's
// signals (berth kill, stop) are still relayed to the workload.
func TestHostileSignalsToPID1(t *testing.T) {
	img := busybox(t)
	// One signal at a time, each followed by a while in which PID 1 would
	// die of it (and the workload with it): the output names the last
	// one survived.
	script := ""
	for _, sig := range pid1Signals {
		script += "kill -" + sig + " 1 && sleep 0.2 && echo " + sig + "; "
	}
	r := berth(t, "run", "--rm", "--init", img, "sh", "-c", script)
	if want := strings.Join(pid1Signals, "\n") + "\n"; r.code != 0 || r.stdout != want {
		t.Errorf("kill -SIG 1 from the workload: exit %d, stdout %q, stderr %q; want every signal survived", r.code, r.stdout, r.stderr)
	}
	noTraceback(t, "kill -SIG 1", r.stdout+r.stderr)

	// Detached, nothing reaches the log either; and the host's signals
	// still reach the workload.
	id := strings.TrimSpace(must(t, "run", "-d", "--init", img, "sh", "-c",
		`trap 'echo got-usr1' USR1; trap 'echo got-term; exit 7' TERM; kill -SEGV 1; kill -ABRT 1; echo up; while :; do sleep 0.1; done`))
	defer berth(t, "rm", "-f", id)
	waitFor(t, "the workload to start", func() bool { return strings.Contains(must(t, "logs", id), "up") })
	must(t, "kill", "-s", "USR1", id)
	waitFor(t, "the relayed SIGUSR1", func() bool { return strings.Contains(must(t, "logs", id), "got-usr1") })
	must(t, "stop", id)
	logs := must(t, "logs", id)
	if !strings.Contains(logs, "got-term") {
		t.Errorf("berth stop: the workload got no SIGTERM: %q", logs)
	}
	noTraceback(t, "detached", logs)
	if code := inspect(t, id)["exit_code"]; code != float64(7) {
		t.Errorf("berth stop: exit code %v, want the workload's 7", code)
	}
}

// sigpid1Image imports, once per test, an image whose /bin/sigpid1 is the
// hostile program in testdata/sigpid1, and returns its name.
func sigpid1Image(t *testing.T) string { return programImage(t, "sigpid1") }

// programImage imports, once per test, an image named name whose
// /bin/name is the program in testdata/name (with busybox beside it), and
// returns its name.
func programImage(t *testing.T, name string) string {
	t.Helper()
	busybox(t)
	rootfs := testutil.BusyboxRootfs(t)
	build := exec.Command("go", "build", "-o", filepath.Join(rootfs, "bin", name), "./testdata/"+name)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the hostile workload %s: %v\n%s", name, err, out)
	}
	must(t, "image", "import", "--name", name, ociLayout(t, rootfs, "latest"))
	t.Cleanup(func() { berth(t, "image", "rm", name) })
	return name
}

// Neither sigqueue, whose siginfo the sender writes (a SIGSEGV "from
// outside the container", which the Go runtime takes for a fault), nor a
// signal to one of PID 1's threads gets through, to berth's init
// (--init).
func TestHostileSigqueueToPID1(t *testing.T) {
	img := sigpid1Image(t)
	r := berth(t, "run", "--rm", "--init", img, "/bin/sigpid1")
	if r.code != 0 || r.stdout != "alive\n" {
		t.Errorf("sigqueue, kill and tgkill to PID 1: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	noTraceback(t, "sigpid1", r.stdout+r.stderr)
}

// The same in a VM, where berth's init runs through the guest's
// container engine. (The guest's agent, its PID 1, which a sigqueue'd
// SIGSEGV once crashed, panicking the guest kernel, is out of the
// workload's pid namespace now.)
func TestHostileSigqueueToVMAgent(t *testing.T) {
	needVM(t)
	img := sigpid1Image(t)
	r := berth(t, "run", "--rm", "--vm", "--init", img, "/bin/sigpid1")
	if r.code != 0 || r.stdout != "alive\n" {
		t.Errorf("sigqueue, kill and tgkill to the guest's PID 1: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// --pids-limit N is the workload's N processes, as with runc: a limit of
// 1 runs a one-process workload and no second process, and inspect
// reports the user's limit.
func TestHostilePidsLimitOne(t *testing.T) {
	img := busybox(t)
	if r := berth(t, "run", "--rm", "--pids-limit", "1", img, "true"); r.code != 0 {
		t.Errorf("--pids-limit 1 true: exit %d, stderr %q", r.code, r.stderr)
	}
	r := berth(t, "run", "--rm", "--pids-limit", "1", img, "sh", "-c", "true & wait; echo forked")
	if r.code == 0 || strings.Contains(r.stdout, "forked") || !strings.Contains(r.stderr, "fork") {
		t.Errorf("a second process under --pids-limit 1: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	id := strings.TrimSpace(must(t, "run", "-d", "--pids-limit", "2", img, "sh", "-c", "true & wait; echo forked; sleep 1000"))
	defer berth(t, "rm", "-f", id)
	waitFor(t, "the second process", func() bool { return strings.Contains(must(t, "logs", id), "forked") })
	if limits, _ := inspect(t, id)["limits"].(map[string]any); limits["pids"] != float64(2) {
		t.Errorf("inspect's limits: %v, want pids 2", limits)
	}
}

// exec into an instance at its pids limit fails as berth (125) in one
// line naming the limit, with no Go traceback; below the limit it runs.
func TestHostileExecAtPidsLimit(t *testing.T) {
	img := busybox(t)
	id := strings.TrimSpace(must(t, "run", "-d", "--pids-limit", "3", img, "sh", "-c", "sleep 1000 & sleep 1000 & echo up; wait"))
	defer berth(t, "rm", "-f", id)
	waitFor(t, "the workload's three processes", func() bool { return strings.Contains(must(t, "logs", id), "up") })
	for i := 0; i < 3; i++ {
		r := berth(t, "exec", id, "true")
		refused(t, "exec at the pids limit", r, "exec", "pids limit 3 reached")
		noTraceback(t, "exec at the pids limit", r.stderr)
	}
	id2 := strings.TrimSpace(must(t, "run", "-d", "--pids-limit", "3", img, "sh", "-c", "sleep 1000 & echo up; wait"))
	defer berth(t, "rm", "-f", id2)
	waitFor(t, "the workload's two processes", func() bool { return strings.Contains(must(t, "logs", id2), "up") })
	if r := berth(t, "exec", id2, "echo", "in"); r.code != 0 || r.stdout != "in\n" {
		t.Errorf("exec below the pids limit: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// A working directory that is a file is the working directory's error
// (125), in run as in exec, not the command's (127).
func TestHostileWorkdirIsAFile(t *testing.T) {
	img := busybox(t)
	r := berth(t, "run", "--rm", "-w", "/bin/sh", img, "pwd")
	refused(t, "run -w FILE", r, "run", "working directory", "/bin/sh", "not a directory")
	id := strings.TrimSpace(must(t, "run", "-d", img, "sleep", "1000"))
	defer berth(t, "rm", "-f", id)
	r = berth(t, "exec", "-w", "/bin/sh", id, "pwd")
	refused(t, "exec -w FILE", r, "exec", "working directory", "/bin/sh", "not a directory")
}
