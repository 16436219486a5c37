package vm

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/errdefs"
)

// fetchHint tells the user how to get a guest kernel.
const fetchHint = "fetch Debian's cloud kernel with scripts/fetch-kernel.sh, or pass --kernel PATH"

// Kernel is a guest kernel and its modules.
type Kernel struct {
	// Path is the kernel image (vmlinuz).
	Path string
	// Version is the kernel release ("6.1.0-56-cloud-amd64"), from the
	// image's name; "" when the name carries none.
	Version string
	// Modules is the kernel's lib/modules/VERSION directory; "" for a
	// user's kernel file that has none next to it (drivers built in).
	Modules string
}

// FindKernel locates a guest kernel. path is either a directory laid out
// like an unpacked Debian kernel package (vmlinuz-VERSION in it or in its
// boot/, and lib/modules/VERSION), berth's default ROOT/kernel; or a kernel
// image file (--kernel PATH), whose modules are looked up in lib/modules
// beside it or one level up, and may be absent. The newest version with
// modules wins. Missing pieces are errdefs.ErrUnavailable errors naming
// what is missing and how to fetch it.
func FindKernel(path string) (Kernel, error) {
	st, err := os.Stat(path)
	if err != nil {
		return Kernel{}, fmt.Errorf("guest kernel: %s does not exist; %s: %w", path, fetchHint, errdefs.ErrUnavailable)
	}
	if !st.IsDir() {
		return kernelFile(path)
	}
	var images []string
	for _, pat := range []string{"vmlinuz-*", "boot/vmlinuz-*"} {
		m, _ := filepath.Glob(filepath.Join(path, pat))
		images = append(images, m...)
	}
	if len(images) == 0 {
		return Kernel{}, fmt.Errorf("guest kernel: no vmlinuz-* in %s or %s/boot; %s: %w", path, path, fetchHint, errdefs.ErrUnavailable)
	}
	sort.Slice(images, func(i, j int) bool {
		return versionLess(kernelVersion(images[j]), kernelVersion(images[i]))
	})
	for _, img := range images {
		v := kernelVersion(img)
		mods := filepath.Join(path, "lib", "modules", v)
		if isDir(mods) {
			return Kernel{Path: img, Version: v, Modules: mods}, nil
		}
	}
	v := kernelVersion(images[0])
	return Kernel{}, fmt.Errorf("guest kernel %s: modules missing, no directory %s; %s: %w",
		images[0], filepath.Join(path, "lib", "modules", v), fetchHint, errdefs.ErrUnavailable)
}

// kernelFile is FindKernel for a kernel image file.
func kernelFile(path string) (Kernel, error) {
	k := Kernel{Path: path, Version: kernelVersion(path)}
	base := filepath.Dir(path)
	for _, root := range []string{base, filepath.Dir(base)} {
		dir := filepath.Join(root, "lib", "modules")
		if k.Version != "" {
			if isDir(filepath.Join(dir, k.Version)) {
				k.Modules = filepath.Join(dir, k.Version)
				return k, nil
			}
			continue
		}
		ents, err := os.ReadDir(dir)
		if err == nil && len(ents) == 1 && ents[0].IsDir() {
			k.Version = ents[0].Name()
			k.Modules = filepath.Join(dir, k.Version)
			return k, nil
		}
	}
	return k, nil
}

// kernelVersion is VERSION of ".../vmlinuz-VERSION", or "".
func kernelVersion(path string) string {
	v, ok := strings.CutPrefix(filepath.Base(path), "vmlinuz-")
	if !ok {
		return ""
	}
	return v
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// versionLess orders kernel versions by their numeric runs ("6.1.0-9" <
// "6.1.0-56").
func versionLess(a, b string) bool {
	for a != "" && b != "" {
		na, ra := leadingNumber(a)
		nb, rb := leadingNumber(b)
		switch {
		case na >= 0 && nb >= 0:
			if na != nb {
				return na < nb
			}
			a, b = ra, rb
		case a[0] != b[0]:
			return a[0] < b[0]
		default:
			a, b = a[1:], b[1:]
		}
	}
	return len(a) < len(b)
}

// leadingNumber splits a leading run of digits off s; -1 when there is none.
func leadingNumber(s string) (int, string) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return -1, s
	}
	n, err := strconv.Atoi(s[:i])
	if err != nil {
		return -1, s
	}
	return n, s[i:]
}
