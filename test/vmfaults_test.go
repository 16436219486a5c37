package test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/caps"
	"github.com/berth-dev/berth/internal/testutil"
)

// Faults of a VM instance: each ends with one clear error line (or, for a
// detached instance, a recorded exit status and an error in inspect), and
// leaves nothing behind: no QEMU or virtiofsd of the instance, no socket,
// no scratch disk, and for --rm no instance directory.

// instanceProcs lists the QEMU and virtiofsd processes whose command line
// names the instance (QEMU's -name berth-ID, virtiofsd's socket in the
// instance directory).
func instanceProcs(id string) []string {
	var found []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmd, id) && (strings.Contains(cmd, "qemu-system") || strings.Contains(cmd, "virtiofsd")) {
			found = append(found, e.Name()+": "+cmd)
		}
	}
	return found
}

// assertNothingLeft checks that the instance left no process, socket or
// scratch disk, and with removed, no directory at all.
func assertNothingLeft(t *testing.T, id string, removed bool) {
	t.Helper()
	if id == "" {
		t.Fatal("instance ID unknown")
	}
	if p := instanceProcs(id); len(p) > 0 {
		t.Errorf("processes of instance %s left: %v", id[:12], p)
	}
	dir := filepath.Join(berthRoot, "instances", id)
	if removed {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			ents, _ := os.ReadDir(dir)
			t.Errorf("--rm instance directory %s left (%v)", dir, ents)
		}
		return
	}
	socks, _ := filepath.Glob(filepath.Join(dir, "*.sock"))
	imgs, _ := filepath.Glob(filepath.Join(dir, "*.img"))
	if len(socks)+len(imgs) > 0 {
		t.Errorf("left in %s: %v %v", dir, socks, imgs)
	}
}

