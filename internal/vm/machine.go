package vm

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/errdefs"
)

// RunConfig is what berth needs to run an OCI spec as a virtual machine:
// the same spec the container engine takes, the image's layers, and
// where the guest's parts are.
type RunConfig struct {
	ID  string
	Dir string // the instance's directory; sockets, console and scratch disk live here
	// Spec gives the process (args, env, cwd, user, terminal, rlimits),
	// hostname, bind mounts (shared with virtio-fs) and resources
	// (memory: cgroup limit inside the guest, sized into guest RAM; CPU:
	// vCPUs and cpu.max; pids).
	Spec   *specs.Spec
	Layers []Layer // lowest first
	Guest  Guest
	// BootTimeout bounds the wait for the guest agent; 0 means the
	// spec's AnnotationBootTimeout, else DefaultBootTimeout.
	BootTimeout time.Duration
	// Cgroup is the host cgroup QEMU and virtiofsd run in, "" for
	// none: Boot makes it with HostResources and Destroy removes it.
	Cgroup string
	// Network, when not nil, gives the guest the network of the
	// namespace QEMU runs in (see Network): its eth0, taken over, or no
	// card when it has none. nil: no card, and QEMU runs in the
	// caller's namespace (`--network none`, which costs nothing more).
	Network *Network
}

// AnnotationBootTimeout, in the spec's annotations, bounds the wait for
// the guest agent, as a Go duration ("90s"): `berth run --boot-timeout`
// sets it, and OCI clients of berth-runtime may.
const AnnotationBootTimeout = "dev.berth.vm.boot-timeout"

// DefaultBootTimeout bounds the wait for the guest agent when nothing
// else does: software emulation on a loaded two-core machine is slow.
const DefaultBootTimeout = 5 * time.Minute

// bootTimeout is rc's bound on the wait for the guest agent.
func (rc RunConfig) bootTimeout() (time.Duration, error) {
	if rc.BootTimeout > 0 {
		return rc.BootTimeout, nil
	}
	if v, ok := rc.Spec.Annotations[AnnotationBootTimeout]; ok {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return 0, fmt.Errorf("vm %s: annotation %s=%q: want a positive duration such as 90s: %w", rc.ID, AnnotationBootTimeout, v, errdefs.ErrInvalid)
		}
		return d, nil
	}
	return DefaultBootTimeout, nil
}

// Layer is one image layer: its unpacked snapshot and its digest, which
// names the cached EROFS disk made from it.
type Layer struct {
	Snapshot string
	Digest   string
}

// Guest is where the guest's kernel, agent and caches are.
type Guest struct {
	Kernel    Kernel
	Agent     string // the berth-agent binary
	CacheDir  string // layer disks, initramfs and scratch template
	Accel     Accel
	Transport Transport // the agent's channel; "" means virtio-serial
	Modules   []string  // kernel modules for the initramfs; nil: Boot picks what the guest uses
	QEMU      string
	// QEMUVersion is the release of the QEMU found (see Config).
	QEMUVersion Version
	Virtiofsd   string
	// NoTemplates makes every VM boot cold: for VMs whose disks are
	// their own (berth-runtime's bundles), whose templates nobody else
	// could use.
	NoTemplates bool
}

// Machine is a running guest and its workload, as its owner sees it.
type Machine struct {
	vm     *VM
	client *agent.Client
	proc   *agent.Proc
	cfg    RunConfig
	// template names the template the VM is a clone of; "" for a cold
	// boot.
	template string
	// cgroup is the host cgroup Boot made, nil for none.
	cgroup cgroups.Manager

	killOnce    sync.Once
	killed      chan struct{} // closed by Kill
	interrupted atomic.Bool   // a terminating signal was relayed (Interrupt)
}

// BERTH_TRACE=1 makes Boot and Wait print how long each step took, in
// the format of berth's own start trace (milliseconds since the process
// started), and has the guest agent print its steps on the console
// (seconds since the guest kernel started), which Wait copies out.
var (
	processStart = time.Now()
	tracing      = os.Getenv("BERTH_TRACE") != ""
)

