package vm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/qmp"
	"github.com/berth-dev/berth/internal/testutil"
)

// testKernel finds a guest kernel for the tests: $BERTH_KERNEL, berth's
// default root, or the developers' unpack directory; the test skips, with
// the reason, when there is none or no QEMU.
func testKernel(t *testing.T) Kernel {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		testutil.Missing(t, "needs qemu: qemu-system-x86_64 not on PATH (apt-get install qemu-system-x86)")
	}
	for _, dir := range []string{os.Getenv("BERTH_KERNEL"), "/var/lib/berth/kernel", "/var/lib/berth-kernel-dev"} {
		if dir == "" {
			continue
		}
		if k, err := FindKernel(dir); err == nil {
			return k
		}
	}
	testutil.Missing(t, "needs a guest kernel: set BERTH_KERNEL or run scripts/fetch-kernel.sh")
	return Kernel{}
}

var (
	initOnce sync.Once
	initPath string
	initErr  error
)

// testInitramfs builds (once per test binary) an initramfs with the test
// init and the virtio, erofs and virtiofs modules of k.
func testInitramfs(t *testing.T, k Kernel) string {
	t.Helper()
	initOnce.Do(func() {
		dir, err := os.MkdirTemp("", "berth-vm-test-")
		if err != nil {
			initErr = err
			return
		}
		bin := filepath.Join(dir, "init")
		cmd := exec.Command("go", "build", "-o", bin, "./testdata/testinit")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			initErr = fmt.Errorf("building test init: %v: %s", err, out)
			return
		}
		entries := []cpioEntry{
			{name: "dev", mode: syscall.S_IFDIR | 0o755},
			{name: "dev/console", mode: syscall.S_IFCHR | 0o600, rdevMajor: 5, rdevMinor: 1},
			{name: "init", mode: syscall.S_IFREG | 0o755, src: bin},
			{name: "modules", mode: syscall.S_IFDIR | 0o755},
		}
		want := map[string]bool{}
		for _, m := range []string{"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
			"virtio_pci", "virtio_blk", "virtio_console", "libcrc32c", "erofs", "fuse", "virtiofs"} {
			want[m+".ko"] = true
		}
		filepath.Walk(k.Modules, func(p string, info os.FileInfo, err error) error {
			if err == nil && want[filepath.Base(p)] {
				entries = append(entries, cpioEntry{name: "modules/" + filepath.Base(p), mode: syscall.S_IFREG | 0o644, src: p})
			}
			return nil
		})
		initPath = filepath.Join(dir, "initramfs.cpio")
		initErr = writeCpio(initPath, entries)
	})
	if initErr != nil {
		t.Fatal(initErr)
	}
	return initPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if initPath != "" {
		os.RemoveAll(filepath.Dir(initPath))
	}
	os.Exit(code)
}

// cpioEntry is one file of a newc archive.
type cpioEntry struct {
	name                 string
	mode                 uint32
	src                  string // file contents, for regular files
	rdevMajor, rdevMinor uint32
}

// writeCpio writes a newc ("070701") archive, the kernel's initramfs format.
func writeCpio(path string, entries []cpioEntry) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	n := 0
	pad := func() {
		for n%4 != 0 {
			w.WriteByte(0)
			n++
		}
	}
	put := func(e cpioEntry, data []byte) {
		hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			len(entries)+1, e.mode, 0, 0, 1, 0, len(data), 0, 0, e.rdevMajor, e.rdevMinor, len(e.name)+1, 0)
		w.WriteString(hdr + e.name + "\x00")
		n += len(hdr) + len(e.name) + 1
		pad()
		w.Write(data)
		n += len(data)
		pad()
	}
	for _, e := range entries {
		var data []byte
		if e.src != "" {
			if data, err = os.ReadFile(e.src); err != nil {
				return err
			}
		}
		put(e, data)
	}
	put(cpioEntry{name: "TRAILER!!!"}, nil)
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}

// bootConfig is a VM config for the test init in mode.
func bootConfig(t *testing.T, mode string) Config {
	k := testKernel(t)
	accel, _ := DetectAccel()
	return Config{
		ID: strings.ReplaceAll(t.Name(), "/", "-"), Dir: t.TempDir(), Kernel: k,
		Initramfs: testInitramfs(t, k), Accel: accel,
		Append: []string{"berth.test=" + mode},
	}
}

