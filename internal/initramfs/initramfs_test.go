package initramfs

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/testutil"
)

func sample(t *testing.T) []File {
	src := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(src, []byte("from the host\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return []File{
		{Path: "/usr/bin/tool", SourcePath: src, Mode: 0o755},
		{Path: "/init", Data: []byte("#!/bin/sh\necho hi\n"), Mode: 0o755},
		{Path: "bin/sh", Symlink: "../usr/bin/tool"},
		{Path: "/tmp", Dir: true, Mode: os.ModeSticky | 0o777},
		{Path: "/etc/odd", Data: []byte("abc")},
		{Path: "/dev/console", Mode: os.ModeDevice | os.ModeCharDevice | 0o600, Major: 5, Minor: 1},
	}
}

func build(t *testing.T, files []File) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := Build(&b, files); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestBuildReproducible(t *testing.T) {
	files := sample(t)
	a := build(t, files)
	slices.Reverse(files)
	if b := build(t, files); !bytes.Equal(a, b) {
		t.Fatal("same files in another order gave different archives")
	}
	if len(a)%512 != 0 {
		t.Errorf("archive of %d bytes is not padded to 512", len(a))
	}
}

func TestBuildReadableByCpio(t *testing.T) {
	cpio := "cpio"
	if _, err := exec.LookPath(cpio); err != nil {
		testutil.Missing(t, "needs cpio: not found on PATH")
	}
	arch := filepath.Join(t.TempDir(), "a.cpio")
	if err := os.WriteFile(arch, build(t, sample(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sh", "-c", "cpio -t --quiet < "+arch).CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v: %s", err, out)
	}
	want := "bin\nbin/sh\ndev\ndev/console\netc\netc/odd\ninit\ntmp\nusr\nusr/bin\nusr/bin/tool\n"
	if string(out) != want {
		t.Errorf("cpio -t listed\n%s\nwant\n%s", out, want)
	}
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", "cpio -id --quiet --no-absolute-filenames < "+arch)
	cmd.Dir = dir
	if os.Geteuid() != 0 {
		// Without root cpio cannot make the device node; list it only.
		cmd = exec.Command("sh", "-c", "cpio -id --quiet --no-absolute-filenames init etc/odd usr/bin/tool bin/sh < "+arch)
		cmd.Dir = dir
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -id: %v: %s", err, out)
	}
	check := func(p, content string, mode os.FileMode) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil || string(b) != content {
			t.Errorf("%s: %q %v", p, b, err)
		}
		if st, err := os.Stat(filepath.Join(dir, p)); err == nil && st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", p, st.Mode().Perm(), mode)
		}
	}
	check("init", "#!/bin/sh\necho hi\n", 0o755)
	check("usr/bin/tool", "from the host\n", 0o755)
	check("etc/odd", "abc", 0o644)
	if l, err := os.Readlink(filepath.Join(dir, "bin/sh")); err != nil || l != "../usr/bin/tool" {
		t.Errorf("bin/sh: %q %v", l, err)
	}
	if os.Geteuid() == 0 {
		st, err := os.Stat(filepath.Join(dir, "dev/console"))
		if err != nil || st.Mode()&os.ModeCharDevice == 0 {
			t.Errorf("dev/console: %v %v", st, err)
		}
	}
}

