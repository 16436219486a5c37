package vm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/berth-dev/berth/internal/errdefs"
)

// DefaultDataRoot is berth's default data root; its kernel/ directory is
// the last place a guest kernel is looked for.
const DefaultDataRoot = "/var/lib/berth"

// FindGuestKernel locates the guest kernel for a program whose data root
// is dataRoot: kernel when given (a --kernel flag), else BERTH_KERNEL,
// else dataRoot/kernel, else /var/lib/berth/kernel. The error is the
// first place's.
func FindGuestKernel(kernel, dataRoot string) (Kernel, error) {
	if kernel == "" {
		kernel = os.Getenv("BERTH_KERNEL")
	}
	if kernel != "" {
		return FindKernel(kernel)
	}
	var firstErr error
	for _, dir := range []string{filepath.Join(dataRoot, "kernel"), filepath.Join(DefaultDataRoot, "kernel")} {
		k, err := FindKernel(dir)
		if err == nil {
			return k, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return Kernel{}, firstErr
}

// FindAgent locates the berth-agent binary: BERTH_AGENT, next to the
// running program (the berth or berth-runtime binary), then
// /usr/local/lib/berth and /usr/lib/berth.
func FindAgent() (string, error) {
	candidates := []string{os.Getenv("BERTH_AGENT")}
	self, err := os.Executable()
	if err == nil {
		candidates = append(candidates, filepath.Join(filepath.Dir(self), "berth-agent"))
	}
	candidates = append(candidates, "/usr/local/lib/berth/berth-agent", "/usr/lib/berth/berth-agent")
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() {
			return c, nil
		}
	}
	name := "berth"
	if self != "" {
		name = filepath.Base(self)
	}
	return "", fmt.Errorf("guest agent berth-agent not found next to %s or in /usr/local/lib/berth (make install builds it): %w", name, errdefs.ErrUnavailable)
}

// FindGuest locates everything a guest needs: QEMU, the kernel (see
// FindGuestKernel), the agent (see FindAgent), the accelerator and the
// agent's transport (DetectTransport; BERTH_VM_TRANSPORT=vsock on a host
// without vhost-vsock is an error here, before anything is made). Its
// caches live in dataRoot/vm.
func FindGuest(kernel, dataRoot string) (Guest, error) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return Guest{}, fmt.Errorf("qemu-system-x86_64 not found: install Debian's qemu-system-x86: %w", errdefs.ErrUnavailable)
	}
	cacheDir := filepath.Join(dataRoot, "vm")
	version, err := qemuVersion(qemu, cacheDir)
	if err != nil {
		return Guest{}, err
	}
	k, err := FindGuestKernel(kernel, dataRoot)
	if err != nil {
		return Guest{}, err
	}
	agentBin, err := FindAgent()
	if err != nil {
		return Guest{}, err
	}
	transport, _, err := DetectTransport()
	if err != nil {
		return Guest{}, err
	}
	accel, _ := DetectAccel()
	return Guest{Kernel: k, Agent: agentBin, CacheDir: cacheDir, Accel: accel, Transport: transport, QEMUVersion: version}, nil
}
