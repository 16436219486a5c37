package vm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/sockpath"
	"github.com/berth-dev/berth/internal/testutil"
)

func TestDetectAccel(t *testing.T) {
	ok := hostFacts{cpuVirt: "vmx", kvmModules: []string{"kvm", "kvm_intel"}}
	pvm := hostFacts{cpuVirt: "", kvmModules: []string{"kvm_pvm"}}
	for _, tc := range []struct {
		name   string
		facts  hostFacts
		want   Accel
		reason string
	}{
		{"hardware kvm", ok, AccelKVM, "CPU has vmx"},
		{"amd", hostFacts{cpuVirt: "svm", kvmModules: []string{"kvm_amd"}}, AccelKVM, "svm"},
		{"no /dev/kvm", hostFacts{kvmOpenErr: fs.ErrNotExist, cpuVirt: "vmx"}, AccelTCG, "/dev/kvm unusable"},
		{"kvm_pvm", pvm, AccelTCG, "kvm_pvm"},
		{"kvm_pvm with vmx", hostFacts{cpuVirt: "vmx", kvmModules: []string{"kvm_pvm"}}, AccelTCG, "kvm_pvm"},
		{"no vmx", hostFacts{kvmModules: []string{"kvm"}}, AccelTCG, "no vmx or svm"},
		{"forced tcg", hostFacts{override: "tcg", cpuVirt: "vmx"}, AccelTCG, "BERTH_ACCEL=tcg"},
		{"forced kvm", hostFacts{override: "kvm", kvmModules: []string{"kvm_pvm"}}, AccelKVM, "BERTH_ACCEL=kvm"},
		{"bad override", hostFacts{override: "xen", kvmModules: []string{"kvm_pvm"}}, AccelTCG, `BERTH_ACCEL="xen" ignored`},
	} {
		got, why := detectAccel(tc.facts)
		if got != tc.want || !strings.Contains(why, tc.reason) {
			t.Errorf("%s: detectAccel = %s, %q; want %s, ~%q", tc.name, got, why, tc.want, tc.reason)
		}
	}
}

// On this host the answer must come back (never hang) and be one of two.
func TestDetectAccelHost(t *testing.T) {
	a, why := DetectAccel()
	if (a != AccelKVM && a != AccelTCG) || why == "" {
		t.Fatalf("DetectAccel = %q, %q", a, why)
	}
	t.Logf("accelerator %s: %s", a, why)
}

func TestCPUVirtFlag(t *testing.T) {
	p := filepath.Join(t.TempDir(), "cpuinfo")
	os.WriteFile(p, []byte("processor\t: 0\nflags\t\t: fpu vme svm sse\n\nprocessor\t: 1\n"), 0o644)
	if f, err := cpuVirtFlag(p); f != "svm" || err != nil {
		t.Errorf("cpuVirtFlag = %q, %v", f, err)
	}
	os.WriteFile(p, []byte("flags\t\t: fpu hypervisor\n"), 0o644)
	if f, _ := cpuVirtFlag(p); f != "" {
		t.Errorf("cpuVirtFlag = %q, want none", f)
	}
}

func touch(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFindKernel(t *testing.T) {
	d := t.TempDir()
	_, err := FindKernel(filepath.Join(d, "nope"))
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "scripts/fetch-kernel.sh") {
		t.Errorf("missing dir: %v", err)
	}
	_, err = FindKernel(d)
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "no vmlinuz-*") {
		t.Errorf("empty dir: %v", err)
	}
	touch(t, filepath.Join(d, "boot/vmlinuz-6.1.0-9-cloud-amd64"))
	_, err = FindKernel(d)
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "lib/modules/6.1.0-9-cloud-amd64") {
		t.Errorf("no modules: %v", err)
	}
	os.MkdirAll(filepath.Join(d, "lib/modules/6.1.0-9-cloud-amd64"), 0o755)
	touch(t, filepath.Join(d, "boot/vmlinuz-6.1.0-56-cloud-amd64"))
	os.MkdirAll(filepath.Join(d, "lib/modules/6.1.0-56-cloud-amd64"), 0o755)
	touch(t, filepath.Join(d, "boot/vmlinuz-6.1.0-99-cloud-amd64")) // no modules: skipped
	k, err := FindKernel(d)
	want := Kernel{Path: filepath.Join(d, "boot/vmlinuz-6.1.0-56-cloud-amd64"), Version: "6.1.0-56-cloud-amd64",
		Modules: filepath.Join(d, "lib/modules/6.1.0-56-cloud-amd64")}
	if err != nil || k != want {
		t.Errorf("FindKernel = %+v, %v; want %+v", k, err, want)
	}
	// A --kernel file: modules one level up, found by version.
	k, err = FindKernel(want.Path)
	if err != nil || k != want {
		t.Errorf("FindKernel(file) = %+v, %v", k, err)
	}
	// A file with a custom name and no modules: drivers built in.
	own := filepath.Join(t.TempDir(), "bzImage")
	touch(t, own)
	if k, err := FindKernel(own); err != nil || k != (Kernel{Path: own}) {
		t.Errorf("FindKernel(own) = %+v, %v", k, err)
	}
}