func TestBuildRefusesBadInput(t *testing.T) {
	for name, files := range map[string][]File{
		"dotdot":     {{Path: "../etc/passwd", Data: []byte("x")}},
		"duplicate":  {{Path: "/a", Data: []byte("x")}, {Path: "a", Data: []byte("y")}},
		"under file": {{Path: "/a", Data: []byte("x")}, {Path: "/a/b", Data: []byte("y")}},
		"root":       {{Path: "/", Dir: true}},
	} {
		if err := Build(&bytes.Buffer{}, files); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := Build(&bytes.Buffer{}, []File{{Path: "/x", SourcePath: "/no/such/file"}}); err == nil {
		t.Error("missing source file accepted")
	}
}

// kernelDir finds an unpacked Debian cloud kernel (scripts/fetch-kernel.sh).
func kernelDir(t *testing.T) string {
	for _, d := range []string{os.Getenv("BERTH_KERNEL_DIR"), "/var/lib/berth/kernel", "/var/lib/berth-kernel-dev"} {
		if d == "" {
			continue
		}
		if _, _, err := KernelModulesDir(d); err == nil {
			return d
		}
	}
	testutil.Missing(t, "needs a guest kernel: set BERTH_KERNEL_DIR or run scripts/fetch-kernel.sh /var/lib/berth/kernel")
	return ""
}

func TestAgentImageModuleOrder(t *testing.T) {
	_, md, err := KernelModulesDir(kernelDir(t))
	if err != nil {
		t.Fatal(err)
	}
	agent := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(agent, []byte("\x7fELF fake agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	files, err := AgentImage(agent, md, DefaultModules)
	if err != nil {
		t.Fatal(err)
	}
	var list string
	for _, f := range files {
		if f.Path == ModulesList {
			list = string(f.Data)
		}
	}
	var order []string
	for _, l := range strings.Split(strings.TrimSpace(list), "\n") {
		f := strings.Fields(l)
		name := strings.TrimSuffix(filepath.Base(f[0]), ".ko")
		for _, dep := range f[1:] {
			if !slices.Contains(order, dep) {
				t.Errorf("%s lists dependency %s, which is not before it", name, dep)
			}
		}
		order = append(order, name)
	}
	pos := func(m string) int {
		i := slices.Index(order, m)
		if i < 0 {
			t.Fatalf("module %s missing from %v", m, order)
		}
		return i
	}
	for _, dep := range [][2]string{
		{"virtio_ring", "virtio"}, {"virtio", "virtio_pci"}, {"virtio_pci_modern_dev", "virtio_pci"},
		{"virtio_pci_legacy_dev", "virtio_pci"}, {"virtio", "virtio_blk"}, {"virtio", "virtio_console"},
		{"fuse", "virtiofs"}, {"libcrc32c", "erofs"}, {"failover", "net_failover"}, {"net_failover", "virtio_net"},
		// vsock: the core, its virtio common part, then the transport.
		{"vsock", "vmw_vsock_virtio_transport_common"}, {"vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport"},
		{"vsock", "vmw_vsock_virtio_transport"}, {"virtio", "vmw_vsock_virtio_transport"}, {"virtio_ring", "vmw_vsock_virtio_transport"},
	} {
		if pos(dep[0]) > pos(dep[1]) {
			t.Errorf("%s must load before %s: %v", dep[0], dep[1], order)
		}
	}
	pos("overlay")
	t.Logf("module order: %s", strings.Join(order, " "))
	for _, f := range files {
		if strings.HasSuffix(f.Path, ".ko") && bytes.HasSuffix(f.Data, []byte(sigMagic)) {
			t.Errorf("%s keeps its signature", f.Path)
		}
	}

	if _, err := AgentImage(agent, md, []string{"no_such_module"}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("missing module: %v", err)
	}
	a, b := build(t, files), build(t, files)
	if !bytes.Equal(a, b) {
		t.Error("agent image not reproducible")
	}
}

func TestStripSignature(t *testing.T) {
	elf := []byte("\x7fELF module body")
	sig := []byte("PKCS7 signature bytes")
	info := make([]byte, 12)
	info[11] = byte(len(sig)) // struct module_signature: sig_len big-endian last
	signed := append(append(append(slices.Clone(elf), sig...), info...), sigMagic...)
	if got := stripSignature(signed); !bytes.Equal(got, elf) {
		t.Errorf("stripped to %q, want %q", got, elf)
	}
	if got := stripSignature(elf); !bytes.Equal(got, elf) {
		t.Errorf("unsigned module changed to %q", got)
	}
	bogus := append(slices.Clone(info), sigMagic...)
	bogus[11] = 200 // longer than the file
	if got := stripSignature(bogus); !bytes.Equal(got, bogus) {
		t.Errorf("a bad signature length cut the module")
	}
}
