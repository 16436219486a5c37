package test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// berthAt runs berth with a data root of the test's own.
func berthAt(t *testing.T, root string, args ...string) result {
	t.Helper()
	cmd := exec.Command(berthBin, append([]string{"--root", root}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	_ = cmd.Run()
	return result{stdout: out.String(), stderr: errb.String(), code: cmd.ProcessState.ExitCode()}
}

// refused checks that berth failed as berth (exit 125) with one line on
// stderr, prefixed once by its verb, naming every one of wants.
func refused(t *testing.T, what string, r result, verb string, wants ...string) {
	t.Helper()
	s := strings.TrimSpace(r.stderr)
	if r.code != 125 || s == "" || strings.Contains(s, "\n") {
		t.Errorf("%s: exit %d, stderr %q; want 125 and one error line", what, r.code, r.stderr)
		return
	}
	prefix := "berth " + verb + ": "
	if !strings.HasPrefix(s, prefix) || strings.Contains(s[len(prefix):], verb+": ") {
		t.Errorf("%s: error %q is not prefixed once with %q", what, s, prefix)
	}
	for _, w := range wants {
		if !strings.Contains(s, w) {
			t.Errorf("%s: error %q does not name %q", what, s, w)
		}
	}
}

// Bad run options are refused before anything runs, with one line naming
// the option and value; no instance is left.
func TestBadRunOptionsRefused(t *testing.T) {
	img := busybox(t)
	long := strings.Repeat("h", 65)
	for _, tc := range []struct {
		args  []string
		wants []string
	}{
		{[]string{"-e", "=x"}, []string{`"=x"`}},
		{[]string{"-e", ""}, []string{"environment variable"}},
		{[]string{"--cpus", "0.001"}, []string{"--cpus", "0.001"}},
		{[]string{"--cpus", "NaN"}, []string{"--cpus", "NaN"}},
		{[]string{"--cpus", "1e300"}, []string{"--cpus"}},
		{[]string{"--memory", "nan"}, []string{"--memory", "nan"}},
		{[]string{"--memory", "0.5"}, []string{"--memory", "0.5"}},
		{[]string{"--memory", "1k"}, []string{"--memory", "6m"}},
		{[]string{"--memory", "12q"}, []string{"--memory", "12q"}},
		{[]string{"--hostname", long}, []string{long}},
		{[]string{"-w", "relative"}, []string{`"relative"`}},
		{[]string{"-v", "relative:/x"}, []string{"relative:/x"}},
		{[]string{"-v", "/etc:relative"}, []string{"/etc:relative"}},
		{[]string{"-v", "/tmp:/"}, []string{"/tmp:/"}},
		{[]string{"-v", "/tmp:/proc"}, []string{"/tmp:/proc"}},
		{[]string{"-u", "nosuchuser"}, []string{"nosuchuser"}},
		{[]string{"--bogus"}, []string{"bogus"}},
		{[]string{"--pids-limit", "-2"}, []string{"--pids-limit", "-2"}},
		{[]string{"--cpus", "-1"}, []string{"--cpus", "-1"}},
		{[]string{"--kernel", "/x"}, []string{"--kernel", "--vm"}},
	} {
		args := append([]string{"run", "--name", "badinput"}, tc.args...)
		args = append(args, img, "env")
		r := berth(t, args...)
		refused(t, strings.Join(tc.args, " "), r, "run", tc.wants...)
		if strings.Contains(r.stdout, "=x") {
			t.Errorf("%v: the workload ran: %q", tc.args, r.stdout)
		}
		if r := berth(t, "inspect", "badinput"); r.code == 0 {
			t.Errorf("%v: a refused run left an instance", tc.args)
			berth(t, "rm", "-f", "badinput")
		}
	}
}

// --pids-limit -1 means no limit, as in Docker.
func TestPidsLimitMinusOneIsUnlimited(t *testing.T) {
	img := busybox(t)
	r := berth(t, "run", "--rm", "--pids-limit", "-1", img, "cat", "/sys/fs/cgroup/pids/pids.max")
	if r.code != 0 || r.stdout != "max\n" {
		t.Fatalf("--pids-limit -1: exit %d, %q, %s", r.code, r.stdout, r.stderr)
	}
}

// exec refuses what run refuses: a nameless variable, a relative cwd.
func TestBadExecOptionsRefused(t *testing.T) {
	img := busybox(t)
	id := detach(t, img, "sleep", "100")
	r := berth(t, "exec", "-e", "=x", id, "env")
	refused(t, "exec -e =x", r, "exec", `"=x"`)
	if strings.Contains(r.stdout, "=x") {
		t.Errorf("exec -e =x ran with it: %q", r.stdout)
	}
	refused(t, "exec -w relative", berth(t, "exec", "-w", "relative", id, "pwd"), "exec", `"relative"`, "not absolute")
}

// stop -t with a negative grace period other than -1 (Docker's "no
// limit") is refused and does not kill the instance.
func TestStopNegativeGraceRefused(t *testing.T) {
	img := busybox(t)
	id := detach(t, img, "sleep", "100")
	refused(t, "stop -t -5", berth(t, "stop", "-t", "-5", id), "stop", "-5")
	if s := status(t, id); s != "running" {
		t.Fatalf("after a refused stop -t -5 the instance is %s", s)
	}
}

// Verbs that take several instances act on every one they find, as
// Docker's do, and fail naming the ones they did not find.
func TestSeveralInstancesOneMissing(t *testing.T) {
	img := busybox(t)
	a := detach(t, img, "sleep", "100")
	b := detach(t, img, "sleep", "100")

	r := berth(t, "inspect", a, "nosuch-instance")
	refused(t, "inspect a nosuch", r, "inspect", "nosuch-instance")
	var out []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || len(out) != 1 || out[0]["id"] != a {
		t.Errorf("inspect a nosuch printed %q (%v); want a's record", r.stdout, err)
	}

	r = berth(t, "kill", "nosuch-instance", a, b)
	refused(t, "kill nosuch a b", r, "kill", "nosuch-instance")
	for _, id := range []string{a, b} {
		waitFor(t, "the killed instance to stop", func() bool { return status(t, id) == "stopped" })
	}

	r = berth(t, "rm", a, "nosuch-instance", b)
	refused(t, "rm a nosuch b", r, "rm", "nosuch-instance")
	for _, id := range []string{a, b} {
		if berth(t, "inspect", id).code == 0 {
			t.Errorf("rm a nosuch b did not remove %s", id[:12])
		}
	}
}

func TestBadGlobalAndImageOptions(t *testing.T) {
	busybox(t)
	refused(t, "image ls --format xml", berth(t, "image", "ls", "--format", "xml"), "image", "xml")
	refused(t, "image rm nosuch", berth(t, "image", "rm", "nosuch-image"), "image", "nosuch-image")
	dir := t.TempDir()
	r := berth(t, "image", "import", dir)
	refused(t, "import of an empty directory", r, "image", dir)
	if strings.Count(r.stderr, dir) != 1 {
		t.Errorf("the error names the path %d times: %q", strings.Count(r.stderr, dir), r.stderr)
	}

	// --root "" must not become the working directory.
	cwd := t.TempDir()
	cmd := exec.Command(berthBin, "--root", "", "ps")
	cmd.Dir = cwd
	var errb bytes.Buffer
	cmd.Stderr = &errb
	_ = cmd.Run()
	if cmd.ProcessState.ExitCode() != 125 || !strings.Contains(errb.String(), "--root") {
		t.Errorf("--root \"\": exit %d, stderr %q", cmd.ProcessState.ExitCode(), errb.String())
	}
	if ents, _ := os.ReadDir(cwd); len(ents) != 0 {
		t.Errorf("--root \"\" wrote into the working directory: %v", ents)
	}
}

// An import killed midway leaves a stage in the root's tmp; the next
// import collects it.
func TestKilledImportIsCollected(t *testing.T) {
	root := t.TempDir()
	fifo := filepath.Join(t.TempDir(), "image.tar")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(berthBin, "--root", root, "image", "import", fifo)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// Half of a 1 MiB member: the import stages it and waits for more.
	tw := tar.NewWriter(w)
	if err := tw.WriteHeader(&tar.Header{Name: "blobs/sha256/x", Mode: 0o644, Size: 1 << 20, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, 512<<10)); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(root, "image", "tmp")
	waitFor(t, "the import to stage", func() bool {
		m, _ := filepath.Glob(filepath.Join(tmp, "import-*", "in", "*"))
		return len(m) > 0
	})
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()

	layout := ociLayout(t, testutilRootfs(t), "latest")
	if r := berthAt(t, root, "image", "import", "--name", "after", layout); r.code != 0 {
		t.Fatalf("import after a killed import: exit %d: %s", r.code, r.stderr)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("the killed import's stage is still in %s: %d entries", tmp, len(ents))
	}
}

// A workload that fills the file system of berth's data root still gets
// its end recorded; ps tells the truth and rm removes it.
func TestFullDataRoot(t *testing.T) {
	root := t.TempDir()
	if err := unix.Mount("none", root, "tmpfs", 0, "size=8m"); err != nil {
		t.Skipf("needs a tmpfs mount: %v", err)
	}
	defer unix.Unmount(root, unix.MNT_DETACH)
	layout := ociLayout(t, testutilRootfs(t), "latest")
	if r := berthAt(t, root, "image", "import", "--name", "small", layout); r.code != 0 {
		t.Fatalf("import: exit %d: %s", r.code, r.stderr)
	}
	r := berthAt(t, root, "run", "--name", "filler", "small", "sh", "-c", "dd if=/dev/zero of=/fill bs=64k 2>/dev/null; exit 3")
	if r.code != 3 {
		t.Fatalf("run: exit %d, want 3: %s", r.code, r.stderr)
	}
	r = berthAt(t, root, "inspect", "filler")
	var recs []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &recs); err != nil || len(recs) != 1 {
		t.Fatalf("inspect: %v: %s %s", err, r.stdout, r.stderr)
	}
	if recs[0]["status"] != "stopped" || recs[0]["exit_code"] != 3.0 {
		t.Errorf("record on a full data root: status %v exit %v error %v; want stopped, 3", recs[0]["status"], recs[0]["exit_code"], recs[0]["error"])
	}
	done := make(chan result, 1)
	go func() { done <- berthAt(t, root, "rm", "-f", "filler") }()
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		t.Fatal("rm -f on a full data root hangs")
	}
	if r.code != 0 {
		t.Fatalf("rm -f on a full data root: exit %d: %s", r.code, r.stderr)
	}
	m, _ := filepath.Glob(filepath.Join(root, "instances", "[0-9a-f]*"))
	if len(m) != 0 {
		t.Errorf("rm left %v", m)
	}
}