func TestVersionLess(t *testing.T) {
	vs := []string{"6.1.0-56-cloud-amd64", "6.1.0-9-cloud-amd64", "5.10.0-1-amd64", "6.10.0-1-amd64", "6.1.0-56-cloud-amd64+x"}
	slices.SortFunc(vs, func(a, b string) int {
		if versionLess(a, b) {
			return -1
		}
		if versionLess(b, a) {
			return 1
		}
		return 0
	})
	want := []string{"5.10.0-1-amd64", "6.1.0-9-cloud-amd64", "6.1.0-56-cloud-amd64", "6.1.0-56-cloud-amd64+x", "6.10.0-1-amd64"}
	if !slices.Equal(vs, want) {
		t.Errorf("sorted = %v", vs)
	}
}

func TestCommandLine(t *testing.T) {
	cfg := Config{
		ID: "abc", Dir: "/run/b,x", Kernel: Kernel{Path: "/k/vmlinuz"}, Initramfs: "/k/init.cpio",
		MemoryMiB: 512, CPUs: 2, Layers: []string{"/c/l0.erofs", "/c/l1.erofs"}, Scratch: "/run/b,x/scratch.img",
		Shares: []Share{{Source: "/h", Tag: "vol0"}}, Accel: AccelTCG, Append: []string{"berth.debug=1"},
		QEMU: "/usr/bin/qemu-system-x86_64", Firmware: "/q/qboot.rom",
	}
	got := strings.Join(CommandLine(cfg), " ")
	want := "/usr/bin/qemu-system-x86_64 -name berth-abc,process=berth-abc -M q35 -accel tcg,tb-size=256 -cpu max -smp 2 -m 512M" +
		" -nodefaults -no-user-config -nographic -no-reboot -S" +
		" -add-fd fd=5,set=5 -chardev file,id=console,path=/dev/fdset/5,append=on -serial chardev:console" +
		" -chardev socket,id=qmp,fd=3,server=on,wait=off -mon chardev=qmp,mode=control" +
		" -kernel /k/vmlinuz -append console=ttyS0 quiet panic=-1 berth.port=agent berth.debug=1" +
		" -sandbox on,obsolete=deny,spawn=deny,resourcecontrol=deny -runas 65534:65534 -chroot /run/b,x/qemu-root" +
		" -initrd /k/init.cpio -bios /q/qboot.rom" +
		" -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem" +
		" -device virtio-serial-pci,id=vser0,max_ports=2 -chardev socket,id=agent,fd=4,server=on,wait=off" +
		" -device virtserialport,bus=vser0.0,chardev=agent,id=agentport,name=agent" +
		" -add-fd fd=7,set=7 -drive file=/dev/fdset/7,if=none,id=layer0,format=raw,readonly=on -device virtio-blk-pci,drive=layer0,serial=layer0" +
		" -add-fd fd=8,set=8 -drive file=/dev/fdset/8,if=none,id=layer1,format=raw,readonly=on -device virtio-blk-pci,drive=layer1,serial=layer1" +
		" -add-fd fd=9,set=9 -add-fd fd=10,set=9" +
		" -drive file=/dev/fdset/9,if=none,id=scratch,format=raw,discard=unmap -device virtio-blk-pci,drive=scratch,serial=scratch" +
		" -chardev socket,id=fs0,fd=6 -device vhost-user-fs-pci,chardev=fs0,tag=vol0"
	if got != want {
		t.Errorf("CommandLine =\n%s\nwant\n%s", got, want)
	}

	// KVM, defaults, no shares: host CPU, 256 MiB without a memfd backend.
	got = strings.Join(CommandLine(Config{Dir: "/d", Kernel: Kernel{Path: "/k"}, Accel: AccelKVM}), " ")
	for _, want := range []string{"-M q35 -accel kvm ", "-cpu host ", "-smp 1 ", "-m 256M ", "path=/dev/fdset/5,append=on "} {
		if !strings.Contains(got, want) {
			t.Errorf("KVM command line lacks %q: %s", want, got)
		}
	}
	for _, not := range []string{"memory-backend", "-initrd", "virtio-blk", "vhost-user", "-bios", "-incoming"} {
		if strings.Contains(got, not) {
			t.Errorf("KVM command line has %q: %s", not, got)
		}
	}

	// A template being made: RAM in a shared file. A clone: the same
	// file copy-on-write, and the saved state to load.
	tmpl := Config{Dir: "/d", Kernel: Kernel{Path: "/k"}, RAMFile: "/t,1/ram", SaveTo: "/t,1/state"}
	got = strings.Join(CommandLine(tmpl), " ")
	if want := " -object memory-backend-file,id=mem,size=256M,mem-path=/t,,1/ram,share=on -machine memory-backend=mem "; !strings.Contains(got, want) || strings.Contains(got, "-incoming") {
		t.Errorf("template command line lacks %q or has -incoming: %s", want, got)
	}
	tmpl.RAMPrivate, tmpl.SaveTo, tmpl.RestoreFrom = true, "", "/t,1/state"
	got = strings.Join(CommandLine(tmpl), " ")
	for _, want := range []string{",share=off -machine memory-backend=mem ", " -incoming defer"} {
		if !strings.Contains(got, want) {
			t.Errorf("clone command line lacks %q: %s", want, got)
		}
	}
}

func needTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		testutil.Missing(t, "needs %s (apt-get install erofs-utils e2fsprogs)", name)
	}
}

// Concurrent callers build a layer's disk once, and later callers reuse it.
func TestLayerDiskBuiltOnce(t *testing.T) {
	needTool(t, "mkfs.erofs")
	real, _ := exec.LookPath("mkfs.erofs")
	bin := t.TempDir()
	count := filepath.Join(bin, "count")
	wrapper := fmt.Sprintf("#!/bin/sh\necho run >> %s\nexec %s \"$@\"\n", count, real)
	if err := os.WriteFile(filepath.Join(bin, "mkfs.erofs"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))

	snap := t.TempDir()
	os.WriteFile(filepath.Join(snap, "f"), []byte("data"), 0o644)
	os.Mkdir(filepath.Join(snap, "d"), 0o755)
	cache := filepath.Join(t.TempDir(), "layers")
	dgst := "sha256:" + strings.Repeat("0f", 32)
	var wg sync.WaitGroup
	paths := make([]string, 4)
	for i := range paths {
		wg.Go(func() {
			p, err := LayerDisk(cache, snap, dgst)
			if err != nil {
				t.Error(err)
			}
			paths[i] = p
		})
	}
	wg.Wait()
	if p, err := LayerDisk(cache, snap, dgst); err != nil || p != paths[0] {
		t.Errorf("second LayerDisk = %q, %v", p, err)
	}
	want := filepath.Join(cache, "sha256-"+strings.Repeat("0f", 32)+".erofs")
	for _, p := range paths {
		if p != want {
			t.Errorf("path = %q, want %q", p, want)
		}
	}
	runs, _ := os.ReadFile(count)
	if n := strings.Count(string(runs), "run"); n != 1 {
		t.Errorf("mkfs.erofs ran %d times, want 1", n)
	}
	b, _ := os.ReadFile(want)
	if len(b) < 1028 || string(b[1024:1028]) != "\xe2\xe1\xf5\xe0" {
		t.Errorf("%s is not an EROFS image", want)
	}
	ents, _ := os.ReadDir(cache)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".tmp") {
			t.Errorf("temp file left: %s", e.Name())
		}
	}
}