func trace(step string) {
	if tracing {
		fmt.Fprintf(os.Stderr, "berth trace: %7.2f ms  vm: %s\n", float64(time.Since(processStart).Microseconds())/1000, step)
	}
}

// traceGuest copies the agent's trace lines from the console.
func (m *Machine) traceGuest() {
	if !tracing {
		return
	}
	for _, l := range strings.Split(m.vm.ConsoleTail(200), "\n") {
		if i := strings.Index(l, "berth-agent: trace "); i >= 0 {
			fmt.Fprintf(os.Stderr, "berth trace: guest %s\n", strings.TrimSpace(l[i+len("berth-agent: trace "):]))
		}
	}
}

// guestMemoryMiB sizes guest RAM for a workload limited to limit bytes:
// the limit plus room for the guest kernel and agent, at least the
// default 256 MiB.
func guestMemoryMiB(limit int64) int {
	if limit <= 0 {
		return defaultMemoryMiB
	}
	mib := int(limit>>20) + 128
	if mib < defaultMemoryMiB {
		mib = defaultMemoryMiB
	}
	return mib
}

// specMemoryMiB is the guest RAM for spec's memory limit.
func specMemoryMiB(spec *specs.Spec) int {
	var limit int64
	if r := spec.Linux; r != nil && r.Resources != nil && r.Resources.Memory != nil && r.Resources.Memory.Limit != nil {
		limit = *r.Resources.Memory.Limit
	}
	return guestMemoryMiB(limit)
}

// vcpus rounds a CFS quota up to whole vCPUs.
func vcpus(r *specs.LinuxResources) int {
	if r == nil || r.CPU == nil || r.CPU.Quota == nil || *r.CPU.Quota <= 0 {
		return 1
	}
	period := uint64(100000)
	if r.CPU.Period != nil && *r.CPU.Period > 0 {
		period = *r.CPU.Period
	}
	return int(math.Ceil(float64(*r.CPU.Quota) / float64(period)))
}

