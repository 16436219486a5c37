//go:build linux

package seccomp

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"unsafe"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The kernel tests load filters, which cannot be removed, so each runs in a
// child: the test binary re-executed with helperEnv naming the scenario.
// They need no root (no_new_privs is enough), only a kernel with seccomp.
const (
	helperEnv = "BERTH_SECCOMP_HELPER"
	dirEnv    = "BERTH_SECCOMP_DIR"
)

func requireSeccomp(t *testing.T) {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil || !bytes.Contains(status, []byte("\nSeccomp:")) {
		t.Skip("needs a kernel with seccomp (no Seccomp line in /proc/self/status)")
	}
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_ACTION_AVAIL, 0,
		uintptr(unsafe.Pointer(&[]uint32{unix.SECCOMP_RET_KILL_PROCESS}[0]))); e != 0 {
		t.Skipf("needs seccomp filters with SECCOMP_RET_KILL_PROCESS: %v", e)
	}
}

// runHelper runs the named scenario in a child and fails with its output
// unless it exits 0.
func runHelper(t *testing.T, scenario string) {
	t.Helper()
	requireSeccomp(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestKernelHelper$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"="+scenario, dirEnv+"="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scenario %s: %v\n%s", scenario, err, out)
	}
	if !strings.Contains(string(out), "scenario "+scenario+" ok") {
		t.Fatalf("scenario %s did not run:\n%s", scenario, out)
	}
}

func TestLoadDefaultDenies(t *testing.T)         { runHelper(t, "default") }
func TestLoadCustomProfile(t *testing.T)         { runHelper(t, "custom") }
func TestLoadDefaultKeepsGoWorking(t *testing.T) { runHelper(t, "runtime") }

// TestKernelHelper is the child side of the kernel tests; it does nothing
// unless helperEnv is set.
func TestKernelHelper(t *testing.T) {
	scenario := os.Getenv(helperEnv)
	if scenario == "" {
		t.Skip("child process of the kernel tests only")
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		t.Fatalf("set no_new_privs: %v", err)
	}
	dir := os.Getenv(dirEnv)
	switch scenario {
	case "default":
		helperDefault(t, dir)
	case "custom":
		helperCustom(t, dir)
	case "runtime":
		helperRuntime(t, dir)
	default:
		t.Fatalf("unknown scenario %q", scenario)
	}
	if !t.Failed() {
		fmt.Printf("scenario %s ok\n", scenario)
	}
}

// wantErrno checks that a raw syscall failed with want. The arguments are
// chosen so that without the filter the call would succeed or fail with
// another errno, even as root.
func wantErrno(t *testing.T, what string, want unix.Errno, nr uintptr, args ...uintptr) {
	t.Helper()
	var a [6]uintptr
	copy(a[:], args)
	_, _, e := unix.Syscall6(nr, a[0], a[1], a[2], a[3], a[4], a[5])
	if e != want {
		t.Errorf("%s: errno %d (%v), want %d (%v)", what, e, e, want, want)
	}
}