// watchInstance finds the ID of the instance called name while berth
// creates and runs it (a --rm instance has no record once berth is done).
// The returned function stops watching and returns the ID, "" if none was
// seen.
func watchInstance(name string) func() string {
	done := make(chan struct{})
	idc := make(chan string, 1)
	go func() {
		id := ""
		defer func() { idc <- id }()
		for {
			if id = findInstance(name); id != "" {
				return
			}
			select {
			case <-done:
				id = findInstance(name)
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	return func() string {
		close(done)
		return <-idc
	}
}

func findInstance(name string) string {
	states, _ := filepath.Glob(filepath.Join(berthRoot, "instances", "*", "state.json"))
	for _, p := range states {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var rec struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		}
		if json.Unmarshal(b, &rec) == nil && rec.Name == name {
			return filepath.Base(filepath.Dir(p))
		}
	}
	return ""
}

// oneErrorLine checks that stderr is exactly one line of berth's and that
// it holds every one of wants.
func oneErrorLine(t *testing.T, what, stderr string, wants ...string) {
	t.Helper()
	s := strings.TrimSpace(stderr)
	t.Logf("%s: %s", what, s)
	if s == "" || strings.Contains(s, "\n") || !strings.HasPrefix(s, "berth ") {
		t.Fatalf("%s: want one error line from berth, got %q", what, stderr)
	}
	for _, w := range wants {
		if !strings.Contains(s, w) {
			t.Errorf("%s: error %q does not mention %q", what, s, w)
		}
	}
}

// A privileged workload (what `docker run --privileged --runtime
// berth-vm` hands berth-runtime: every capability, no seccomp filter, no
// masked or read-only paths, every device) owns its guest, as a
// privileged container owns its host; berth's workloads are confined
// (the behaviour table), so the faults below are provoked through such
// a bundle under berth-runtime's VM isolation, the way an operator would
// meet them. The guest's end must still be berth's to report and clean
// up after.

// privilegedVM is what a test of a privileged VM needs: berth-runtime,
// a state root, an ID made of name, and a VM bundle running script as a
// privileged container would, without a pid namespace of its own when
// hostPID (the guest's agent is then its PID 1, as the host's init is
// that of `docker run --pid host`). It skips where guests cannot boot.
func privilegedVM(t *testing.T, name string, hostPID bool, script string) (rt, root, id, bundle string) {
	t.Helper()
	needRuntimeVM(t)
	rt, root, id = berthRuntime(t), runtimeRoot(t), fmt.Sprintf("%s%d", name, os.Getpid())
	bundle = vmBundle(t, rt, func(spec map[string]any) {
		var all []string
		for n := 0; n <= 40; n++ { // CAP_CHECKPOINT_RESTORE, the guest kernel's last
			if c := caps.Name(n); c != "" {
				all = append(all, c)
			}
		}
		proc := spec["process"].(map[string]any)
		proc["capabilities"] = map[string]any{"bounding": all, "effective": all, "permitted": all}
		proc["noNewPrivileges"] = false
		lin := spec["linux"].(map[string]any)
		for _, k := range []string{"seccomp", "maskedPaths", "readonlyPaths"} {
			delete(lin, k)
		}
		lin["resources"] = map[string]any{"devices": []any{map[string]any{"allow": true, "access": "rwm"}}}
		if hostPID {
			var nss []any
			for _, ns := range lin["namespaces"].([]any) {
				if ns.(map[string]any)["type"] != "pid" {
					nss = append(nss, ns)
				}
			}
			lin["namespaces"] = nss
		}
	}, "sh", "-c", script)
	return rt, root, id, bundle
}

// runToPanic runs a privileged VM (privilegedVM) whose script brings its
// guest down: berth-runtime run must end with 137, the script's stdout,
// one error line of its own holding every one of wants, and nothing
// left: no owner, QEMU or virtiofsd, no work directory (sockets,
// disks), no cgroup, no state.
func runToPanic(t *testing.T, name string, hostPID bool, script, stdout string, wants ...string) {
	t.Helper()
	rt, root, id, bundle := privilegedVM(t, name, hostPID, script)
	r := runCmd(t, nil, rt, "--root", root, "run", "--bundle", bundle, id)
	if r.code != 137 || r.stdout != stdout {
		t.Fatalf("exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	s := strings.TrimSpace(r.stderr)
	t.Logf("%s: %s", name, s)
	if s == "" || strings.Contains(s, "\n") || !strings.HasPrefix(s, "berth-runtime: ") {
		t.Fatalf("%s: want one error line from berth-runtime, got %q", name, r.stderr)
	}
	for _, w := range wants {
		if !strings.Contains(s, w) {
			t.Errorf("%s: error %q does not mention %q", name, s, w)
		}
	}
	checkNoVMLeftovers(t, id, filepath.Join(root, id))
}

// A kernel panic in the guest mid-run (sysrq "c", which a privileged
// workload may trigger) ends berth-runtime run with 137 and one error
// line naming the panic, and leaves nothing.
func TestVMFaultGuestPanic(t *testing.T) {
	t.Parallel()
	// The pause lets the agent pass "before" on: output still in the
	// guest's pipe when the kernel dies is lost with it.
	runToPanic(t, "vmpanic", false, "echo before; sleep 1; echo c > /proc/sysrq-trigger; sleep 100; echo after",
		"before\n", "guest kernel panicked", "sysrq triggered crash")
}

// The agent (the guest's PID 1) dying mid-run panics the guest kernel
// ("Attempted to kill init"): the run ends with 137 and one error line
// naming it, and nothing is left.
func TestVMFaultAgentDies(t *testing.T) {
	t.Parallel()
	// Signals cannot kill the agent (the kernel spares the guest's init
	// any signal it does not handle); a privileged workload overwriting
	// its code through /proc/1/mem can: the agent faults at once. The
	// agent is a static Go binary whose text starts at 0x401000: page
	// 1025. SIGURG, which the Go runtime handles (so the kernel delivers
	// it to an init), runs its handler at once rather than at the idle
	// agent's next wake-up.
	runToPanic(t, "vmagent", true, "read -r c </proc/1/comm; echo $c; sleep 1; dd if=/dev/zero of=/proc/1/mem bs=4096 seek=1025 count=256 conv=notrunc 2>/dev/null; kill -URG 1; sleep 100; echo after",
		"init\n", "guest kernel panicked", "Attempted to kill init")
}

// The workload cannot kill its PID 1, berth's init with --init, with
// signals: the kernel protects init only from signals it does not
// handle, and the init filters what its namespace sends. The workload
// runs on and ends normally. (The guest's agent, which this once sent
// them to, is out of the workload's pid namespace now.)
func TestVMSignalsToAgent(t *testing.T) {
	img := busybox(t)
	needVM(t)
	t.Parallel()
	r := berth(t, "run", "--rm", "--vm", "--init", img, "sh", "-c",
		"for s in TERM INT HUP QUIT USR1 USR2 ABRT SEGV BUS FPE ILL TRAP SYS PIPE ALRM VTALRM PROF XCPU XFSZ "+
			"TSTP TTIN TTOU STOP CONT WINCH URG IO PWR STKFLT KILL 32 33 34 40 64; do kill -$s 1 || echo $s refused; done; "+
			"sleep 1; echo still here")
	if r.code != 0 || r.stdout != "still here\n" {
		t.Fatalf("exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
}

// fakeKernel lays out a kernel directory like an unpacked Debian package,
// with the guest kernel's image and modules, but virtio_console's
// version magic altered: the guest kernel refuses it (bad signature or
// bad version magic), so the agent fails at boot, before it can serve,
// and powers off.
func fakeKernel(t *testing.T) string {
	t.Helper()
	kdir := "/var/lib/berth/kernel"
	if k := os.Getenv("BERTH_KERNEL"); k != "" {
		kdir = k
	}
	images, _ := filepath.Glob(filepath.Join(kdir, "boot", "vmlinuz-*"))
	if len(images) == 0 {
		t.Skip("needs the guest kernel laid out as boot/vmlinuz-VERSION and lib/modules/VERSION")
	}
	ver := strings.TrimPrefix(filepath.Base(images[0]), "vmlinuz-")
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "boot"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(images[0], filepath.Join(dir, "boot", filepath.Base(images[0]))); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(kdir, "lib", "modules", ver)
	dst := filepath.Join(dir, "lib", "modules", ver)
	tampered := false
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		if d.Name() != "virtio_console.ko" {
			return os.Symlink(p, to)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		old := []byte(" SMP preempt ")
		if !bytes.Contains(b, old) {
			t.Skipf("%s: no %q in its vermagic", p, old)
		}
		tampered = true
		return os.WriteFile(to, bytes.Replace(b, old, []byte(" SMP xreempt "), 1), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !tampered {
		t.Skip("the guest kernel has no uncompressed virtio_console.ko")
	}
	return dir
}

// A guest that never reaches the agent: a kernel whose modules do not
// load. The error comes as soon as the guest powers off (not after the
// boot timeout) and carries the console's tail.
func TestVMFaultNoAgent(t *testing.T) {
	img := busybox(t)
	needVM(t)
	t.Parallel()
	kernel := fakeKernel(t)
	id := watchInstance("vmnoagent")
	r := berth(t, "run", "--rm", "--vm", "--name", "vmnoagent", "--kernel", kernel, img, "true")
	iid := id()
	if r.code != 125 {
		t.Fatalf("exit %d, want 125; stderr %q", r.code, r.stderr)
	}
	oneErrorLine(t, "no agent", r.stderr, "the guest stopped before its agent answered", "console:", "berth-agent: boot failed", "virtio_console")
	if strings.ContainsAny(r.stderr, "\x1b\r") {
		t.Errorf("the error carries the console's control characters: %q", r.stderr)
	}
	assertNothingLeft(t, iid, true)

	// A kernel image without modules is refused before any guest boots.
	bare := filepath.Join(t.TempDir(), "vmlinuz")
	images, _ := filepath.Glob(filepath.Join(kernel, "boot", "vmlinuz-*"))
	if err := os.Symlink(images[0], bare); err != nil {
		t.Fatal(err)
	}
	r = berth(t, "run", "--rm", "--vm", "--kernel", bare, img, "true")
	if r.code != 125 {
		t.Fatalf("kernel without modules: exit %d, stderr %q", r.code, r.stderr)
	}
	oneErrorLine(t, "kernel without modules", r.stderr, bare, "module")
}

// QEMU killed from outside while the guest boots, before its agent
// answers: berth notices at once and says so.
func TestVMFaultQEMUKilledAtBoot(t *testing.T) {
	img := busybox(t)
	needVM(t)
	t.Parallel()
	cmd := exec.Command(berthBin, "--root", berthRoot, "run", "--rm", "--vm", "--name", "vmbootkill", img, "true")
	// A kernel boot, whose seconds leave room to kill QEMU in; a clone of
	// a template runs its workload a few hundred milliseconds after QEMU
	// starts.
	cmd.Env = append(os.Environ(), "BERTH_VM_TEMPLATE=off")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer func() {
		cmd.Process.Kill()
		<-done
	}()
	var id string
	var seen time.Time
	killed := false
	for deadline := time.Now().Add(90 * time.Second); !killed && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		select {
		case <-done:
			t.Fatalf("berth ended before QEMU was seen: stderr %q", stderr.String())
		default:
		}
		if id == "" {
			id = findInstance("vmbootkill")
			continue
		}
		for _, p := range instanceProcs(id) {
			if !strings.Contains(p, "qemu-system") {
				continue
			}
			// QEMU is up; shortly after, it is resumed and the guest
			// boots (which takes seconds under emulation, and on KVM may
			// be done before this looks: the test then skips).
			if seen.IsZero() {
				seen = time.Now()
			}
			if time.Since(seen) < 300*time.Millisecond {
				continue
			}
			pid, _ := strconv.Atoi(p[:strings.Index(p, ":")])
			if status(t, id) != "created" {
				t.Skip("the guest came up before QEMU could be killed")
			}
			syscall.Kill(pid, syscall.SIGKILL)
			killed = true
		}
	}
	if !killed {
		t.Fatal("QEMU of the instance never seen")
	}
	select {
	case <-done:
	case <-time.After(90 * time.Second):
		t.Fatal("berth still runs after its QEMU was killed")
	}
	if code := cmd.ProcessState.ExitCode(); code != 125 {
		t.Fatalf("exit %d, want 125; stderr %q", code, stderr.String())
	}
	// Killed during the QMP handshake or while the guest boots: either
	// way one line saying how QEMU ended.
	oneErrorLine(t, "QEMU killed at boot", stderr.String(), "qemu was killed by signal 9")
	assertNothingLeft(t, id, true)
}

// bigLayer writes a gzip layer holding /big, size bytes of zeros, into the
// layout as a blob, streaming (the test never holds the file), and returns
// its descriptor and diff ID.
func bigLayer(t *testing.T, b *testutil.LayoutBuilder, size int64) (ocispec.Descriptor, digest.Digest) {
	t.Helper()
	tmp, err := os.CreateTemp(filepath.Join(b.Dir, "blobs", "sha256"), ".big-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(tmp.Name())
	blobHash, diffHash := sha256.New(), sha256.New()
	var n countWriter
	zw := gzip.NewWriter(io.MultiWriter(tmp, blobHash, &n))
	tw := tar.NewWriter(io.MultiWriter(zw, diffHash))
	if err := tw.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: testutil.Epoch}); err != nil {
		t.Fatal(err)
	}
	zeros := make([]byte, 1<<20)
	for left := size; left > 0; {
		k := min(left, int64(len(zeros)))
		if _, err := tw.Write(zeros[:k]); err != nil {
			t.Fatal(err)
		}
		left -= k
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tmp.Close(); err != nil {
		t.Fatal(err)
	}
	d := digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(blobHash.Sum(nil)))
	if err := os.Rename(tmp.Name(), b.BlobPath(d)); err != nil {
		t.Fatal(err)
	}
	diffID := digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(diffHash.Sum(nil)))
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: int64(n)}, diffID
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// An image far larger than guest RAM runs: its layers are block devices,
// not copied into the guest; a second run reuses the cached layer disk.
func TestVMBigImage(t *testing.T) {
	busybox(t) // the shared root is set up
	needVM(t)
	t.Parallel()
	const size = 1 << 30
	bb, err := os.ReadFile(testutil.BusyboxPath)
	if err != nil {
		t.Skip(err)
	}
	entries := []testutil.TarEntry{testutil.Dir("bin", 0o755), testutil.File("bin/busybox", string(bb), 0o755)}
	for _, a := range []string{"sh", "dd", "grep"} {
		entries = append(entries, testutil.Symlink("bin/"+a, "busybox"))
	}
	b := testutil.NewLayout(t)
	small := testutil.LayerBlob(t, testutil.Layer{Entries: entries, Compression: testutil.Gzip})
	smallDesc := b.AddBlob(small.Data, small.Desc.MediaType)
	bigDesc, bigDiff := bigLayer(t, b, size)
	cfg := testutil.ImageConfig(testutil.ImageOptions{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/bin"}},
		[]digest.Digest{small.DiffID, bigDiff})
	b.Tag(b.AddManifest(cfg, []ocispec.Descriptor{smallDesc, bigDesc}), "big")
	layout := b.Write()
	must(t, "image", "import", "--name", "vmbig", layout)
	defer berth(t, "image", "rm", "vmbig")

	// skip MiB are skipped: the second run reads only the file's end.
	run := func(skip int) {
		t.Helper()
		// dd, not cat | wc: busybox wc counts byte by byte, which
		// software emulation makes minutes for a GiB.
		r := berth(t, "run", "--rm", "--vm", "--memory", "256m", "vmbig", "sh", "-c",
			"dd if=/big of=/dev/null bs=1M skip="+strconv.Itoa(skip)+" && grep MemTotal /proc/meminfo")
		if r.code != 0 {
			t.Fatalf("exit %d stderr %q", r.code, r.stderr)
		}
		if want := strconv.Itoa(size>>20-skip) + "+0 records in"; !strings.Contains(r.stderr, want) {
			t.Fatalf("dd did not read the whole file (want %q): %q", want, r.stderr)
		}
		f := strings.Fields(r.stdout)
		if len(f) != 3 || f[0] != "MemTotal:" || f[2] != "kB" {
			t.Fatalf("stdout %q", r.stdout)
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		if kb <= 0 || kb*1024 >= size {
			t.Fatalf("guest RAM %d kB is not smaller than the %d-byte file", kb, size)
		}
	}
	run(0)
	disk := filepath.Join(berthRoot, "vm", "layers", "sha256-"+bigDiff.Encoded()+".erofs")
	st1, err := os.Stat(disk)
	if err != nil {
		t.Fatalf("the layer's cached disk: %v", err)
	}
	run(size>>20 - 1)
	st2, err := os.Stat(disk)
	if err != nil {
		t.Fatalf("the layer's cached disk after a second run: %v", err)
	}
	i1, i2 := st1.Sys().(*syscall.Stat_t), st2.Sys().(*syscall.Stat_t)
	if i1.Ino != i2.Ino || !st1.ModTime().Equal(st2.ModTime()) {
		t.Fatalf("the second run rebuilt the layer disk: inode %d -> %d, mtime %v -> %v", i1.Ino, i2.Ino, st1.ModTime(), st2.ModTime())
	}
}