func TestLayerDiskErrors(t *testing.T) {
	needTool(t, "mkfs.erofs")
	cache := t.TempDir()
	for _, d := range []string{"", "sha256:../../x", "sha256:abc", "SHA256:" + strings.Repeat("a", 64)} {
		if _, err := LayerDisk(cache, t.TempDir(), d); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("digest %q: %v", d, err)
		}
	}
	_, err := LayerDisk(cache, filepath.Join(cache, "missing"), "sha256:"+strings.Repeat("a", 64))
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("missing snapshot: %v", err)
	}
	ents, _ := os.ReadDir(cache)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".erofs") || strings.HasPrefix(e.Name(), ".tmp") {
			t.Errorf("left in cache: %s", e.Name())
		}
	}
}

func TestScratchDisk(t *testing.T) {
	needTool(t, "mkfs.ext4")
	d := t.TempDir()
	p := filepath.Join(d, "scratch.img")
	if err := ScratchDisk(p, 1<<30); err != nil {
		t.Fatal(err)
	}
	checkExt4(t, p, 1<<30)
	if err := ScratchDisk(p, 1<<30); err == nil {
		t.Error("ScratchDisk over an existing file succeeded")
	}
	if err := ScratchDisk(filepath.Join(d, "zero"), 0); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("size 0: %v", err)
	}

	cache := filepath.Join(d, "cache")
	// A first-version template of the same size goes when the new one
	// is made.
	os.MkdirAll(cache, 0o700)
	old := filepath.Join(cache, "scratch-1073741824.ext4")
	os.WriteFile(old, nil, 0o600)
	for i := range 2 {
		q := filepath.Join(d, fmt.Sprintf("cached%d.img", i))
		if err := ScratchDiskCached(cache, q, 1<<30); err != nil {
			t.Fatal(err)
		}
		checkExt4(t, q, 1<<30)
	}
	if _, err := os.Stat(old); err == nil {
		t.Errorf("%s left", old)
	}
}

// checkExt4 checks p is a sparse ext4 image of size bytes that fsck accepts.
func checkExt4(t *testing.T, p string, size int64) {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != size {
		t.Errorf("%s: size %d, want %d", p, st.Size(), size)
	}
	if used := diskUsage(st); used > size/10 {
		t.Errorf("%s: %d bytes allocated, not sparse", p, used)
	}
	if out, err := exec.Command("e2fsck", "-n", "-f", p).CombinedOutput(); err != nil {
		t.Errorf("e2fsck %s: %v\n%s", p, err, out)
	}
	// No journal; the overlay's directories are there.
	if out, err := exec.Command("dumpe2fs", "-h", p).CombinedOutput(); err != nil || strings.Contains(string(out), "has_journal") {
		t.Errorf("dumpe2fs %s: %v (want no has_journal)\n%s", p, err, out)
	}
	out, err := exec.Command("debugfs", "-R", "ls -l /", p).CombinedOutput()
	for _, d := range []string{" upper", " work"} {
		if err != nil || !strings.Contains(string(out), "40755") || !strings.Contains(string(out), d) {
			t.Errorf("debugfs %s: %v: no directory%s\n%s", p, err, d, out)
		}
	}
}