func helperDefault(t *testing.T, dir string) {
	target := filepath.Join(dir, "mnt")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Load(Default()); err != nil {
		t.Fatalf("Load(Default()): %v", err)
	}
	p := func(s string) uintptr {
		b, _ := unix.BytePtrFromString(s)
		return uintptr(unsafe.Pointer(b))
	}
	runtime.LockOSThread() // unshare acts on the calling thread
	defer runtime.UnlockOSThread()
	eperm := unix.EPERM
	wantErrno(t, "mount tmpfs", eperm, unix.SYS_MOUNT, p("none"), p(target), p("tmpfs"), 0, 0)
	wantErrno(t, "umount2", eperm, unix.SYS_UMOUNT2, p(target), 0)
	wantErrno(t, "unshare(CLONE_NEWNS)", eperm, unix.SYS_UNSHARE, unix.CLONE_NEWNS)
	wantErrno(t, "unshare(CLONE_NEWUSER)", eperm, unix.SYS_UNSHARE, unix.CLONE_NEWUSER)
	wantErrno(t, "setns(-1)", eperm, unix.SYS_SETNS, ^uintptr(0), 0)
	wantErrno(t, "keyctl(bad command)", eperm, unix.SYS_KEYCTL, 0xffff)
	wantErrno(t, "add_key(NULL)", eperm, unix.SYS_ADD_KEY, 0, 0, 0, 0, 0)
	wantErrno(t, "bpf(bad command)", eperm, unix.SYS_BPF, 0xffff, 0, 0)
	wantErrno(t, "kexec_load(bad flags)", eperm, unix.SYS_KEXEC_LOAD, 0, 0, 0, 0xffffffff)
	wantErrno(t, "init_module(NULL)", eperm, unix.SYS_INIT_MODULE, 0, 0, 0)
	wantErrno(t, "finit_module(-1)", eperm, unix.SYS_FINIT_MODULE, ^uintptr(0), 0, 0)
	wantErrno(t, "delete_module(bogus)", eperm, unix.SYS_DELETE_MODULE, p("berth_no_such_module"), 0)
	wantErrno(t, "pivot_root(bogus)", eperm, unix.SYS_PIVOT_ROOT, p(target), p(target))
	wantErrno(t, "perf_event_open(NULL)", eperm, unix.SYS_PERF_EVENT_OPEN, 0, 0, ^uintptr(0), ^uintptr(0), 0)
	wantErrno(t, "open_by_handle_at(-1)", eperm, unix.SYS_OPEN_BY_HANDLE_AT, ^uintptr(0), 0, 0)
	wantErrno(t, "userfaultfd(bad flags)", eperm, unix.SYS_USERFAULTFD, 0xffffffff)
	wantErrno(t, "personality(ADDR_NO_RANDOMIZE)", eperm, unix.SYS_PERSONALITY, 0x40000)
	wantErrno(t, "socket(AF_VSOCK)", eperm, unix.SYS_SOCKET, unix.AF_VSOCK, unix.SOCK_STREAM, 0)
	// The kernel takes the family as an int: high bits set must not
	// carry a refused family past the filter.
	wantErrno(t, "socket(1<<32|AF_VSOCK)", eperm, unix.SYS_SOCKET, 1<<32|unix.AF_VSOCK, unix.SOCK_STREAM, 0)
	wantErrno(t, "socket(AF_ALG)", eperm, unix.SYS_SOCKET, unix.AF_ALG, unix.SOCK_SEQPACKET, 0)
	wantErrno(t, "socket(1<<32|AF_ALG)", eperm, unix.SYS_SOCKET, 1<<32|unix.AF_ALG, unix.SOCK_SEQPACKET, 0)
	wantErrno(t, "io_uring_setup(0, NULL)", eperm, unix.SYS_IO_URING_SETUP, 0, 0)
	wantErrno(t, "io_uring_enter(-1)", eperm, unix.SYS_IO_URING_ENTER, ^uintptr(0), 0, 0, 0, 0, 0)
	wantErrno(t, "io_uring_register(-1)", eperm, unix.SYS_IO_URING_REGISTER, ^uintptr(0), 0, 0, 0)
	wantErrno(t, "clone(CLONE_NEWNS, bad flags)", eperm, unix.SYS_CLONE, unix.CLONE_NEWNS|unix.CLONE_VM|unix.CLONE_SIGHAND|unix.CLONE_THREAD|unix.CLONE_NEWPID)
	// ENOSYS where libc should fall back.
	wantErrno(t, "clone3(NULL, 0)", unix.ENOSYS, unix.SYS_CLONE3, 0, 0)
	wantErrno(t, "fchmodat2(-1)", unix.ENOSYS, 452, ^uintptr(0), p("x"), 0, 0)

	// Allowed calls still work.
	if pid := os.Getpid(); pid <= 0 {
		t.Errorf("getpid = %d", pid)
	}
	if _, _, e := unix.Syscall(unix.SYS_PERSONALITY, 0xffffffff, 0, 0); e != 0 {
		t.Errorf("personality query: %v", e)
	}
	if fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0); err != nil {
		t.Errorf("socket(AF_UNIX): %v", err)
	} else {
		unix.Close(fd)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("hello"), 0o644); err != nil {
		t.Errorf("write a file: %v", err)
	} else if b, err := os.ReadFile(file); err != nil || string(b) != "hello" {
		t.Errorf("read it back: %q, %v", b, err)
	}
	checkAllThreadsFiltered(t)
}