// Boot starts the guest and its workload and returns once the workload
// runs. On failure nothing is left: no QEMU, no virtiofsd, no socket, no
// scratch disk; an error while waiting for the guest carries the tail of
// its console.
func Boot(ctx context.Context, rc RunConfig, stdio agent.Stdio) (_ *Machine, err error) {
	if rc.Spec == nil || rc.Spec.Process == nil {
		return nil, fmt.Errorf("vm %s: spec without a process: %w", rc.ID, errdefs.ErrInvalid)
	}
	proc, shares, err := guestProcess(rc, layerSerials(len(rc.Layers)))
	if err != nil {
		return nil, err
	}
	if rc.BootTimeout, err = rc.bootTimeout(); err != nil {
		return nil, err
	}
	var hn *hostNet
	if rc.Network != nil {
		if hn, err = takeOver(rc.ID, rc.Network); err != nil {
			return nil, err
		}
		// QEMU has the tap and the namespace once it runs.
		defer hn.Close()
		proc.Net = hn.cfg
		trace("network ready")
	}
	guest := rc.Guest
	if guest.Modules == nil {
		guest.Modules = guestModules(guest.Transport, len(shares) > 0, proc.Net != nil)
	}
	trace("boot")
	initrd, err := Initramfs(guest)
	if err != nil {
		return nil, err
	}
	trace("initramfs ready")
	var disks []string
	for _, l := range rc.Layers {
		d, err := LayerDisk(filepath.Join(rc.Guest.CacheDir, "layers"), l.Snapshot, l.Digest)
		if err != nil {
			return nil, err
		}
		disks = append(disks, d)
	}
	trace("layer disks ready")
	var appendArgs []string
	if tracing {
		appendArgs = append(appendArgs, "berth.trace=1")
	}
	var res *specs.LinuxResources
	if rc.Spec.Linux != nil {
		res = rc.Spec.Linux.Resources
	}
	makeScratch := func(path string) error {
		return ScratchDiskCached(rc.Guest.CacheDir, path, 8<<30)
	}
	cfg := Config{
		ID:          rc.ID,
		Dir:         rc.Dir,
		Kernel:      rc.Guest.Kernel,
		Initramfs:   initrd,
		MemoryMiB:   specMemoryMiB(rc.Spec),
		CPUs:        vcpus(res),
		Layers:      disks,
		Scratch:     filepath.Join(rc.Dir, "scratch.img"),
		Shares:      shares,
		Accel:       rc.Guest.Accel,
		Transport:   rc.Guest.Transport,
		QEMU:        rc.Guest.QEMU,
		QEMUVersion: rc.Guest.QEMUVersion,
		Virtiofsd:   rc.Guest.Virtiofsd,
		Append:      appendArgs,
	}
	if hn != nil {
		cfg.NetNS = hn.ns
		if hn.cfg != nil {
			cfg.NIC = &NIC{MAC: hn.cfg.MAC, Tap: hn.tap}
		}
	}
	m := &Machine{cfg: rc, killed: make(chan struct{})}
	defer func() {
		if err != nil {
			m.Destroy()
		}
	}()
	if rc.Cgroup != "" {
		if m.cgroup, err = makeCgroup(rc.Cgroup, HostResources(cfg.MemoryMiB, cfg.Accel, 0)); err != nil {
			return nil, fmt.Errorf("vm %s: %w", rc.ID, err)
		}
		cfg.Cgroup = rc.Cgroup
	}
	// startGuest owns each VM it tries until it returns one: answer
	// leaves m.vm alone.
	answer := func(v *VM, wait time.Duration) error {
		trace("qemu running")
		return m.connect(ctx, v, wait)
	}
	v, tmpl, err := startGuest(ctx, cfg, !rc.Guest.NoTemplates, rc.Guest.CacheDir, rc.BootTimeout, makeScratch, answer)
	if err != nil {
		return nil, err
	}
	m.vm = v
	if tmpl != "" {
		m.template = filepath.Base(tmpl)
	}
	trace("agent connected")
	m.proc, err = m.client.Run(ctx, *proc, stdio)
	if err != nil {
		var se *agent.StartError
		if errors.As(err, &se) {
			return nil, &StartError{Code: se.Code, Msg: se.Msg}
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("vm %s: start the workload: %w", rc.ID, ctx.Err())
		}
		// A QEMU that died breaks the connection a moment before it
		// is reaped: say how it ended rather than how a read failed.
		select {
		case <-m.vm.Exited():
			return nil, guestError(m.vm, m.vm.endedEarly("the workload started"))
		case <-time.After(qemuDying):
		}
		return nil, fmt.Errorf("vm %s: start the workload: %w", rc.ID, err)
	}
	trace("workload started")
	return m, nil
}

// guestModules are the kernel modules a guest's initramfs carries (with
// what they depend on). Each costs guest kernel time, which software
// emulation makes dear: only what the guest uses (virtio_net only with
// a network card), and of the agent's channels only the one in use.
func guestModules(t Transport, shares, nic bool) []string {
	mods := append([]string{"virtio_pci", "virtio_blk"}, TransportModules(t)...)
	mods = append(mods, "overlay", "erofs")
	if shares {
		mods = append(mods, "virtiofs")
	}
	if nic {
		mods = append(mods, "virtio_net")
	}
	return mods
}

// StartError is a workload the guest could not start: Code is 127 (not
// found), 126 (not executable) or 125.
type StartError struct {
	Code int
	Msg  string
}

func (e *StartError) Error() string { return e.Msg }

