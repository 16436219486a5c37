package cgroups

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/testutil"
)

// helperEnv switches the test binary into a helper process (see TestMain).
const helperEnv = "BERTH_CGROUPS_TEST_HELPER"

// TestMain lets the tests re-execute this binary as a helper: with
// helperEnv=alloc it waits for a byte on stdin (sent once the test has put it
// in a cgroup), then allocates and touches 256 MiB and exits 0.
func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "alloc" {
		var b [1]byte
		if _, err := os.Stdin.Read(b[:]); err != nil {
			os.Exit(3)
		}
		var keep [][]byte
		for i := 0; i < 256; i++ {
			chunk := make([]byte, 1<<20)
			for j := 0; j < len(chunk); j += 4096 {
				chunk[j] = 1
			}
			keep = append(keep, chunk)
		}
		fmt.Println(len(keep))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.Missing(t, "needs root to create cgroups")
	}
}

// testParent is the per-run parent of the tests' cgroups, unique to this
// process so that concurrent runs do not meet.
func testParent() string { return fmt.Sprintf("/berthtest-%d", os.Getpid()) }

// testPath is a cgroup path for the running test.
func testPath(t *testing.T) string {
	name := strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
	return testParent() + "/" + name
}

// cleanupCgroup destroys m when the test ends and removes the test parent
// directory below each of mounts (ignoring "not empty": another test's
// cleanup will take it).
func cleanupCgroup(t *testing.T, m Manager, mounts ...string) {
	t.Cleanup(func() {
		if err := m.Destroy(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		for _, mnt := range mounts {
			_ = syscall.Rmdir(filepath.Join(mnt, testParent()))
		}
	})
}

// startBlocked starts cmd with a stdin pipe, so the process can wait for a
// go-ahead after the test has put it into a cgroup. Cleanup kills and reaps it.
func startBlocked(t *testing.T, cmd *exec.Cmd) io.WriteCloser {
	t.Helper()
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return in
}

// startSleep starts a sleep that the test's cleanup kills and reaps.
func startSleep(t *testing.T, attr *syscall.SysProcAttr) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "1000")
	cmd.SysProcAttr = attr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sleep: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// killedBy waits for cmd and reports the signal that ended it (0 if none).
func killedBy(t *testing.T, cmd *exec.Cmd) syscall.Signal {
	t.Helper()
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return 0
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() {
		return 0
	}
	return ws.Signal()
}

// readFile returns a file's contents without surrounding space.
func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// procCgroupLine returns the line of /proc/PID/cgroup whose controller list
// contains ctrl (or the "0::" line when ctrl is "").
func procCgroupLine(t *testing.T, pid int, ctrl string) string {
	t.Helper()
	for _, line := range strings.Split(readFile(t, "/proc/"+strconv.Itoa(pid)+"/cgroup"), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && slices.Contains(strings.Split(parts[1], ","), ctrl) {
			return line
		}
	}
	return ""
}

func TestCheckPath(t *testing.T) {
	for _, p := range []string{"", "/", "berth/x", "/berth/../x", "/berth/x/", "/berth//x"} {
		if err := checkPath(p); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("checkPath(%q) = %v, want ErrInvalid", p, err)
		}
	}
	if err := checkPath("/berth/abc"); err != nil {
		t.Errorf("checkPath(/berth/abc) = %v", err)
	}
	if _, err := New("/"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("New(/) = %v, want ErrInvalid", err)
	}
}

func TestSharesToWeight(t *testing.T) {
	for shares, want := range map[uint64]uint64{0: 1, 2: 1, 1024: 39, 262144: 10000, 1 << 30: 10000} {
		if got := sharesToWeight(shares); got != want {
			t.Errorf("sharesToWeight(%d) = %d, want %d", shares, got, want)
		}
	}
}

func TestParseV1Mounts(t *testing.T) {
	const info = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/my\040pids rw - cgroup cgroup rw,pids
37 31 0:33 / /other/pids rw - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	got, err := parseV1Mounts(strings.NewReader(info))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"cpu":     "/sys/fs/cgroup/cpu,cpuacct",
		"cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
		"memory":  "/sys/fs/cgroup/memory",
		"pids":    "/sys/fs/cgroup/my pids",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("parseV1Mounts = %v, want %v", got, want)
	}
	m, err := newV1("/berth/x", got)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.hier) != 3 {
		t.Errorf("co-mounted cpu,cpuacct should be one hierarchy, got %+v", m.hier)
	}
	delete(got, "pids")
	if _, err := newV1("/berth/x", got); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "pids controller not mounted") {
		t.Errorf("newV1 without pids = %v, want pids ErrUnavailable", err)
	}
}

func TestDetectModeAndNew(t *testing.T) {
	mode := DetectMode()
	t.Logf("cgroup mode %s", mode)
	m, err := New("/berth/detect")
	switch mode {
	case ModeV1, ModeHybrid:
		if _, ok := m.(*v1); !ok || err != nil {
			t.Errorf("New on %s host = %T, %v; want v1", mode, m, err)
		}
	case ModeV2:
		if _, ok := m.(*v2); !ok || err != nil {
			t.Errorf("New on v2 host = %T, %v; want v2", m, err)
		}
	default:
		if !errors.Is(err, errdefs.ErrUnavailable) {
			t.Errorf("New without cgroups = %v, want ErrUnavailable", err)
		}
	}
	if m != nil && m.Path() != "/berth/detect" {
		t.Errorf("Path() = %q", m.Path())
	}
}
