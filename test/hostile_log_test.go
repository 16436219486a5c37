package test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a buffer a command writes while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitStopped waits until instance id has ended, for up to limit.
func waitStopped(t *testing.T, id string, limit time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(limit); status(t, id) != "stopped"; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("instance %s still runs after %v", id[:12], limit)
		}
	}
}

// logFiles are the files of instance id's log: log.json and its rotated
// log.json.N, with their sizes.
func logFiles(t *testing.T, id string) map[string]int64 {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(berthRoot, "instances", id, "log.json*"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]int64{}
	for _, p := range m {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Base(p)] = st.Size()
	}
	return files
}

// consecutive checks that out is the lines from..to of `seq`, and returns
// from.
func consecutive(t *testing.T, out string, to int) int {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	from, err := strconv.Atoi(lines[0])
	if err != nil || !strings.HasSuffix(out, "\n") {
		t.Fatalf("logs do not start with a line of seq: %q", out[:min(len(out), 100)])
	}
	for i, l := range lines {
		if l != strconv.Itoa(from+i) {
			t.Fatalf("logs line %d is %q, want %d: the log is not a contiguous tail in order", i, l, from+i)
		}
	}
	if last := from + len(lines) - 1; last != to {
		t.Fatalf("logs end at %d, want %d", last, to)
	}
	return from
}

// A detached instance that prints many times --log-opt max-size keeps at
// most max-file files of at most max-size each, and logs gives the last
// of its output in order.
func TestLogOptRotates(t *testing.T) {
	img := busybox(t)
	const maxSize = 100 << 10
	id := detach(t, "--log-opt", "max-size=100k", "--log-opt", "max-file=3", img, "seq", "1", "200000")
	waitStopped(t, id, time.Minute)
	files := logFiles(t, id)
	if len(files) > 3 {
		t.Errorf("log files %v; want at most 3", files)
	}
	for name, size := range files {
		if size > maxSize {
			t.Errorf("%s holds %d bytes; want at most max-size, %d", name, size, maxSize)
		}
	}
	out := must(t, "logs", id)
	if from := consecutive(t, out, 200000); from == 1 {
		t.Errorf("logs begin with the first line: nothing was rotated out (files %v)", files)
	}
	cfg, _ := inspect(t, id)["log_config"].(map[string]any)
	if cfg["max_size"] != float64(maxSize) || cfg["max_files"] != float64(3) {
		t.Errorf("inspect log_config = %v; want max_size %d, max_files 3", cfg, maxSize)
	}
}

// Without --log-opt the log is bounded all the same: 5 files of 20 MiB.
func TestLogOptDefault(t *testing.T) {
	img := busybox(t)
	id := detach(t, img, "true")
	cfg, _ := inspect(t, id)["log_config"].(map[string]any)
	if cfg["max_size"] != float64(20<<20) || cfg["max_files"] != float64(5) {
		t.Errorf("inspect log_config = %v; want the default, max_size 20 MiB, max_files 5", cfg)
	}
}

// logs -f follows the output across rotations, losing nothing the
// rotation keeps.
func TestLogFollowRotates(t *testing.T) {
	img := busybox(t)
	dir := t.TempDir()
	id := detach(t, "--log-opt", "max-size=8k", "--log-opt", "max-file=1000", "-v", dir+":/x", img,
		"sh", "-c", "seq 1 5000; while [ ! -e /x/go ]; do sleep 0.1; done; seq 5001 40000")
	cmd := exec.Command(berthBin, "--root", berthRoot, "logs", "-f", id)
	var out, errb lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	ended := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(ended) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-ended
	})
	// logs -f has read to the end of the log: the rest of the output,
	// and the log's rotations, come while it follows.
	waitFor(t, "logs -f to show the first 5000 lines", func() bool { return strings.HasSuffix(out.String(), "\n5000\n") })
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ended:
		if waitErr != nil {
			t.Fatalf("logs -f: %v: %s", waitErr, errb.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("logs -f did not end with the instance; it shows %d bytes", len(out.String()))
	}
	if from := consecutive(t, out.String(), 40000); from != 1 {
		t.Errorf("logs -f begins at line %d, want 1", from)
	}
	if n := len(logFiles(t, id)); n < 10 {
		t.Errorf("the log has %d files; want it rotated many times", n)
	}
}

// Output that is not text comes back from logs byte for byte, and its log
// is not much larger than it.
func TestLogBinaryOutput(t *testing.T) {
	img := busybox(t)
	dir := t.TempDir()
	id := detach(t, "-v", dir+":/x", img, "sh", "-c", "head -c 300000 /dev/urandom > /x/data; cat /x/data")
	waitStopped(t, id, time.Minute)
	data, err := os.ReadFile(filepath.Join(dir, "data"))
	if err != nil || len(data) != 300000 {
		t.Fatalf("the workload's data: %d bytes, %v", len(data), err)
	}
	if out := must(t, "logs", id); out != string(data) {
		t.Errorf("logs gave back %d bytes, not the %d written", len(out), len(data))
	}
	var total int64
	for _, size := range logFiles(t, id) {
		total += size
	}
	if total > int64(len(data))*3/2 {
		t.Errorf("the log takes %d bytes for %d of output", total, len(data))
	}
}