// waitCtx bounds a guest test so that a broken guest fails instead of
// hanging the suite; it is a safety net, not a timing assertion.
func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// waitVM waits for v to end, or kills it when ctx ends.
func waitVM(ctx context.Context, t *testing.T, v *VM) error {
	t.Helper()
	select {
	case <-v.Exited():
	case <-ctx.Done():
		v.Kill()
		t.Fatalf("guest did not end; console:\n%s", v.ConsoleTail(30))
	}
	return v.Wait()
}

// assertGone checks that nothing of v is left after Cleanup.
func assertGone(t *testing.T, v *VM, cfg Config) {
	t.Helper()
	if err := v.Cleanup(); err != nil {
		t.Errorf("Cleanup: %v", err)
	}
	if err := v.Cleanup(); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
	if err := syscall.Kill(v.Pid(), 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("qemu pid %d still exists (kill 0: %v)", v.Pid(), err)
	}
	for _, h := range v.virtiofsd {
		if err := syscall.Kill(h.cmd.Process.Pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("virtiofsd pid %d still exists", h.cmd.Process.Pid)
		}
	}
	ents, _ := os.ReadDir(cfg.Dir)
	for _, e := range ents {
		if e.Name() != "console.log" && !strings.HasPrefix(e.Name(), "keep-") {
			t.Errorf("left behind in the VM directory: %s", e.Name())
		}
	}
}

// The guest boots, its init prints on the console and powers off; QEMU
// ends by itself, QMP reported SHUTDOWN from the guest.
func TestGuestPowersOff(t *testing.T) {
	t.Parallel()
	cfg := bootConfig(t, "poweroff")
	ctx := waitCtx(t)
	v, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Cleanup()
	var shutdown *qmp.Event
	for ev := range v.Events() {
		if ev.Name == qmp.EventShutdown {
			shutdown = &ev
		}
	}
	if err := waitVM(ctx, t, v); err != nil {
		t.Fatalf("Wait: %v\nconsole:\n%s", err, v.ConsoleTail(30))
	}
	if shutdown == nil {
		t.Fatal("no SHUTDOWN event")
	}
	if info, _ := shutdown.Shutdown(); !info.Guest || info.Reason != "guest-shutdown" {
		t.Errorf("SHUTDOWN = %+v", info)
	}
	if e := v.Exit(); e.Code != 0 || e.Shutdown != "guest-shutdown" {
		t.Errorf("Exit = %+v", e)
	}
	tail := v.ConsoleTail(5)
	if !strings.Contains(tail, "BERTH-TESTINIT-STARTED mode=poweroff") || !strings.Contains(tail, "BERTH-TESTINIT-POWEROFF") {
		t.Errorf("console tail lacks the markers:\n%s", tail)
	}
	assertGone(t, v, cfg)
}

// QEMU killed from outside: Wait says so; Cleanup leaves nothing.
func TestGuestKilledFromOutside(t *testing.T) {
	t.Parallel()
	cfg := bootConfig(t, "hang")
	scratch := filepath.Join(cfg.Dir, "scratch.img")
	if err := ScratchDisk(scratch, 64<<20); err != nil {
		t.Fatal(err)
	}
	cfg.Scratch = scratch
	ctx := waitCtx(t)
	v, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Cleanup()
	if st, err := v.QMP().QueryStatus(ctx); err != nil || !st.Running {
		t.Fatalf("QueryStatus = %+v, %v", st, err)
	}
	if err := syscall.Kill(v.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = waitVM(ctx, t, v)
	if err == nil || !strings.Contains(err.Error(), "killed by signal 9") || !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Wait = %v, want killed by signal 9", err)
	}
	if e := v.Exit(); e.Signal != syscall.SIGKILL || e.Code != -1 {
		t.Errorf("Exit = %+v", e)
	}
	if _, err := v.QMP().QueryStatus(ctx); !errors.Is(err, qmp.ErrClosed) {
		t.Errorf("QMP after kill = %v, want ErrClosed", err)
	}
	assertGone(t, v, cfg)
}

