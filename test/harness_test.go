// Package test holds end-to-end tests of the built berth binary: they run
// it as a user would, against real images made by umoci and skopeo, and
// check what it leaves behind.
package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testutil"
)

var (
	berthBin  string // the binary under test
	berthRoot string // the data root every test shares, as users share /var/lib/berth
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		// Nothing here can run without root. In CI that is a failure, not
		// a pass of tests that never ran; elsewhere a loud skip.
		if testutil.InCI() {
			fmt.Fprintln(os.Stderr, "FAIL: CI is set but the end-to-end tests are not running as root")
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "SKIP: every end-to-end test in ./test needs root (namespaces, mounts, cgroups); none ran")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "berth-e2e-")
	if err != nil {
		panic(err)
	}
	berthBin = filepath.Join(dir, "berth")
	berthRoot = filepath.Join(dir, "root")
	// The guest agent, the container stage binary and the registry client
	// are found next to berth (and berth-runtime, built there too).
	for _, cmd := range []string{"berth-agent", "berth-init", "berth-registry", "berth-compose", "berth"} {
		build := exec.Command("go", "build", "-o", filepath.Join(dir, cmd), "../cmd/"+cmd)
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Printf("build %s: %v\n%s", cmd, err, out)
			os.Exit(1)
		}
	}
	// Only the tests of the network attach instances to one, each in
	// namespaces of its own; the others run with loopback only.
	os.Setenv("BERTH_DEFAULT_NETWORK", "none")
	code := m.Run()
	// Whatever a failed test left running must not outlive the suite.
	out, _ := exec.Command(berthBin, "--root", berthRoot, "ps", "-a", "-q").Output()
	for _, id := range strings.Fields(string(out)) {
		_ = exec.Command(berthBin, "--root", berthRoot, "rm", "-f", id).Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is one finished berth invocation.
type result struct {
	stdout, stderr string
	code           int
}

// berth runs the binary with the shared root and returns what it printed
// and its exit status. If berth hangs for two minutes it is killed, the
// test is marked failed and the result has code -1: the helper never calls
// t.Fatal, so goroutines of a test may use it.
func berth(t testing.TB, args ...string) result {
	t.Helper()
	return berthIn(t, nil, args...)
}

func berthIn(t testing.TB, stdin []byte, args ...string) result {
	t.Helper()
	return berthEnvIn(t, nil, stdin, args...)
}

// berthEnvIn is berthIn with env added to the environment.
func berthEnvIn(t testing.TB, env []string, stdin []byte, args ...string) result {
	t.Helper()
	return berthLimit(t, 2*time.Minute, env, stdin, args...)
}

// berthLimit is berthEnvIn failing the test (and killing berth) when berth
// still runs after limit.
func berthLimit(t testing.TB, limit time.Duration, env []string, stdin []byte, args ...string) result {
	t.Helper()
	return berthVia(t, nil, limit, env, stdin, args...)
}

// berthVia is berthLimit with berth started through the command prefix
// (nsenter into a test's network namespace), if any.
func berthVia(t testing.TB, prefix []string, limit time.Duration, env []string, stdin []byte, args ...string) result {
	t.Helper()
	argv := append(append(append([]string{}, prefix...), berthBin, "--root", berthRoot), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if err := cmd.Start(); err != nil {
		t.Errorf("start berth: %v", err)
		return result{stderr: err.Error(), code: -1}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(limit):
		_ = cmd.Process.Kill()
		<-done
		t.Errorf("berth %s: still running after %s: killed", strings.Join(args, " "), limit)
		return result{stdout: out.String(), stderr: errb.String() + fmt.Sprintf("\n(killed: hung for %s)", limit), code: -1}
	}
	return result{stdout: out.String(), stderr: errb.String(), code: cmd.ProcessState.ExitCode()}
}

// must runs berth and fails the test unless it exits 0.
func must(t testing.TB, args ...string) string {
	t.Helper()
	r := berth(t, args...)
	if r.code != 0 {
		t.Fatalf("berth %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

var (
	imagesOnce sync.Once
	imagesErr  string
)

// busybox makes sure the shared root holds the test images: "busybox"
// (umoci-made OCI layout of busybox-static) and "cfgimage" (the same files
// with an Entrypoint, Cmd, Env, WorkingDir and User in its config, imported
// from a docker-save archive made by skopeo). It returns "busybox".
func busybox(t *testing.T) string {
	t.Helper()
	imagesOnce.Do(func() {
		imagesErr = "test images could not be built (see the first test's log)"
		rootfs := testutil.BusyboxRootfs(t)
		layout := testutil.OCILayout(t, rootfs, testutil.ImageOptions{Ref: "latest", Cmd: []string{"/bin/sh"}})
		if r := berth(t, "image", "import", "--name", "busybox", layout); r.code != 0 {
			imagesErr = "import busybox: " + r.stderr
			return
		}
		cfg := testutil.OCILayout(t, rootfs, testutil.ImageOptions{
			Ref:        "cfg",
			Entrypoint: []string{"/bin/sh", "-c"},
			Cmd:        []string{`echo "entry $0 $FOO $(pwd) $(id -u)"`},
			Env:        []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "FOO=from-image"},
			WorkingDir: "/tmp",
			User:       "app",
		})
		archive := testutil.DockerArchive(t, cfg, "localhost/cfgimage:v1")
		if r := berth(t, "image", "import", archive); r.code != 0 {
			imagesErr = "import docker archive: " + r.stderr
			return
		}
		imagesErr = ""
	})
	if imagesErr != "" {
		t.Fatal(imagesErr)
	}
	return "busybox"
}

// inspect returns the instance record berth inspect prints.
func inspect(t *testing.T, ref string) map[string]any {
	t.Helper()
	var out []map[string]any
	if err := json.Unmarshal([]byte(must(t, "inspect", ref)), &out); err != nil || len(out) != 1 {
		t.Fatalf("inspect %s: %v", ref, err)
	}
	return out[0]
}

// waitFor polls cond every 50 ms for up to 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func testutilRootfs(t *testing.T) string { return testutil.BusyboxRootfs(t) }

func ociLayout(t *testing.T, rootfs, tag string) string {
	return testutil.OCILayout(t, rootfs, testutil.ImageOptions{Ref: tag, Cmd: []string{"/bin/sh"}})
}

// needVM skips a test that boots guests where the host lacks QEMU or the
// guest kernel (CI has both: make test-deps installs them).
func needVM(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		testutil.Missing(t, "needs qemu-system-x86_64 (Debian's qemu-system-x86)")
	}
	for _, k := range []string{os.Getenv("BERTH_KERNEL"), "/var/lib/berth/kernel/boot"} {
		if k == "" {
			continue
		}
		if m, _ := filepath.Glob(filepath.Join(k, "vmlinuz-*")); len(m) > 0 {
			return
		}
		if st, err := os.Stat(k); err == nil && st.Mode().IsRegular() {
			return
		}
	}
	testutil.Missing(t, "needs the guest kernel: scripts/fetch-kernel.sh /var/lib/berth/kernel")
}