// connect waits for v's guest agent and dials it; a guest that stops or
// never answers ends it with its console's last lines. The dial runs
// aside, with v as connect was given it: when connect gives up first, a
// client it makes later is closed. A cancelled parent (the start was
// given up) says so rather than blaming the guest.
func (m *Machine) connect(parent context.Context, v *VM, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	type dialed struct {
		c   *agent.Client
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		conn, err := v.DialAgent(ctx)
		if err != nil {
			ch <- dialed{err: err}
			return
		}
		c, err := agent.Dial(ctx, conn)
		if err != nil {
			conn.Close()
		}
		ch <- dialed{c, err}
	}()
	abandon := func(err error) error {
		go func() {
			if d := <-ch; d.c != nil {
				d.c.Close()
			}
		}()
		return err
	}
	select {
	case d := <-ch:
		if d.err == nil {
			m.client = d.c
			return nil
		}
		if err := parent.Err(); err != nil {
			return fmt.Errorf("vm %s: %w", m.cfg.ID, err)
		}
		if ctx.Err() != nil {
			// The dial failed because the boot timeout ran out (both
			// were ready at once): that is what to say.
			return guestError(v, fmt.Errorf("no answer from the guest agent within %v", timeout))
		}
		// A guest that powers off or dies resets the agent's
		// connection as QEMU exits: say so rather than how the read
		// failed.
		select {
		case <-v.Exited():
			return guestError(v, v.endedEarly("its agent answered"))
		case <-time.After(5 * time.Second):
		}
		return guestError(v, d.err)
	case <-v.Exited():
		return abandon(guestError(v, v.endedEarly("its agent answered")))
	case <-ctx.Done():
		if err := parent.Err(); err != nil {
			return abandon(fmt.Errorf("vm %s: %w", m.cfg.ID, err))
		}
		return abandon(guestError(v, fmt.Errorf("no answer from the guest agent within %v", timeout)))
	}
}

// layerSerials are the disk serials the layers get, in order (see
// CommandLine): the agent finds its disks by them.
func layerSerials(n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = "layer" + strconv.Itoa(i)
	}
	return s
}

// guestProcess turns the spec into the agent's Run request, and its bind
// mounts into virtio-fs shares.
func guestProcess(rc RunConfig, layers []string) (*agent.Process, []Share, error) {
	p := ProcessOf(rc.Spec.Process)
	p.OCI = nil // the spec carries it
	p.Spec = rc.Spec
	p.Hostname = rc.Spec.Hostname
	p.Root = &agent.Root{Layers: layers, Scratch: scratchSerial}
	if r := rc.Spec.Root; r != nil && r.Readonly {
		p.Root.ReadOnly = true
	}
	if l := rc.Spec.Linux; l != nil && l.Resources != nil {
		r := l.Resources
		p.Resources = &agent.Resources{}
		if r.Memory != nil && r.Memory.Limit != nil {
			p.Resources.MemoryBytes = *r.Memory.Limit
		}
		if r.CPU != nil && r.CPU.Quota != nil {
			p.Resources.CPUQuota = *r.CPU.Quota
			if r.CPU.Period != nil {
				p.Resources.CPUPeriod = *r.CPU.Period
			}
		}
		if r.Pids != nil && r.Pids.Limit != nil {
			p.Resources.PidsMax = *r.Pids.Limit
		}
	}
	var shares []Share
	var filesSize int
	for _, mnt := range rc.Spec.Mounts {
		if mnt.Type != "bind" {
			continue // proc, dev, sys and the like: the agent makes its own
		}
		if fi, err := os.Stat(mnt.Source); err == nil && fi.Mode().IsRegular() {
			// A file: virtio-fs shares directories only. Copied in
			// the run request, so that the guest's disks (and its
			// template) stay the image's.
			f, err := copyFile(mnt.Source, mnt.Destination, fi)
			if err != nil {
				return nil, nil, fmt.Errorf("vm %s: %w", rc.ID, err)
			}
			if filesSize += len(f.Data); filesSize > agent.MaxPayload/2 {
				return nil, nil, fmt.Errorf("vm %s: files bind-mounted into a VM take more than %d KiB in all: share their directories instead: %w", rc.ID, agent.MaxPayload/2>>10, errdefs.ErrInvalid)
			}
			p.Files = append(p.Files, f)
			continue
		}
		ro := false
		for _, o := range mnt.Options {
			if o == "ro" {
				ro = true
			}
		}
		tag := "share" + strconv.Itoa(len(shares))
		shares = append(shares, Share{Source: mnt.Source, Tag: tag, ReadOnly: ro})
		p.Mounts = append(p.Mounts, agent.Mount{Source: tag, Type: "virtiofs", Target: mnt.Destination, ReadOnly: ro})
	}
	return p, shares, nil
}