// checkAllThreadsFiltered checks that TSYNC put every thread in filter mode.
func checkAllThreadsFiltered(t *testing.T) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		status, err := os.ReadFile(filepath.Join("/proc/self/task", task.Name(), "status"))
		if err != nil {
			continue // the thread has gone
		}
		if !bytes.Contains(status, []byte("\nSeccomp:\t2\n")) {
			t.Errorf("thread %s is not in seccomp filter mode", task.Name())
		}
	}
	if len(tasks) < 2 {
		t.Logf("only %d thread(s) to check", len(tasks))
	}
}

func helperCustom(t *testing.T, dir string) {
	eacces, eoverflow := uint(unix.EACCES), uint(unix.EOVERFLOW)
	p := &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Syscalls: []specs.LinuxSyscall{
			{Names: []string{"mkdirat", "mkdir"}, Action: specs.ActErrno, ErrnoRet: &eacces},
			// lseek with an offset whose high word is set.
			{Names: []string{"lseek"}, Action: specs.ActErrno, ErrnoRet: &eoverflow, Args: []specs.LinuxSeccompArg{
				{Index: 1, Value: 1<<32 - 1, Op: specs.OpGreaterThan},
			}},
		},
	}
	if err := Load(p); err != nil {
		t.Fatalf("Load: %v", err)
	}
	err := os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	if !errors.Is(err, unix.EACCES) {
		t.Errorf("mkdir: %v, want EACCES", err)
	}
	f, err := os.Create(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if off, err := f.Seek(1<<32-1, 0); err != nil || off != 1<<32-1 {
		t.Errorf("seek to 4GiB-1: %d, %v", off, err)
	}
	if _, err := f.Seek(1<<33, 0); !errors.Is(err, unix.EOVERFLOW) {
		t.Errorf("seek to 8GiB: %v, want EOVERFLOW", err)
	}
	// Filters stack: the default profile on top still allows the rest.
	if err := Load(Default()); err != nil {
		t.Fatalf("Load(Default()) on top: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "g"), nil, 0o644); err != nil {
		t.Errorf("write under both filters: %v", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub2"), 0o755); !errors.Is(err, unix.EACCES) {
		t.Errorf("mkdir under both filters: %v, want EACCES", err)
	}
}

// helperRuntime checks that Go itself keeps working under Default: new
// threads, fork and exec of a program, pipes, signals.
func helperRuntime(t *testing.T, dir string) {
	if err := Load(Default()); err != nil {
		t.Fatalf("Load(Default()): %v", err)
	}
	// Force the runtime to start new OS threads (clone with thread flags).
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var ts unix.Timespec
			_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
		}()
	}
	wg.Wait()
	checkAllThreadsFiltered(t)

	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Logf("busybox not found; running /bin/sh instead")
		busybox = "/bin/sh"
	}
	if err := exec.Command(busybox, "true").Run(); busybox != "/bin/sh" && err != nil {
		t.Errorf("%s true: %v", busybox, err)
	}
	shell := "echo out; mkdir " + filepath.Join(dir, "d") + " && ls -d " + filepath.Join(dir, "d") +
		"; cat /proc/self/status | grep '^Seccomp:'"
	cmd := exec.Command("/bin/sh", "-c", shell)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("sh -c: %v\n%s", err, out)
	}
	for _, want := range []string{"out\n", filepath.Join(dir, "d") + "\n", "Seccomp:\t2\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("sh output lacks %q:\n%s", want, out)
		}
	}
	if busybox != "/bin/sh" {
		out, err := exec.Command(busybox, "sh", "-c", "echo a | busybox tr a b; busybox id -u; busybox uname -s").CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "b\n") {
			t.Errorf("busybox sh: %v\n%s", err, out)
		}
	}
}