// An init that exits panics the kernel, which resets (panic=-1), which
// QEMU turns into its exit (-no-reboot): Wait reports it with the console.
func TestGuestInitExits(t *testing.T) {
	t.Parallel()
	cfg := bootConfig(t, "exit")
	ctx := waitCtx(t)
	v, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Cleanup()
	err = waitVM(ctx, t, v)
	if err == nil || !strings.Contains(err.Error(), "guest") {
		t.Fatalf("Wait = %v, want a guest reset or panic error\nconsole:\n%s", err, v.ConsoleTail(30))
	}
	// The panic line comes before the call trace, whose length varies.
	if tail := v.ConsoleTail(200); !strings.Contains(tail, "Attempted to kill init") {
		t.Errorf("console lacks the kernel panic:\n%s", tail)
	}
	assertGone(t, v, cfg)
}

// A start that QEMU refuses ends with QEMU's message and leaves nothing.
func TestStartFailureLeavesNothing(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		testutil.Missing(t, "needs qemu: qemu-system-x86_64 not on PATH")
	}
	t.Parallel()
	dir := t.TempDir()
	notKernel := filepath.Join(dir, "keep-not-a-kernel")
	os.WriteFile(notKernel, []byte("this is not a kernel"), 0o644)
	scratch := filepath.Join(dir, "scratch.img")
	if err := ScratchDisk(scratch, 16<<20); err != nil {
		t.Fatal(err)
	}
	cfg := Config{ID: "bad", Dir: dir, Kernel: Kernel{Path: notKernel}, Scratch: scratch, Accel: AccelTCG}
	_, err := Start(waitCtx(t), cfg)
	if err == nil || !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "qemu") {
		t.Fatalf("Start = %v", err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != "console.log" && !strings.HasPrefix(e.Name(), "keep-") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

// The disks, shares and agent port reach the guest: an EROFS layer from
// LayerDisk, an ext4 scratch disk, a read-write and a read-only virtio-fs
// share, and the agent socket.
func TestGuestDevices(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		testutil.Missing(t, "needs root: virtiofsd's namespace sandbox")
	}
	cfg := bootConfig(t, "devices")
	work := t.TempDir()
	snap := filepath.Join(work, "snap")
	os.MkdirAll(snap, 0o755)
	os.WriteFile(filepath.Join(snap, "hello"), []byte("from-layer\n"), 0o644)
	layer, err := LayerDisk(filepath.Join(work, "cache"), snap, "sha256:"+strings.Repeat("ab", 32))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Layers = []string{layer}
	cfg.Scratch = filepath.Join(cfg.Dir, "scratch.img")
	if err := ScratchDisk(cfg.Scratch, 64<<20); err != nil {
		t.Fatal(err)
	}
	share, ro := filepath.Join(work, "share"), filepath.Join(work, "ro")
	os.MkdirAll(share, 0o755)
	os.MkdirAll(ro, 0o755)
	os.WriteFile(filepath.Join(share, "in"), []byte("from-host\n"), 0o644)
	cfg.Shares = []Share{{Source: share, Tag: "share"}, {Source: ro, Tag: "ro", ReadOnly: true}}
	cfg.MemoryMiB = 192

	ctx := waitCtx(t)
	v, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Cleanup()
	conn, err := v.AgentConn()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "ping\n"); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(conn).ReadString('\n')
		got <- line
	}()
	select {
	case line := <-got:
		if line != "guest got ping\n" {
			t.Errorf("agent port answered %q\nconsole:\n%s", line, v.ConsoleTail(30))
		}
	case <-v.Exited():
		t.Errorf("guest ended before answering on the agent port\nconsole:\n%s", v.ConsoleTail(30))
	case <-ctx.Done():
		t.Errorf("no answer on the agent port\nconsole:\n%s", v.ConsoleTail(30))
	}
	if err := waitVM(ctx, t, v); err != nil {
		t.Fatalf("Wait: %v\nconsole:\n%s", err, v.ConsoleTail(30))
	}
	tail := v.ConsoleTail(20)
	for _, want := range []string{"BERTH-LAYER from-layer", "BERTH-SCRATCH ok", "BERTH-SHARE from-host",
		"BERTH-ROSHARE write-error=true", "BERTH-AGENT ok"} {
		if !strings.Contains(tail, want) {
			t.Errorf("console lacks %q:\n%s", want, tail)
		}
	}
	if b, err := os.ReadFile(filepath.Join(share, "out")); err != nil || string(b) != "from-guest\n" {
		t.Errorf("share/out = %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(ro, "denied")); err == nil {
		t.Error("the guest wrote into the read-only share")
	}
	assertGone(t, v, cfg)
	if _, err := os.Stat(layer); err != nil {
		t.Errorf("Cleanup removed the shared layer disk: %v", err)
	}
}