// copyFile reads the host file src, bind-mounted at dst, for the guest.
func copyFile(src, dst string, fi os.FileInfo) (agent.File, error) {
	if fi.Size() > agent.MaxFile {
		return agent.File{}, fmt.Errorf("mount %s: file %s is larger than %d KiB, the most a VM takes a file bind-mounted: share its directory instead: %w", dst, src, agent.MaxFile>>10, errdefs.ErrInvalid)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return agent.File{}, fmt.Errorf("mount %s: %w", dst, err)
	}
	if len(b) > agent.MaxFile {
		return agent.File{}, fmt.Errorf("mount %s: file %s grew past %d KiB: %w", dst, src, agent.MaxFile>>10, errdefs.ErrInvalid)
	}
	return agent.File{Target: dst, Mode: uint32(fi.Mode().Perm()), Data: b}, nil
}

// ProcessOf is the agent's form of an OCI process.
func ProcessOf(sp *specs.Process) *agent.Process {
	p := &agent.Process{
		Args:           sp.Args,
		Env:            sp.Env,
		Cwd:            sp.Cwd,
		UID:            sp.User.UID,
		GID:            sp.User.GID,
		AdditionalGids: sp.User.AdditionalGids,
		Terminal:       sp.Terminal,
		OCI:            sp,
	}
	if sp.ConsoleSize != nil {
		p.Rows, p.Cols = uint16(sp.ConsoleSize.Height), uint16(sp.ConsoleSize.Width)
	}
	for _, rl := range sp.Rlimits {
		p.Rlimits = append(p.Rlimits, agent.Rlimit{Type: rl.Type, Hard: rl.Hard, Soft: rl.Soft})
	}
	return p
}

// Transport is the channel to the guest agent.
func (m *Machine) Transport() Transport { return m.vm.Transport() }

// Template names the template the VM is a clone of (its directory under
// the cache's templates/), "" when it booted its kernel.
func (m *Machine) Template() string { return m.template }

// Pid is QEMU's pid: the host process whose life is the instance's.
func (m *Machine) Pid() int { return m.vm.Pid() }

// Wait waits for the workload, then stops the guest and waits for QEMU.
// A guest that dies first (panic, agent dead, QEMU killed) ends the
// workload with status 137 (SIGKILL) and an error that says how QEMU
// ended and, for a panic, the kernel's panic line.
//
// Nothing in the guest outlives it: the scratch disk is removed with the
// VM and the layer disks are read-only, so QEMU is simply killed once the
// workload has ended, rather than waiting for the guest to unmount and
// power off. Only what the workload wrote to virtio-fs shares must reach
// the host first: with shares the agent's Shutdown flushes them.
//
// After Kill, a guest that lost its agent is no fault: the workload was
// killed (137). Kill's bound cuts the flush of shares short too.
func (m *Machine) Wait() (agent.ExitStatus, error) {
	st, err := m.proc.Wait()
	killed := agent.ExitStatus{Code: 137, Signal: int(syscall.SIGKILL)}
	if err != nil && m.killRequested() {
		_ = m.vm.Kill()
		<-m.vm.Exited()
		trace("qemu killed")
		return killed, nil
	}
	if err != nil {
		return killed, m.lostGuest(err)
	}
	trace("workload exited")
	if len(m.vm.Config().Shares) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := m.client.Shutdown(ctx)
		cancel()
		if err == nil {
			trace("guest shut down")
		}
	}
	_ = m.vm.Kill()
	<-m.vm.Exited()
	trace("qemu exited")
	m.traceGuest()
	return st, nil
}

// guestGone bounds the wait for QEMU to exit once the agent's connection
// broke under a running workload. A panicking guest ends QEMU at once
// (panic=-1, pvpanic, -no-reboot); one that does not is killed, so the
// reason is known from how QEMU ended.
const guestGone = 10 * time.Second

