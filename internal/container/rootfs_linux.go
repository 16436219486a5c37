package container

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/berth-dev/berth/internal/errdefs"
	"golang.org/x/sys/unix"
)

// All of this runs in the init, inside the container's new mount
// namespace, after / was made rprivate: nothing here reaches the host's
// mount table.

// mountRoot mounts the container's root file system: an overlay of the
// layers with DIR/upper and DIR/work at DIR/rootfs, or the spec's root
// path bound onto itself, as runc does (so an init in a user namespace,
// which may not search the runtime's state directory, never needs DIR).
func mountRoot(cfg *initConfig) (string, error) {
	if len(cfg.Layers) == 0 {
		root := cfg.RootPath
		if err := unix.Mount(root, root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return "", fmt.Errorf("root %q: bind: %w", root, err)
		}
		return root, nil
	}
	root := filepath.Join(cfg.Dir, "rootfs")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("root file system: %w", err)
	}
	upper, work := filepath.Join(cfg.Dir, "upper"), filepath.Join(cfg.Dir, "work")
	for _, d := range []string{upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", fmt.Errorf("overlay: %w", err)
		}
	}
	if err := mountOverlay(cfg.Layers, upper, work, root); err != nil {
		return "", err
	}
	return root, nil
}

// mountOverlay mounts the layers (lowest first) with upper and work at
// target. overlayfs wants the lowers top-first in one option string of at
// most a page; when absolute paths make it longer, the init changes into
// the layers' common parent and names them relative to it.
func mountOverlay(layers []string, upper, work, target string) error {
	lowers := slices.Clone(layers)
	slices.Reverse(lowers)
	for _, l := range append(slices.Clone(lowers), upper, work) {
		if !filepath.IsAbs(l) || strings.ContainsAny(l, ":,") {
			return fmt.Errorf("overlay layer %q: must be an absolute path without ':' or ',': %w", l, errdefs.ErrInvalid)
		}
	}
	opts := func(lowers []string) string {
		return "lowerdir=" + strings.Join(lowers, ":") + ",upperdir=" + upper + ",workdir=" + work
	}
	data := opts(lowers)
	if len(data) < os.Getpagesize() {
		if err := unix.Mount("overlay", target, "overlay", 0, data); err != nil {
			return fmt.Errorf("overlay of %d layers: %w", len(layers), err)
		}
		return nil
	}
	parent := commonDir(lowers)
	rel := make([]string, len(lowers))
	for i, l := range lowers {
		r, err := filepath.Rel(parent, l)
		if err != nil {
			return fmt.Errorf("overlay layer %q: %w", l, err)
		}
		rel[i] = r
	}
	data = opts(rel)
	if len(data) >= os.Getpagesize() {
		return fmt.Errorf("overlay of %d layers: the layer list is too long for one mount: %w", len(layers), errdefs.ErrNotSupported)
	}
	if err := unix.Chdir(parent); err != nil {
		return fmt.Errorf("overlay: chdir %q: %w", parent, err)
	}
	defer unix.Chdir("/")
	if err := unix.Mount("overlay", target, "overlay", 0, data); err != nil {
		return fmt.Errorf("overlay of %d layers: %w", len(layers), err)
	}
	return nil
}

// commonDir is the longest directory that contains every path.
func commonDir(paths []string) string {
	dir := filepath.Dir(paths[0])
	for _, p := range paths[1:] {
		for dir != "/" && !strings.HasPrefix(p, dir+"/") {
			dir = filepath.Dir(dir)
		}
	}
	return dir
}

// pivotRoot makes root the process's / and detaches the old root: with
// pivot_root(".", ".") the old root ends up stacked under the new one and
// a lazy unmount of "." removes it.
func pivotRoot(root string) error {
	if err := unix.Chdir(root); err != nil {
		return fmt.Errorf("pivot_root: chdir %q: %w", root, err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root %q: %w", root, err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("pivot_root: detach the old root: %w", err)
	}
	return unix.Chdir("/")
}

// maskPaths hides paths (after pivot_root): /dev/null over files, an
// empty read-only tmpfs over directories. Paths that do not exist are
// skipped.
func maskPaths(paths []string) error {
	for _, p := range paths {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("masked path %q: %w", p, unwrapErrno(err))
		}
		if fi.IsDir() {
			err = unix.Mount("tmpfs", p, "tmpfs", unix.MS_RDONLY, "size=0")
		} else {
			err = unix.Mount("/dev/null", p, "", unix.MS_BIND, "")
		}
		if err != nil {
			return fmt.Errorf("masked path %q: %w", p, err)
		}
	}
	return nil
}

// readonlyPaths binds each path onto itself read-only (after pivot_root).
func readonlyPaths(paths []string) error {
	for _, p := range paths {
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("read-only path %q: %w", p, err)
		}
		if err := remountBind(p, unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, true); err != nil {
			return fmt.Errorf("read-only path %q: %w", p, err)
		}
	}
	return nil
}

// readonlyRoot remounts / read-only (Spec.Root.Readonly).
func readonlyRoot() error {
	if err := remountBind("/", unix.MS_RDONLY, false); err != nil {
		return fmt.Errorf("read-only root: %w", err)
	}
	return nil
}

// setSysctls writes the spec's sysctls under /proc/sys (after pivot_root,
// so the container's /proc).
func setSysctls(sysctls map[string]string) error {
	for k, v := range sysctls {
		if k == "" || strings.Contains(k, "..") || strings.ContainsAny(k, "/") {
			return fmt.Errorf("sysctl %q: bad name: %w", k, errdefs.ErrInvalid)
		}
		p := "/proc/sys/" + strings.ReplaceAll(k, ".", "/")
		if err := os.WriteFile(p, []byte(v), 0); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", k, v, unwrapErrno(err))
		}
	}
	return nil
}
