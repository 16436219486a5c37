package test

import (
	"bytes"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/tty"
)

// runOnPty runs berth with a pty of the test's as its terminal, sized
// rows x cols, and returns what the terminal showed.
func runOnPty(t *testing.T, rows, cols uint16, args ...string) (string, int) {
	t.Helper()
	master, slave, err := tty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	if err := unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(berthBin, append([]string{"--root", berthRoot}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	var out bytes.Buffer
	copied := make(chan struct{})
	go func() { io.Copy(&out, master); close(copied) }()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		t.Fatal("berth with a terminal did not finish within a minute")
	}
	select {
	case <-copied:
	case <-time.After(5 * time.Second):
	}
	return strings.ReplaceAll(out.String(), "\r\n", "\n"), cmd.ProcessState.ExitCode()
}

// The terminal of run -t is a pty of the instance's own devpts, sized
// like the user's terminal before the workload starts.
func TestRunTty(t *testing.T) {
	img := busybox(t)
	out, code := runOnPty(t, 33, 101, "run", "--rm", "-t", img, "sh", "-c", "tty; stty size; exit 4")
	if code != 4 {
		t.Fatalf("exit %d, want 4; terminal showed %q", code, out)
	}
	if !strings.Contains(out, "/dev/pts/0\n33 101\n") {
		t.Fatalf("terminal showed %q; want /dev/pts/0 and the size 33 101", out)
	}
}

func TestExecTty(t *testing.T) {
	img := busybox(t)
	id := detach(t, img, "sleep", "100")
	out, code := runOnPty(t, 20, 70, "exec", "-t", id, "sh", "-c", "tty; stty size")
	if code != 0 || !regexp.MustCompile(`(^|\n)/dev/pts/[0-9]+\n20 70\n`).MatchString(out) {
		t.Fatalf("exec -t: exit %d, terminal showed %q; want /dev/pts/N and the size 20 70", code, out)
	}
}

// A detached -t instance's terminal is the instance's too, sized like the
// terminal berth run was started on; its output goes to the log.
func TestDetachedTty(t *testing.T) {
	img := busybox(t)
	out, code := runOnPty(t, 25, 90, "run", "-d", "-t", img, "sh", "-c", "tty; stty size")
	id := strings.TrimSpace(out)
	if code != 0 || len(id) != 64 {
		t.Fatalf("run -d -t: exit %d, terminal showed %q", code, out)
	}
	t.Cleanup(func() { berth(t, "rm", "-f", id) })
	waitFor(t, "the instance to stop", func() bool { return status(t, id) == "stopped" })
	logs := strings.ReplaceAll(must(t, "logs", id), "\r\n", "\n")
	if logs != "/dev/pts/0\n25 90\n" {
		t.Fatalf("logs of run -d -t: %q", logs)
	}
}

// Many first runs of a freshly imported image at once all succeed, on the
// layers its import unpacked.
func TestConcurrentFirstRuns(t *testing.T) {
	busybox(t)
	rootfs := testutilRootfs(t)
	layout := ociLayout(t, rootfs, "conc")
	must(t, "image", "import", "--name", "concurrent", layout)
	defer berth(t, "image", "rm", "concurrent")
	// The import unpacked the layers: the runs use those snapshots as
	// they are (the same inodes after), and unpack nothing of their own.
	snapshots := func() map[string]uint64 {
		m := map[string]uint64{}
		dirs, _ := filepath.Glob(filepath.Join(berthRoot, "image", "snapshots", "*"))
		for _, d := range dirs {
			var st syscall.Stat_t
			if syscall.Stat(d, &st) == nil {
				m[filepath.Base(d)] = st.Ino
			}
		}
		return m
	}
	before := snapshots()
	if len(before) == 0 {
		t.Fatal("the import unpacked no layer")
	}
	errs := make(chan string, 8)
	for i := 0; i < 8; i++ {
		go func() {
			r := berth(t, "run", "--rm", "concurrent", "echo", "ok")
			if r.code != 0 || r.stdout != "ok\n" {
				errs <- r.stderr
				return
			}
			errs <- ""
		}()
	}
	for i := 0; i < 8; i++ {
		if e := <-errs; e != "" {
			t.Errorf("concurrent run failed: %s", e)
		}
	}
	// Other tests import meanwhile: only what was there before counts.
	after := snapshots()
	for d, ino := range before {
		if after[d] != ino {
			t.Errorf("snapshot %s was replaced by the runs (inode %d, now %d)", d, ino, after[d])
		}
	}
	if stages, _ := filepath.Glob(filepath.Join(berthRoot, "image", "tmp", "unpack-*")); len(stages) > 0 {
		t.Errorf("unpack stages left: %v", stages)
	}
}