// lostGuest explains the end of a guest whose agent connection broke
// (cause) while the workload ran: the kernel's panic line if it
// panicked, else how QEMU ended, else the lost agent with the console's
// tail.
func (m *Machine) lostGuest(cause error) error {
	killed := false
	select {
	case <-m.vm.Exited():
	case <-time.After(guestGone):
		killed = m.vm.Kill() == nil
	}
	waitErr := m.vm.Wait()
	tail := m.vm.ConsoleTail(60)
	if p := panicLine(tail); p != "" && !killed && m.vm.Exit().Signal == 0 {
		return fmt.Errorf("vm %s: the guest kernel panicked: %s: %w", m.cfg.ID, p, errdefs.ErrUnavailable)
	}
	if waitErr != nil && !killed {
		return waitErr
	}
	last := lastLines(tail, 3)
	if last == "" {
		last = "(console empty)"
	}
	return fmt.Errorf("vm %s: lost the guest agent (%v); console: %s: %w", m.cfg.ID, cause, last, errdefs.ErrUnavailable)
}

// panicLine is the kernel's "Kernel panic - not syncing: ..." line in a
// console tail, or "".
func panicLine(tail string) string {
	lines := strings.Split(tail, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if j := strings.Index(lines[i], "Kernel panic - not syncing:"); j >= 0 {
			return strings.TrimSuffix(strings.TrimSpace(lines[i][j:]), " ]---")
		}
	}
	return ""
}

// lastLines joins the last n non-empty lines of a console text with
// " | ", without the escape sequences and control characters the
// firmware and the guest write there (an error line must not reset the
// user's terminal).
func lastLines(s string, n int) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(printable(l)); l != "" {
			out = append(out, l)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return strings.Join(out, " | ")
}

// printable drops ANSI escape sequences (ESC [ ... final byte, and ESC
// followed by one character) and other control characters from s.
func printable(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == 0x1b && i+1 < len(s) && s[i+1] == '[':
			i += 2
			for i < len(s) && (s[i] < 0x40 || s[i] > 0x7e) {
				i++
			}
		case c == 0x1b:
			i++
		case c == '\t':
			b.WriteByte(' ')
		case c < 0x20 || c == 0x7f:
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// Resize changes the workload's terminal size.
func (m *Machine) Resize(rows, cols uint16) error { return m.proc.Resize(rows, cols) }

// Pause stops the guest's vCPUs, freezing the workload and everything
// else in the guest (Kata and Firecracker pause a VM so too); Resume
// starts them again. The guest's clock does not see the pause as time
// spent running.
func (m *Machine) Pause() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.vm.QMP().Stop(ctx); err != nil {
		return fmt.Errorf("vm %s: pause: %w", m.cfg.ID, err)
	}
	return nil
}

// Resume undoes Pause.
func (m *Machine) Resume() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.vm.QMP().Cont(ctx); err != nil {
		return fmt.Errorf("vm %s: resume: %w", m.cfg.ID, err)
	}
	return nil
}

// queryTimeout bounds a stats or top query: a paused guest, whose vCPUs
// are stopped, cannot answer.
const queryTimeout = 10 * time.Second

// Query asks the guest agent about the workload: kind "stats" answers
// its cgroup's figures (usage.Stats), "top" its processes
// ([]usage.Process), with the guest's pids.
func (m *Machine) Query(kind string) (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	var v any
	var err error
	switch kind {
	case agent.QueryStats:
		v, err = m.client.Stats(ctx)
	case agent.QueryTop:
		v, err = m.client.Top(ctx)
	default:
		err = fmt.Errorf("vm %s: unknown query %q: %w", m.cfg.ID, kind, errdefs.ErrInvalid)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("vm %s: the guest did not answer a %s query within %v (paused?): %w", m.cfg.ID, kind, queryTimeout, errdefs.ErrUnavailable)
	}
	return v, err
}

// Destroy kills whatever is left of the guest and removes its sockets,
// scratch disk and host cgroup. It is idempotent.
func (m *Machine) Destroy() error {
	if m.client != nil {
		m.client.Close()
	}
	var errs []error
	if m.vm != nil { // else a cold boot after a broken clone failed to start
		errs = append(errs, m.vm.Cleanup())
	}
	if m.cgroup != nil {
		errs = append(errs, m.cgroup.Destroy())
	}
	return errors.Join(errs...)
}