// A bad --log-opt is one line and 125, and creates nothing.
func TestLogOptRefused(t *testing.T) {
	img := busybox(t)
	before := must(t, "ps", "-a", "-q")
	for _, opt := range []string{"max-size=ten", "max-size=0", "max-size=-5m", "max-file=0", "max-file=two", "compress=true", "mode=non-blocking", "max-size"} {
		for _, mode := range [][]string{{"-d"}, {"--rm"}} {
			args := append(append([]string{"run"}, mode...), "--log-opt", opt, img, "true")
			r := berth(t, args...)
			if r.code != 125 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, "--log-opt") || r.stdout != "" {
				t.Errorf("berth %s: exit %d, stdout %q, stderr %q; want one line naming --log-opt, 125", strings.Join(args, " "), r.code, r.stdout, r.stderr)
			}
		}
	}
	if after := must(t, "ps", "-a", "-q"); after != before {
		t.Errorf("refused runs left instances:\nbefore %q\nafter %q", before, after)
	}
}

// A boot timeout that ends before the guest agent could answer (1ns: at
// once, at any point of the start) is an error, 125: never a panic, and
// nothing is left. The template a clone came from stays.
func TestVMBootTimeoutRace(t *testing.T) {
	needVM(t)
	img := busybox(t)
	must(t, "run", "--rm", "--vm", img, "true") // the template, where templates are on
	templates := func() []string {
		m, _ := filepath.Glob(filepath.Join(berthRoot, "vm", "templates", "*", "state"))
		return m
	}
	before := templates()
	instances := func() []string {
		ents, _ := os.ReadDir(filepath.Join(berthRoot, "instances"))
		var ids []string
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), ".") {
				ids = append(ids, e.Name())
			}
		}
		return ids
	}
	had := instances()
	for i := range 20 {
		// Half of them boot cold: a fresh QEMU every time.
		var env []string
		if i%2 == 1 {
			env = []string{"BERTH_VM_TEMPLATE=off"}
		}
		r := berthEnvIn(t, env, nil, "run", "--rm", "--boot-timeout", "1ns", "--vm", img, "true")
		if r.code == 2 || strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine") {
			t.Fatalf("run %d (%v): exit %d, a Go panic:\n%s", i, env, r.code, r.stderr)
		}
		if r.code != 125 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, "1ns") {
			t.Errorf("run %d (%v): exit %d, stderr %q; want one line naming the 1ns timeout, 125", i, env, r.code, r.stderr)
		}
		// No record is left behind, not even for the next command to
		// reconcile.
		if now := instances(); len(now) != len(had) {
			t.Fatalf("run %d left a record: instances %v, before %v", i, now, had)
		}
	}
	if after := templates(); len(after) < len(before) {
		t.Errorf("templates %v after the runs; before %v: a short boot timeout dropped one", after, before)
	}
}

// A guest that floods its serial console (a privileged workload
// writing the guest's /dev/console, 5:1) leaves a console log of at
// most 1 MiB, the last of what it printed, and nothing once deleted.
func TestVMConsoleLogBounded(t *testing.T) {
	t.Parallel()
	rt, root, id, bundle := privilegedVM(t, "vmflood", false,
		"mknod /tmp/console c 5 1 && yes 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz | head -c 1200000 > /tmp/console; echo console-end-marker > /tmp/console; exec sleep 1000")
	createQuiet(t, rt, root, bundle, id)
	defer runCmd(t, nil, rt, "--root", root, "delete", "--force", id)
	mustCmd(t, rt, "--root", root, "start", id)
	data := os.Getenv("BERTH_ROOT")
	if data == "" {
		data = "/var/lib/berth"
	}
	var log []byte
	// The serial console is slow under software emulation.
	deadline := time.Now().Add(5 * time.Minute)
	for {
		logs, _ := filepath.Glob(filepath.Join(data, "vm", "runtime", id+"-*", "console.log"))
		if len(logs) == 1 {
			log, _ = os.ReadFile(logs[0])
			if bytes.Contains(log[max(0, len(log)-200):], []byte("console-end-marker")) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no console-end-marker at the end of the console log after 5 minutes (%d bytes; %v)", len(log), logs)
		}
		time.Sleep(time.Second)
	}
	if len(log) > 1<<20 {
		t.Errorf("console.log holds %d bytes after 1.2 MB of console output; want at most 1 MiB", len(log))
	}
	if len(log) < 1<<19 {
		t.Errorf("console.log holds %d bytes after 1.2 MB of console output; want the last MiB", len(log))
	}
	mustCmd(t, rt, "--root", root, "delete", "--force", id)
	checkNoVMLeftovers(t, id, filepath.Join(root, id))
}
