package container

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Init is a container's init started ahead of the container's
// configuration (Prestart), for a caller with work of its own to do
// first: berth run starts it, then resolves the image and writes its
// records while the init process starts (about 2 ms here: the clone into
// new namespaces, the exec, the Go runtime). Create takes it through
// Config.Init when the container it creates has the namespaces and
// terminal setting the init was started with; otherwise Create starts an
// init of its own. Close ends an init Create did not take.
type Init struct {
	flags    uintptr
	terminal bool
	seccomp  *specs.LinuxSeccomp
	filter   chan compiled // seccomp compiled, from Prestart on
	cgroup   string        // v2: the cgroup the init was cloned into (PrestartIn)

	mu       sync.Mutex
	cmd      *exec.Cmd
	parent   *os.File
	taken    bool        // by Create or Close
	premount *initConfig // what Premount built, nil before
}

// Prestart starts the init of a container whose namespaces and terminal
// setting are spec's and whose stdio is stdio, and compiles spec's
// seccomp profile in the background (nothing else of spec is used). It
// returns once the init is exec'd; its start-up then runs beside the
// caller's work. It starts nothing where the init could
// not be taken (on a cgroup v2 host, where the init is cloned into its
// cgroup; with user namespaces, joined namespaces or no mount
// namespace). A failed start is not reported: Create starts an init of
// its own and reports what fails.
func Prestart(spec *specs.Spec, stdio Stdio) *Init {
	return prestart(spec, stdio, "")
}

// PrestartIn is Prestart for a container whose cgroup, cgroupPath,
// exists already: on cgroup v2 the init is cloned into it, and Create
// takes the init for a container of that cgroup. berth-agent starts the
// workload's init so before its guest is saved as a template, so that
// its clones find it started.
func PrestartIn(spec *specs.Spec, stdio Stdio, cgroupPath string) *Init {
	return prestart(spec, stdio, cgroupPath)
}

func prestart(spec *specs.Spec, stdio Stdio, cgroupPath string) *Init {
	in := &Init{}
	joins, flags, hostMount, _, err := namespacePlan(spec)
	if err != nil || len(joins) > 0 || hostMount || len(spec.Linux.UIDMappings) > 0 {
		return in
	}
	cgfd := -1
	if cgroups.DetectMode() == cgroups.ModeV2 {
		if cgroupPath == "" {
			return in
		}
		cg, err := cgroups.New(cgroupPath)
		if err != nil {
			return in
		}
		if cgfd, _, err = cg.FD(); err != nil {
			return in
		}
		defer unix.Close(cgfd)
		in.cgroup = cgroupPath
	}
	in.flags, in.terminal = flags, spec.Process.Terminal
	in.seccomp, in.filter = spec.Linux.Seccomp, compileAsync(spec.Linux.Seccomp)
	// The configuration's encoder is built in the meantime too (see
	// warmConfig for the decoder's side).
	go json.Marshal(&initConfig{Spec: initSpec(spec), StartFilter: []byte{0}})
	// Here, not on a goroutine: the clone and exec take a fraction of a
	// millisecond, after which the init's start (the exec'd binary, the
	// Go runtime) runs beside the caller. A new goroutine could wait for
	// a thread longer than that at a process's start.
	if cmd, parent, err := launchInit(false, nil, flags, spec, stdio, cgfd); err == nil {
		in.cmd, in.parent = cmd, parent
	}
	return in
}

