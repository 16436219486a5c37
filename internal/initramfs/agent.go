package initramfs

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/internal/errdefs"
)

// ModulesList is where in the initramfs AgentImage writes the modules to
// insert, one per line, each after the modules it depends on: the
// module's archive path, then the names of the modules it depends on,
// separated by spaces. berth-agent reads it at boot; it may insert
// modules that do not depend on each other at the same time.
const ModulesList = "/etc/berth/modules"

// ModulesDir is the initramfs directory holding the (uncompressed) modules.
const ModulesDir = "/lib/modules"

// DefaultModules are the modules a berth guest needs from Debian's cloud
// kernel, which builds them as modules: virtio PCI transport, block disks
// (image layers, scratch), both agent channels (the console's
// virtio-serial ports, and vsock's virtio transport), the network card,
// overlayfs, EROFS and virtio-fs. Their dependencies are added by
// AgentImage.
var DefaultModules = []string{
	"virtio_pci", "virtio_blk", "virtio_console", "vmw_vsock_virtio_transport",
	"virtio_net", "overlay", "erofs", "virtiofs",
}

// AgentImage lists the files of a guest initramfs: agentBinary as /init,
// the named modules of the kernel whose module tree is kernelModulesDir
// (lib/modules/VERSION of an unpacked kernel package) together with every
// module they depend on, decompressed (.ko.gz here, .ko.xz and .ko.zst
// with the host's xz or zstd) and without their signatures, the
// ModulesList in dependency order, and /dev/console for the kernel's
// initial console. All of that is done once, on the host: the initramfs
// is cached.
//
// Dependencies come from each module's own .modinfo "depends=" field, so
// modules.dep (which Debian's package leaves to depmod) is not needed.
func AgentImage(agentBinary, kernelModulesDir string, modules []string) ([]File, error) {
	if _, err := os.Stat(agentBinary); err != nil {
		return nil, fmt.Errorf("initramfs: agent binary: %w", errdefs.ErrNotFound)
	}
	index, err := indexModules(kernelModulesDir)
	if err != nil {
		return nil, err
	}
	r := &resolver{index: index, data: map[string][]byte{}, deps: map[string][]string{}, state: map[string]int{}}
	for _, m := range modules {
		if err := r.visit(normName(m), nil); err != nil {
			return nil, err
		}
	}
	files := []File{
		{Path: "/init", SourcePath: agentBinary, Mode: 0o755},
		{Path: "/dev", Dir: true},
		{Path: "/dev/console", Mode: os.ModeDevice | os.ModeCharDevice | 0o600, Major: 5, Minor: 1},
		{Path: "/proc", Dir: true},
		{Path: "/sys", Dir: true},
		{Path: "/run", Dir: true},
		{Path: "/tmp", Dir: true, Mode: os.ModeSticky | 0o777},
		{Path: "/berth", Dir: true, Mode: 0o700},
	}
	var list strings.Builder
	for _, name := range r.order {
		p := ModulesDir + "/" + name + ".ko"
		files = append(files, File{Path: p, Data: r.data[name], Mode: 0o644})
		list.WriteString(strings.Join(append([]string{p}, r.deps[name]...), " ") + "\n")
	}
	files = append(files, File{Path: ModulesList, Data: []byte(list.String()), Mode: 0o644})
	return files, nil
}

// normName spells a module name as the kernel does (dashes are underscores).
func normName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// indexModules maps module names to their files under dir/kernel.
func indexModules(dir string) (map[string]string, error) {
	index := map[string]string{}
	root := filepath.Join(dir, "kernel")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		base := d.Name()
		for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
			if strings.HasSuffix(base, ext) {
				index[normName(strings.TrimSuffix(base, ext))] = p
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("initramfs: kernel modules in %s: %w", dir, errdefs.ErrNotFound)
	}
	return index, nil
}

// resolver orders modules depth-first, dependencies before dependents.
type resolver struct {
	index map[string]string
	data  map[string][]byte
	deps  map[string][]string
	state map[string]int // 1 visiting, 2 done
	order []string
}

