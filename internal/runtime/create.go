package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/caps"
	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/lockfile"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// IsolationAnnotation selects the isolation level of a bundle
// ("container", the default, or "vm").
const IsolationAnnotation = "io.berth.isolation"

// CreateOptions are `create`'s flags.
type CreateOptions struct {
	ID            string
	Bundle        string // directory holding config.json; default the working directory
	PidFile       string
	ConsoleSocket string
	// Isolation is the global --isolation flag: "", "container" or "vm".
	Isolation string
	// Stdio is what the workload's fds 0-2 become (the caller's own for
	// the command line). Not used with process.terminal.
	Stdio container.Stdio
	// KeepConsole: with process.terminal and no console socket, hand the
	// terminal's master to the caller (CreateResult.Console) instead of failing.
	KeepConsole bool
}

// CreateResult is a container that waits for start.
type CreateResult struct {
	State *State
	// Console is the terminal's master with process.terminal; the caller
	// owns it (create forwards it to --console-socket and closes it).
	Console *os.File
}

// Create builds the container of a bundle up to the start of its workload
// and records it (the OCI "create" operation). The container's process is
// a child of the caller that outlives it; once started it is the workload
// itself. On failure nothing is left: no process, cgroup or state.
func (st *Store) Create(ctx context.Context, o CreateOptions) (_ *CreateResult, err error) {
	container.Prewarm()
	if err := CheckID(o.ID); err != nil {
		return nil, err
	}
	bundle := o.Bundle
	if bundle == "" {
		bundle = "."
	}
	bundle, err = filepath.Abs(bundle)
	if err != nil {
		return nil, fmt.Errorf("bundle %q: %w", o.Bundle, err)
	}
	spec, err := loadSpec(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, err
	}
	isolation, err := isolationOf(o.Isolation, spec)
	if err != nil {
		return nil, err
	}
	if isolation == instance.IsolationVM {
		return st.createVM(o, bundle, spec) // vm.go
	}
	if err := checkSpec(spec); err != nil {
		return nil, err
	}
	if spec.Process.Terminal && o.ConsoleSocket == "" && !o.KeepConsole {
		return nil, fmt.Errorf("process.terminal is set: --console-socket is required: %w", errdefs.ErrInvalid)
	}
	cgroup, err := cgroupPath(o.ID, spec.Linux.CgroupsPath)
	if err != nil {
		return nil, err
	}
	rootfs := spec.Root.Path
	if !filepath.IsAbs(rootfs) {
		rootfs = filepath.Join(bundle, rootfs)
	}
	spec.Root.Path = rootfs

	dir, lk, err := st.newDir(o.ID, spec)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	defer lk.Unlock()

	// The listener is bound through the directory's fd: state roots are
	// often deeper than a socket path may be long.
	listener, err := listenStart(dir)
	if err != nil {
		return nil, err
	}
	defer listener.Close()

	c, err := container.Create(ctx, &container.Config{
		ID:          o.ID,
		Spec:        spec,
		Dir:         dir,
		CgroupPath:  cgroup,
		CreateHooks: createHooks(o.ID, bundle, spec),
	}, o.Stdio)
	if err != nil {
		return nil, err
	}
	console := c.Console()
	if err := c.Detach(listener); err != nil {
		if console != nil {
			console.Close()
		}
		return nil, err
	}
	pid := c.Pid()
	s := &State{
		ID:          o.ID,
		Bundle:      bundle,
		Rootfs:      rootfs,
		Pid:         pid,
		PidStart:    instance.ProcStart(pid),
		Cgroup:      cgroup,
		Created:     time.Now().UTC(),
		Annotations: spec.Annotations,
		Resources:   spec.Linux.Resources,
		Isolation:   instance.IsolationContainer,
		Status:      instance.Created,
		Owner:       "root",
	}
	defer func() {
		if err != nil {
			unix.Kill(pid, unix.SIGKILL)
			container.Cleanup(cgroup)
			if console != nil {
				console.Close()
			}
		}
	}()
	if spec.Process.OOMScoreAdj != nil {
		adj := strconv.Itoa(*spec.Process.OOMScoreAdj)
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid), []byte(adj), 0); err != nil {
			return nil, fmt.Errorf("oom_score_adj %s: %w", adj, unwrap(err))
		}
	}
	if err := applyExtraResources(cgroup, spec.Linux.Resources); err != nil {
		return nil, err
	}
	if err := st.Save(s); err != nil {
		return nil, err
	}
	return finishCreate(o, s, console)
}

// finishCreate is create's last step for both isolations: the terminal's
// master to --console-socket, the pid to --pid-file.
func finishCreate(o CreateOptions, s *State, console *os.File) (*CreateResult, error) {
	if o.ConsoleSocket != "" && console != nil {
		if err := SendConsole(o.ConsoleSocket, console); err != nil {
			return nil, err
		}
	}
	if err := WritePidFile(o.PidFile, s.Pid); err != nil {
		return nil, err
	}
	return &CreateResult{State: s, Console: console}, nil
}

