package vm

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// BundleDisks builds in work the disks of a guest that runs an OCI
// bundle (berth-runtime's VM isolation) and returns the guest, its layers
// and the mounts it keeps: the bundle's root file system root as one
// EROFS disk, files bind-mounted by mounts (dockerd's /etc/hosts,
// /etc/hostname, /etc/resolv.conf) copied into a second EROFS disk above
// it, directories bind-mounted kept for virtio-fs. The guest's cache
// directory becomes work/cache: its initramfs/ and scratch templates are
// links to the shared cache (guest.CacheDir), its layers/ holds this VM's
// own disks. id names the VM in the disks' digests.
func BundleDisks(id, work string, guest Guest, root string, mounts []specs.Mount) (Guest, []Layer, []specs.Mount, error) {
	shared := guest.CacheDir
	cache := filepath.Join(work, "cache")
	if err := os.MkdirAll(filepath.Join(shared, "initramfs"), 0o700); err != nil {
		return guest, nil, nil, fmt.Errorf("guest cache: %w", bare(err))
	}
	if err := os.MkdirAll(filepath.Join(cache, "layers"), 0o700); err != nil {
		return guest, nil, nil, fmt.Errorf("guest disks: %w", bare(err))
	}
	links := []string{filepath.Join(shared, "initramfs")}
	tmpls, _ := filepath.Glob(filepath.Join(shared, "scratch-*.ext4"))
	links = append(links, tmpls...)
	for _, l := range links {
		if err := os.Symlink(l, filepath.Join(cache, filepath.Base(l))); err != nil {
			return guest, nil, nil, fmt.Errorf("guest cache: %w", bare(err))
		}
	}
	guest.CacheDir = cache
	// The bundle's disks are this VM's own: a template of it would serve
	// no other.
	guest.NoTemplates = true

	files := filepath.Join(work, "files")
	keep, nfiles, err := guestMounts(mounts, files)
	if err != nil {
		return guest, nil, nil, err
	}
	layers := []Layer{{Snapshot: root, Digest: diskDigest(id, "rootfs")}}
	if nfiles > 0 {
		layers = append(layers, Layer{Snapshot: files, Digest: diskDigest(id, "files")})
	}
	for _, l := range layers {
		if _, err := LayerDisk(filepath.Join(cache, "layers"), l.Snapshot, l.Digest); err != nil {
			return guest, nil, nil, fmt.Errorf("guest root disk: %w", err)
		}
	}
	os.RemoveAll(files)
	return guest, layers, keep, nil
}

// guestMounts sorts a spec's mounts for a guest: binds of directories
// stay (virtio-fs shares), binds of regular files are copied into files
// at their destination (n of them), and the rest is dropped: the guest
// makes its own /dev, /proc, /sys, cgroups and tmpfs mounts. A bind of
// something else (a device, a socket) is dropped too.
func guestMounts(mounts []specs.Mount, files string) (keep []specs.Mount, n int, err error) {
	for _, m := range mounts {
		if !agent.IsBindMount(m) || skipInGuest(m.Destination) {
			continue
		}
		fi, err := os.Stat(m.Source)
		if err != nil {
			return nil, 0, fmt.Errorf("mount %s: source %s: %w", m.Destination, m.Source, bare(err))
		}
		switch {
		case fi.IsDir():
			m.Type = "bind"
			keep = append(keep, m)
		case fi.Mode().IsRegular():
			if err := copyInto(files, m.Destination, m.Source, fi.Mode().Perm()); err != nil {
				return nil, 0, err
			}
			n++
		}
	}
	return keep, n, nil
}

// skipInGuest: destinations the guest makes itself (its own /dev, /proc,
// /sys, cgroups, shared memory and message queues).
func skipInGuest(dst string) bool {
	dst = filepath.Clean("/" + dst)
	for _, p := range []string{"/dev", "/proc", "/sys"} {
		if dst == p || strings.HasPrefix(dst, p+"/") {
			return true
		}
	}
	return false
}

// copyInto copies the file src to dir/dst, making dst's directories.
func copyInto(dir, dst, src string, mode fs.FileMode) error {
	clean := filepath.Clean("/" + dst)
	if clean == "/" {
		return fmt.Errorf("mount of file %s on /: %w", src, errdefs.ErrInvalid)
	}
	to := filepath.Join(dir, clean)
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return fmt.Errorf("mount %s: %w", dst, bare(err))
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("mount %s: source %s: %w", dst, src, bare(err))
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return fmt.Errorf("mount %s: %w", dst, bare(err))
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("mount %s: copy %s: %w", dst, src, err)
	}
	return out.Close()
}

// diskDigest names one of a VM's own disks: a random digest, so it never
// matches a cached image layer.
func diskDigest(id, what string) string {
	nonce := make([]byte, 16)
	rand.Read(nonce)
	h := sha256.Sum256([]byte(id + "\x00" + what + "\x00" + hex.EncodeToString(nonce)))
	return "sha256:" + hex.EncodeToString(h[:])
}

// bare drops the *PathError wrapper of an error whose message names the
// path already.
func bare(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