func (r *resolver) visit(name string, chain []string) error {
	switch r.state[name] {
	case 2:
		return nil
	case 1:
		return fmt.Errorf("initramfs: module dependency cycle %s -> %s: %w", strings.Join(chain, " -> "), name, errdefs.ErrInvalid)
	}
	p, ok := r.index[name]
	if !ok {
		if len(chain) > 0 {
			return fmt.Errorf("initramfs: module %s (needed by %s) is not in the kernel's modules: %w", name, chain[len(chain)-1], errdefs.ErrNotFound)
		}
		return fmt.Errorf("initramfs: module %s is not in the kernel's modules: %w", name, errdefs.ErrNotFound)
	}
	r.state[name] = 1
	data, err := readModule(p)
	if err != nil {
		return err
	}
	deps, err := moduleDepends(data)
	if err != nil {
		return fmt.Errorf("initramfs: module %s: %w", p, err)
	}
	for _, d := range deps {
		if err := r.visit(d, append(chain, name)); err != nil {
			return err
		}
	}
	r.state[name] = 2
	r.data[name] = stripSignature(data)
	r.deps[name] = deps
	r.order = append(r.order, name)
	return nil
}

// readModule returns a module file's ELF bytes, decompressing it if needed.
func readModule(p string) ([]byte, error) {
	switch {
	case strings.HasSuffix(p, ".ko"):
		return os.ReadFile(p)
	case strings.HasSuffix(p, ".gz"):
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("initramfs: %s: %w", p, err)
		}
		return io.ReadAll(zr)
	}
	tool := "xz"
	if strings.HasSuffix(p, ".zst") {
		tool = "zstd"
	}
	var out, stderr bytes.Buffer
	cmd := exec.Command(tool, "-dc", p)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("initramfs: decompress %s with %s: %v: %s: %w", p, tool, err, strings.TrimSpace(stderr.String()), errdefs.ErrUnavailable)
	}
	return out.Bytes(), nil
}

// sigMagic ends a module that carries an appended signature.
const sigMagic = "~Module signature appended~\n"

// stripSignature returns a module without its appended signature. The
// kernel verifies a signature it finds (under software emulation that is
// a few milliseconds of hashing and RSA per module) but, unless
// module.sig_enforce is set, loads unsigned modules too; berth built the
// initramfs from the kernel's own package, so the check proves nothing.
//
// The layout is ELF, the PKCS#7 signature, a struct module_signature
// (12 bytes, the signature's length big-endian in its last 4) and the
// magic string.
func stripSignature(ko []byte) []byte {
	if !bytes.HasSuffix(ko, []byte(sigMagic)) {
		return ko
	}
	end := len(ko) - len(sigMagic)
	if end < 12 {
		return ko
	}
	sigLen := int(binary.BigEndian.Uint32(ko[end-4 : end]))
	if sigLen > end-12 {
		return ko
	}
	return ko[:end-12-sigLen]
}

// moduleDepends reads the "depends=" field of a module's .modinfo section.
func moduleDepends(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, fmt.Errorf("not an ELF module: %v: %w", err, errdefs.ErrInvalid)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("no .modinfo section: %w", errdefs.ErrInvalid)
	}
	info, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf(".modinfo: %v: %w", err, errdefs.ErrInvalid)
	}
	for _, kv := range bytes.Split(info, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var deps []string
			for _, d := range strings.Split(string(v), ",") {
				if d != "" {
					deps = append(deps, normName(d))
				}
			}
			return deps, nil
		}
	}
	return nil, nil
}

// KernelModulesDir returns lib/modules/VERSION inside an unpacked kernel
// package directory (as scripts/fetch-kernel.sh makes) for the kernel
// vmlinuz there, and that vmlinuz's path.
func KernelModulesDir(kernelDir string) (vmlinuz, modulesDir string, err error) {
	matches, _ := filepath.Glob(filepath.Join(kernelDir, "boot", "vmlinuz-*"))
	for _, m := range matches {
		version := strings.TrimPrefix(filepath.Base(m), "vmlinuz-")
		md := filepath.Join(kernelDir, "lib", "modules", version)
		if st, err := os.Stat(md); err == nil && st.IsDir() {
			return m, md, nil
		}
	}
	return "", "", fmt.Errorf("initramfs: no boot/vmlinuz-VERSION with lib/modules/VERSION in %s (run scripts/fetch-kernel.sh %s): %w", kernelDir, kernelDir, errdefs.ErrNotFound)
}