func TestLongSocketPath(t *testing.T) {
	dir := t.TempDir()
	long := filepath.Join(dir, strings.Repeat("d", 60), strings.Repeat("e", 60))
	os.MkdirAll(long, 0o755)
	sock := filepath.Join(long, "agent.sock")
	if len(sock) <= sockpath.Max {
		t.Fatalf("path %d bytes is not long enough for the test", len(sock))
	}
	f, err := listenFile(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := dialUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// QEMU dying while berth connects to its QMP socket (killed from outside,
// here by a stand-in that kills itself) ends Start with one line that
// says so, and leaves nothing behind.
func TestStartQEMUKilled(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	qemu := filepath.Join(dir, "keep-qemu")
	if err := os.WriteFile(qemu, []byte("#!/bin/sh\nkill -KILL $$\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	kernel := filepath.Join(dir, "keep-vmlinuz")
	if err := os.WriteFile(kernel, []byte("not used"), 0o644); err != nil {
		t.Fatal(err)
	}
	scratch := filepath.Join(dir, "scratch.img")
	if err := os.WriteFile(scratch, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Start(context.Background(), Config{ID: "killed", Dir: dir, Kernel: Kernel{Path: kernel}, Scratch: scratch, QEMU: qemu})
	if err == nil || !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Start = %v", err)
	}
	msg := err.Error()
	t.Logf("error: %s", msg)
	if !strings.Contains(msg, "qemu was killed by signal 9 (killed) while starting") || strings.Contains(msg, "\n") {
		t.Errorf("error %q: want one line saying QEMU was killed", msg)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != "console.log" && !strings.HasPrefix(e.Name(), "keep-") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

func TestSplitDigest(t *testing.T) {
	hex64 := strings.Repeat("ab12", 16)
	for d, want := range map[string]bool{
		"sha256:" + hex64:                    true,
		"sha512:" + hex64 + hex64:            true,
		"sha256:" + hex64[:31]:               false, // too short
		"sha256:" + strings.Repeat("a", 129): false,
		"SHA256:" + hex64:                    false,
		"sha256:" + strings.ToUpper(hex64):   false,
		"sha/256:" + hex64:                   false,
		":" + hex64:                          false,
		"sha256" + hex64:                     false,
		"sha256:../" + hex64:                 false,
	} {
		if _, _, ok := splitDigest(d); ok != want {
			t.Errorf("splitDigest(%q) ok = %v, want %v", d, ok, want)
		}
	}
}

// The initramfs cache keeps the most recently used builds only.
func TestPruneInitramfs(t *testing.T) {
	dir := t.TempDir()
	base := time.Now().Add(-time.Hour)
	for i := 0; i < 6; i++ {
		p := filepath.Join(dir, fmt.Sprintf("build%d.cpio", i))
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(p+".lock", nil, 0o600)
		at := base.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
	}
	markUsed(filepath.Join(dir, "build0.cpio")) // the oldest, used now
	pruneInitramfs(dir, 4)
	for i, want := range []bool{true, false, false, true, true, true} {
		p := filepath.Join(dir, fmt.Sprintf("build%d.cpio", i))
		_, err := os.Stat(p)
		_, lerr := os.Stat(p + ".lock")
		if (err == nil) != want || (lerr == nil) != want {
			t.Errorf("build%d: kept %v (lock %v), want %v", i, err == nil, lerr == nil, want)
		}
	}
}

// TestVirtiofsdArgs: virtiofsd starts with no_new_privs and a bounding
// set of what it serves with and what its sandbox needs; a read-only
// share's serves with CAP_DAC_READ_SEARCH alone.
func TestVirtiofsdArgs(t *testing.T) {
	rw := strings.Join(virtiofsdArgs("/sp", "/vfsd", Share{Source: "/s", Tag: "t"}), " ")
	for _, want := range []string{
		"/sp --nnp --inh-caps=-all --bounding-set=-all,+chown,+dac_override,+fowner,+fsetid,+setgid,+setuid,+mknod,+setfcap,+sys_admin,+setpcap -- /vfsd --fd=3",
		"-o source=/s -o sandbox=namespace", "--rlimit-nofile=",
	} {
		if !strings.Contains(rw, want) {
			t.Errorf("read-write share: %q lacks %q", rw, want)
		}
	}
	if strings.Contains(rw, "modcaps") {
		t.Errorf("read-write share: %q modifies virtiofsd's capabilities", rw)
	}
	ro := strings.Join(virtiofsdArgs("/sp", "/vfsd", Share{Source: "/s", Tag: "t", ReadOnly: true}), " ")
	for _, want := range []string{
		"--bounding-set=-all,+dac_read_search,+sys_admin,+setpcap --",
		"-o modcaps=-chown:-dac_override:-fowner:-fsetid:-setgid:-setuid:-mknod:-setfcap:+dac_read_search",
	} {
		if !strings.Contains(ro, want) {
			t.Errorf("read-only share: %q lacks %q", ro, want)
		}
	}
}