// Settle waits, at most timeout, until what Prestart set going is done:
// the seccomp program compiled, and the init started and idle, waiting
// for its configuration (its main thread in recvmsg on its socket, its
// CPU time still). berth-agent settles the init it prestarts in a
// template's guest before the guest is saved, so that no clone of it
// pays for the rest of the init's start.
func (in *Init) Settle(timeout time.Duration) {
	if in == nil {
		return
	}
	deadline := time.After(timeout)
	if in.filter != nil {
		select {
		case f := <-in.filter:
			in.filter <- f
		case <-deadline:
			return
		}
	}
	in.mu.Lock()
	cmd := in.cmd
	in.mu.Unlock()
	if cmd == nil {
		return
	}
	pid := cmd.Process.Pid
	waiting := fmt.Sprintf("%d %#x ", unix.SYS_RECVMSG, stageSocketFD)
	last := ""
	for {
		sc, err := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid))
		if err != nil {
			return
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		cpu := ""
		if i := bytes.LastIndexByte(st, ')'); i > 0 {
			if f := strings.Fields(string(st[i+1:])); len(f) > 13 {
				cpu = f[11] + " " + f[12] // utime, stime
			}
		}
		if strings.HasPrefix(string(sc), waiting) && cpu == last {
			return
		}
		last = cpu
		select {
		case <-deadline:
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Premount has the init build, ahead of its configuration, the part of
// its container's root that no workload changes: / made private (or
// slave, as spec's rootfsPropagation asks), the root at spec.Root.Path
// bound onto itself, spec's mounts, and, when /dev is one of them, its
// nodes (the default devices and spec's). berth-agent premounts berth's
// standard mounts in a template's guest, so that its clones only make
// their own. Create then takes the init only for a container of that
// root, propagation, devices and cgroup (cgroupPath, for the cgroup
// mount) whose mounts begin with spec's and add none under /dev
// (premountFits); any other ends it and starts an init of its own.
func (in *Init) Premount(spec *specs.Spec, cgroupPath string) error {
	if in == nil {
		return fmt.Errorf("premount: no init: %w", errdefs.ErrUnavailable)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.cmd == nil || in.taken || in.premount != nil {
		return fmt.Errorf("premount: the init is not waiting for it: %w", errdefs.ErrConflict)
	}
	if spec.Root == nil || !filepath.IsAbs(spec.Root.Path) {
		return fmt.Errorf("premount: root path must be absolute: %w", errdefs.ErrInvalid)
	}
	lin := &specs.Linux{}
	if spec.Linux != nil {
		lin.Devices, lin.RootfsPropagation = spec.Linux.Devices, spec.Linux.RootfsPropagation
	}
	pre := &initConfig{
		Spec:       &specs.Spec{Root: &specs.Root{Path: spec.Root.Path}, Mounts: spec.Mounts, Linux: lin},
		RootPath:   spec.Root.Path,
		CgroupPath: cgroupPath,
		NewNet:     in.flags&unix.CLONE_NEWNET != 0,
		Premount:   true,
	}
	ch, err := newChannel(in.parent)
	if err == nil {
		err = ch.send(pre)
	}
	var m message
	if err == nil {
		err = ch.recv(&m)
	}
	if err == nil && m.Type != msgPremounted {
		err = errorFromMessage(&m)
	}
	if err != nil {
		// The init exits on a failed premount; its mounts go with it.
		in.taken = true
		in.cmd.Process.Kill()
		in.cmd.Wait()
		in.parent.Close()
		return fmt.Errorf("premount: %w", err)
	}
	traceStamps("init", m.Trace)
	in.premount = pre
	return nil
}

// premountFits says whether cfg is a container that the root and mounts
// pre built fit (see Init.Premount), and why not.
func premountFits(pre, cfg *initConfig) error {
	spec, n := cfg.Spec, len(pre.Spec.Mounts)
	switch {
	case len(cfg.Layers) > 0 || cfg.HostMount || cfg.RootPath != pre.RootPath:
		return fmt.Errorf("the root is not %s", pre.RootPath)
	case cfg.CgroupPath != pre.CgroupPath || cfg.NewNet != pre.NewNet:
		return errors.New("another cgroup or network namespace")
	case spec.Linux.RootfsPropagation != pre.Spec.Linux.RootfsPropagation:
		return errors.New("another rootfs propagation")
	case len(spec.Mounts) < n || !sameJSON(spec.Mounts[:n], pre.Spec.Mounts):
		return errors.New("other mounts")
	}
	if hasMount(pre.Spec.Mounts, "/dev") {
		if !sameJSON(spec.Linux.Devices, pre.Spec.Linux.Devices) {
			return errors.New("other devices")
		}
		for _, m := range spec.Mounts[n:] {
			if d := filepath.Clean(m.Destination); d == "/dev" || strings.HasPrefix(d, "/dev/") {
				return errors.New("a mount under /dev")
			}
		}
	}
	return nil
}

// sameJSON says whether a and b encode alike: specs decoded from JSON
// and specs built in Go differ in nil and empty slices only.
func sameJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

// filterFor is the seccomp program compiled from Prestart on when p is
// the profile Prestart was given, nil otherwise.
func (in *Init) filterFor(p *specs.LinuxSeccomp) chan compiled {
	if in == nil || in.filter == nil || !reflect.DeepEqual(p, in.seccomp) {
		return nil
	}
	return in.filter
}

// take hands the init to Create when it was started as the container
// icfg describes needs; ok is false when Create must start one.
func (in *Init) take(icfg *initConfig, joins []nsJoin, flags uintptr, spec *specs.Spec, v2 bool) (cmd *exec.Cmd, parent *os.File, ok bool) {
	if in == nil {
		return nil, nil, false
	}
	fits := in.flags == flags && len(joins) == 0 && !icfg.HostMount && (!v2 || in.cgroup == icfg.CgroupPath) &&
		in.terminal == spec.Process.Terminal && len(spec.Linux.UIDMappings) == 0
	in.mu.Lock()
	pre := in.premount
	in.mu.Unlock()
	if fits && pre != nil {
		if err := premountFits(pre, icfg); err != nil {
			trace("prestarted init not taken: premounted, " + err.Error())
			fits = false
		} else {
			icfg.Premounted = len(pre.Spec.Mounts)
		}
	}
	if !fits {
		in.Close()
		return nil, nil, false
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.taken || in.cmd == nil {
		return nil, nil, false
	}
	in.taken = true
	return in.cmd, in.parent, true
}

// Close ends the init unless Create took it: it is killed and reaped.
// Close is idempotent and safe on a nil Init.
func (in *Init) Close() {
	if in == nil {
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.taken {
		return
	}
	in.taken = true
	if in.cmd != nil {
		in.cmd.Process.Kill()
		in.cmd.Wait()
		in.parent.Close()
	}
}