// A running instance whose record was damaged is listed, named in the
// error of the verbs that cannot use it, and removed, processes and
// cgroups included, by rm -f.
func TestCorruptRecordRemovedByRmForce(t *testing.T) {
	img := busybox(t)
	id := strings.TrimSpace(must(t, "run", "-d", "--name", "damaged", img, "sleep", "100"))
	t.Cleanup(func() { berth(t, "rm", "-f", id) })
	initPid, _ := inspect(t, id)["pid"].(float64)
	if err := os.WriteFile(filepath.Join(berthRoot, "instances", id, "state.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := must(t, "ps", "-a", "-q"); !strings.Contains(out, id[:12]) {
		t.Errorf("ps -a hides the instance with a damaged record:\n%s", out)
	}
	refused(t, "rm of a damaged record", berth(t, "rm", "damaged"), "rm", id[:12], "rm -f")
	if r := berth(t, "rm", "-f", "damaged"); r.code != 0 {
		t.Fatalf("rm -f of a damaged record: exit %d: %s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(berthRoot, "instances", id)); err == nil {
		t.Error("rm -f left the instance's directory")
	}
	waitFor(t, "the instance's init to end", func() bool {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(int(initPid)) + "/stat")
		return err != nil || strings.Contains(string(b), ") Z ")
	})
	if dirs, _ := filepath.Glob("/sys/fs/cgroup/*/berth/" + id); len(dirs) > 0 {
		t.Errorf("cgroups left: %v", dirs)
	}
	must(t, "run", "--rm", "--name", "damaged", img, "true")
}
