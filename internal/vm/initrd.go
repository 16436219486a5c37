package vm

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/initramfs"
	"github.com/berth-dev/berth/internal/lockfile"
)

// Initramfs returns the guest's initramfs (berth-agent as /init and the
// kernel modules it loads), building it on first use. It is cached under
// g.CacheDir by the hash of everything that goes in, so a new agent or
// kernel gets a new one and the same inputs never build twice.
func Initramfs(g Guest) (string, error) {
	if g.Kernel.Modules == "" {
		return "", fmt.Errorf("kernel %s: no module directory (run scripts/fetch-kernel.sh): %w", g.Kernel.Path, errdefs.ErrUnavailable)
	}
	modules := g.Modules
	if modules == nil {
		modules = initramfs.DefaultModules
	}
	key, err := initramfsKey(g.Agent, g.Kernel, modules)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(g.CacheDir, "initramfs")
	path := filepath.Join(dir, key+".cpio")
	if _, err := os.Stat(path); err == nil {
		markUsed(path)
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	lock, err := lockfile.Open(path+".lock", unix.LOCK_EX)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if _, err := os.Stat(path); err == nil {
		return path, nil // built by someone else while we waited
	}
	files, err := initramfs.AgentImage(g.Agent, g.Kernel.Modules, modules)
	if err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, ".initramfs-")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if err := initramfs.Build(tmp, files); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", err
	}
	pruneInitramfs(dir, keptInitramfs)
	return path, nil
}

// keptInitramfs is how many initramfs builds the cache keeps: each new
// agent binary or kernel makes one (3 to 5 MB), and nothing else would
// ever remove the old ones.
const keptInitramfs = 4

// markUsed makes a cached build the most recently used (its mtime), so
// that pruning keeps the builds in use.
func markUsed(path string) {
	now := time.Now()
	_ = os.Chtimes(path, now, now)
}

// pruneInitramfs removes all but the keep most recently used builds in
// dir, with their lock files. A build in use by a starting VM was used
// just now, so it stays unless keep others were made or used since.
func pruneInitramfs(dir string, keep int) {
	paths, _ := filepath.Glob(filepath.Join(dir, "*.cpio"))
	type build struct {
		path string
		used time.Time
	}
	var builds []build
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil {
			builds = append(builds, build{p, fi.ModTime()})
		}
	}
	if len(builds) <= keep {
		return
	}
	slices.SortFunc(builds, func(a, b build) int { return b.used.Compare(a.used) })
	for _, b := range builds[keep:] {
		os.Remove(b.path)
		os.Remove(b.path + ".lock")
	}
}

// initramfsKey hashes the agent binary, the kernel's version and modules
// directory and the module list.
func initramfsKey(agentBin string, k Kernel, modules []string) (string, error) {
	f, err := os.Open(agentBin)
	if err != nil {
		return "", fmt.Errorf("guest agent %s: %w (build it with make build): %w", agentBin, err, errdefs.ErrUnavailable)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	fmt.Fprintf(h, "\x00%s\x00%s\x00%s", k.Version, k.Modules, strings.Join(modules, ","))
	return hex.EncodeToString(h.Sum(nil))[:32], nil
}
