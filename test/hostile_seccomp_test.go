package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Probes of the default seccomp filter from inside a workload. busybox has
// no tool that makes these calls, so the test builds a small static Go
// program and bind-mounts it into the container.
//
// The VM engine applies no seccomp filter inside its guests yet (the
// guest's kernel is the boundary there), so these run as containers only.

// seccompProbeSource makes each call and prints "NAME ERRNO" (0 when the
// call succeeded). The io_uring calls use arguments the kernel accepts or
// refuses with another errno than EPERM; the socket calls ask for families
// the default filter refuses, one with high bits set in the register,
// which the kernel drops when it reads the family as an int.
const seccompProbeSource = `package main

import (
	"fmt"
	"syscall"
	"unsafe"
)

func call(name string, nr uintptr, a ...uintptr) {
	var args [6]uintptr
	copy(args[:], a)
	_, _, e := syscall.Syscall6(nr, args[0], args[1], args[2], args[3], args[4], args[5])
	fmt.Printf("%s %d\n", name, int(e))
}

func main() {
	var params [120]byte // struct io_uring_params, zeroed
	call("io_uring_setup", 425, 1, uintptr(unsafe.Pointer(&params[0])))
	call("io_uring_enter", 426, ^uintptr(0))
	call("io_uring_register", 427, ^uintptr(0))
	call("socket_alg", syscall.SYS_SOCKET, 38, syscall.SOCK_SEQPACKET)
	call("socket_vsock_high", syscall.SYS_SOCKET, 1<<32|40, syscall.SOCK_STREAM)
}
`

// seccompProbe builds the probe into a new directory and returns it.
func seccompProbe(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(seccompProbeSource), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module probe\n\ngo 1.21\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "probe"), ".")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the probe: %v\n%s", err, out)
	}
	return dir
}

// probeResults parses the probe's "NAME ERRNO" lines.
func probeResults(t *testing.T, out string) map[string]string {
	t.Helper()
	res := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		name, errno, ok := strings.Cut(line, " ")
		if !ok {
			t.Fatalf("probe printed %q", out)
		}
		res[name] = errno
	}
	return res
}

// probeOnHost runs the probe unfiltered and skips the test when the host
// refuses io_uring itself (kernel.io_uring_disabled, or a kernel without
// it): the filter's EPERM could not be told from the host's.
func probeOnHost(t *testing.T, dir string) {
	t.Helper()
	out, err := exec.Command(filepath.Join(dir, "probe")).Output()
	if err != nil {
		t.Fatalf("probe on the host: %v", err)
	}
	if got := probeResults(t, string(out))["io_uring_setup"]; got != "0" {
		t.Skipf("the host refuses io_uring_setup without a filter (errno %s)", got)
	}
}

// TestSeccompDefaultDeniesIoUring: under berth's default filter io_uring
// and the refused socket families fail with EPERM (1), as root and not.
func TestSeccompDefaultDeniesIoUring(t *testing.T) {
	img := busybox(t)
	dir := seccompProbe(t)
	probeOnHost(t, dir)
	for _, user := range []string{"root", "app"} {
		r := berth(t, "run", "--rm", "-u", user, "-v", dir+":/probe:ro", img, "/probe/probe")
		if r.code != 0 {
			t.Fatalf("run the probe as %s: exit %d\nstdout: %s\nstderr: %s", user, r.code, r.stdout, r.stderr)
		}
		res := probeResults(t, r.stdout)
		for _, name := range []string{"io_uring_setup", "io_uring_enter", "io_uring_register", "socket_alg", "socket_vsock_high"} {
			if res[name] != "1" {
				t.Errorf("as %s: %s got errno %q, want 1 (EPERM)\n%s", user, name, res[name], r.stdout)
			}
		}
	}
}

// TestSeccompBundleProfileAllowsIoUring: berth-runtime applies a bundle's
// own profile instead of the default, so a profile that allows io_uring
// gets it; its rules still apply (io_uring_enter refused with EACCES).
func TestSeccompBundleProfileAllowsIoUring(t *testing.T) {
	rt := berthRuntime(t)
	dir := seccompProbe(t)
	probeOnHost(t, dir)
	bundle := busyboxBundle(t, rt, func(spec map[string]any) {
		spec["mounts"] = append(spec["mounts"].([]any), map[string]any{
			"destination": "/probe", "type": "bind", "source": dir, "options": []string{"rbind", "ro"},
		})
		spec["linux"].(map[string]any)["seccomp"] = map[string]any{
			"defaultAction": "SCMP_ACT_ALLOW",
			"architectures": []string{"SCMP_ARCH_X86_64"},
			"syscalls": []any{map[string]any{
				"names": []string{"io_uring_enter"}, "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
			}},
		}
	}, "/probe/probe")
	r := runCmd(t, nil, rt, "--root", runtimeRoot(t), "run", "--bundle", bundle, "uring1")
	if r.code != 0 {
		t.Fatalf("run: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	res := probeResults(t, r.stdout)
	if res["io_uring_setup"] != "0" || res["io_uring_enter"] != "13" {
		t.Fatalf("under the bundle's profile: io_uring_setup errno %q (want 0), io_uring_enter errno %q (want 13)\n%s",
			res["io_uring_setup"], res["io_uring_enter"], r.stdout)
	}
}
