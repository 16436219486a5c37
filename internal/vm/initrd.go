package vm

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/initramfs"
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
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return "", err
	}
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
	return path, nil
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