// createHooks is the engine's callback for a spec with create hooks:
// prestart and createRuntime run in the runtime's namespaces once the
// init has built the root, before it pivots into it; then the init runs
// createContainer's in the container's. nil without such hooks (no stop
// on the way).
func createHooks(id, bundle string, spec *specs.Spec) func(pid int) ([]byte, error) {
	if len(hooksOf(spec, HookPrestart))+len(hooksOf(spec, HookCreateRuntime))+len(hooksOf(spec, HookCreateContainer)) == 0 {
		return nil
	}
	return func(pid int) ([]byte, error) {
		state := specs.State{Version: specs.Version, ID: id, Status: specs.StateCreating,
			Pid: pid, Bundle: bundle, Annotations: spec.Annotations}
		for _, point := range []string{HookPrestart, HookCreateRuntime} {
			if err := runHooks(spec, point, state); err != nil {
				return nil, err
			}
		}
		return json.Marshal(state)
	}
}

// newDir makes the state directory of a new container, locked, with the
// bundle's config.json in it; a clash is ErrConflict. On failure nothing
// of it is left.
func (st *Store) newDir(id string, spec *specs.Spec) (dir string, lk *Lock, err error) {
	dir = st.Dir(id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return "", nil, fmt.Errorf("container %s already exists: %w", id, errdefs.ErrConflict)
		}
		return "", nil, fmt.Errorf("container %s: %w", id, unwrap(err))
	}
	if lk, err = st.lockNew(id); err == nil {
		if err = writeJSON(filepath.Join(dir, "config.json"), spec); err != nil {
			lk.Unlock()
		}
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return dir, lk, nil
}

// lockNew takes the lock of a container whose directory was just made.
func (st *Store) lockNew(id string) (*Lock, error) {
	f, err := lockfile.Open(filepath.Join(st.Dir(id), "lock"), unix.LOCK_EX)
	if err != nil {
		return nil, fmt.Errorf("container %s: lock: %w", id, unwrap(err))
	}
	return &Lock{f: f}, nil
}

// startAddr is the start listener's address as seen through an open fd
// of the state directory (short, whatever the directory's path).
func startAddr(dirfd int) string {
	return fmt.Sprintf("/proc/self/fd/%d/start.sock", dirfd)
}

// listenStart makes the container's start listener in dir.
func listenStart(dir string) (*os.File, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", unwrap(err))
	}
	defer d.Close()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: startAddr(int(d.Fd())), Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("start listener: %w", err)
	}
	l.SetUnlinkOnClose(false)
	defer l.Close()
	f, err := l.File()
	if err != nil {
		return nil, fmt.Errorf("start listener: %w", err)
	}
	return f, nil
}

// isolationOf is the bundle's isolation level, "container" or "vm": the
// --isolation flag when given, else the io.berth.isolation annotation,
// else container.
func isolationOf(flag string, spec *specs.Spec) (string, error) {
	level := flag
	if a := spec.Annotations[IsolationAnnotation]; a != "" && level == "" {
		level = a
	}
	switch level {
	case "", "container":
		return instance.IsolationContainer, nil
	case "vm":
		return instance.IsolationVM, nil
	}
	return "", fmt.Errorf("isolation %q: want container or vm: %w", level, errdefs.ErrInvalid)
}

// checkSpec refuses bundles the engine cannot run, with one clear line.
func checkSpec(spec *specs.Spec) error {
	if spec.Process == nil || len(spec.Process.Args) == 0 {
		return fmt.Errorf("bundle config: process.args is empty: %w", errdefs.ErrInvalid)
	}
	if spec.Root == nil || spec.Root.Path == "" {
		return fmt.Errorf("bundle config: root.path is empty: %w", errdefs.ErrInvalid)
	}
	if spec.Linux == nil {
		return fmt.Errorf("bundle config: no linux section: %w", errdefs.ErrInvalid)
	}
	// An unknown capability fails create, not start (as in runc).
	if c := spec.Process.Capabilities; c != nil {
		for _, set := range [][]string{c.Bounding, c.Effective, c.Permitted, c.Inheritable, c.Ambient} {
			for _, name := range set {
				if _, err := caps.Parse(name); err != nil {
					return fmt.Errorf("bundle config: %w", err)
				}
			}
		}
	}
	// berth applies no LSM labels or profiles: refusing them beats
	// running the workload unconfined behind the caller's back.
	if spec.Process.ApparmorProfile != "" {
		return fmt.Errorf("bundle config: process.apparmorProfile %q: AppArmor is not supported yet: %w", spec.Process.ApparmorProfile, errdefs.ErrNotSupported)
	}
	if spec.Process.SelinuxLabel != "" || spec.Linux.MountLabel != "" {
		return fmt.Errorf("bundle config: SELinux labels are not supported yet: %w", errdefs.ErrNotSupported)
	}
	return nil
}

// cgroupPath is the container's cgroup: linux.cgroupsPath when given
// (relative paths are taken from the hierarchy root), /berth-runtime/ID
// otherwise. systemd's "slice:prefix:name" form is refused.
func cgroupPath(id, p string) (string, error) {
	if p == "" {
		return "/berth-runtime/" + id, nil
	}
	if strings.Contains(p, ":") {
		return "", fmt.Errorf("cgroupsPath %q: systemd cgroup paths are not supported: %w", p, errdefs.ErrNotSupported)
	}
	c := filepath.Clean("/" + p)
	if c == "/" {
		return "", fmt.Errorf("cgroupsPath %q: the root cgroup: %w", p, errdefs.ErrInvalid)
	}
	return c, nil
}
