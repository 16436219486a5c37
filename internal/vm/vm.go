package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/qmp"
)

// VM is a running QEMU and the helpers it needs.
type VM struct {
	cfg       Config
	cmd       *exec.Cmd
	stderr    *tailBuffer
	qmp       *qmp.Client
	virtiofsd []*helper
	sockets   []string
	jail      string // QEMU's empty root, made by Start

	exited     chan struct{} // closed once QEMU is reaped (and its console copied)
	consoleEnd chan struct{} // closed once the console's pipe is drained
	state      *os.ProcessState
	eventsDone chan struct{} // closed once QMP events are drained
	events     chan qmp.Event

	mu       sync.Mutex
	shutdown *qmp.ShutdownInfo
	panicked bool

	cleanOnce sync.Once
	cleanErr  error
}

// Exit is how a VM ended, known once Wait has returned.
type Exit struct {
	// Code is QEMU's exit status, -1 when a signal killed it.
	Code int
	// Signal killed QEMU, or 0.
	Signal syscall.Signal
	// Shutdown is the reason of QEMU's SHUTDOWN event ("guest-shutdown",
	// "guest-reset", "guest-panic", "host-qmp-quit", "host-signal"), ""
	// when none was seen.
	Shutdown string
	// Panicked is true when the guest reported a kernel panic.
	Panicked bool
}

// Start starts QEMU for cfg, and virtiofsd for each share. QEMU starts
// paused; Start connects QMP, then resumes the guest, so every event of the
// guest's life is seen. ctx bounds the start only, not the VM's life. On
// failure nothing is left behind (scratch disk included) and the error
// carries QEMU's own message.
func Start(ctx context.Context, cfg Config) (_ *VM, err error) {
	if err := check(&cfg); err != nil {
		return nil, err
	}
	v := &VM{cfg: cfg, stderr: &tailBuffer{}, exited: make(chan struct{}), consoleEnd: make(chan struct{}),
		eventsDone: make(chan struct{}), events: make(chan qmp.Event, 256)}
	// badTemplate is set when what failed was the template: its state
	// file, its load, or a QEMU that refused it and exited by itself
	// (a RAM file of another size), not a cancel or a kill.
	badTemplate := false
	defer func() {
		if err != nil {
			v.Cleanup()
		}
		if err != nil && cfg.RestoreFrom != "" && ctx.Err() == nil {
			if e := v.Exit(); badTemplate || (v.cmd != nil && e.Signal == 0 && e.Code > 0) {
				err = &RestoreError{err}
			}
		}
	}()

	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	socks := []string{qmpSocket(cfg.Dir), agentSocket(cfg.Dir)}
	if cfg.Transport == TransportVsock {
		socks = socks[:1]
	}
	for _, p := range socks {
		f, err := listenFile(p)
		v.sockets = append(v.sockets, p)
		if err != nil {
			return nil, fmt.Errorf("vm %s: %w", cfg.ID, err)
		}
		files = append(files, f)
	}
	if cfg.Transport == TransportVsock {
		f, cid, err := reserveCID()
		if err != nil {
			return nil, fmt.Errorf("vm %s: %w", cfg.ID, err)
		}
		files = append(files, f)
		v.cfg.GuestCID = cid
	}
	console, consoleR, err := consolePipe(cfg.consoleLog())
	if err != nil {
		return nil, fmt.Errorf("vm %s: console: %w", cfg.ID, err)
	}
	defer func() {
		if consoleR != nil { // QEMU did not start: nothing to copy
			consoleR.Close()
			console.f.Close()
		}
	}()
	files = append(files, console.pipe)
	if cfg.RestoreFrom != "" {
		f, err := os.Open(cfg.RestoreFrom)
		if err != nil {
			badTemplate = true
			return nil, fmt.Errorf("vm %s: template state: %w", cfg.ID, err)
		}
		files = append(files, f)
	}
	for i, s := range cfg.Shares {
		f, err := v.startVirtiofsd(i, s)
		if err != nil {
			return nil, fmt.Errorf("vm %s: share %s: %w", cfg.ID, s.Source, err)
		}
		files = append(files, f)
	}

	disks, err := openDisks(cfg)
	files = append(files, disks...)
	if err != nil {
		return nil, fmt.Errorf("vm %s: %w", cfg.ID, err)
	}
	if cfg.NIC != nil && cfg.NIC.Tap != nil {
		// QEMU's copy; the caller keeps its own until QEMU runs.
		tap, err := dupFile(cfg.NIC.Tap)
		if err != nil {
			return nil, fmt.Errorf("vm %s: tap: %w", cfg.ID, err)
		}
		files = append(files, tap)
	}

	argv := CommandLine(v.cfg)
	v.cmd = exec.Command(argv[0], argv[1:]...)
	v.cmd.ExtraFiles = files
	v.cmd.Stdout, v.cmd.Stderr = v.stderr, v.stderr
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := makeJail(cfg.Dir); err != nil {
		return nil, fmt.Errorf("vm %s: %w", cfg.ID, err)
	}
	v.jail = jailDir(cfg.Dir)
	if err := startIn(v.cmd, cfg.Cgroup, cfg.NetNS); err != nil {
		v.cmd = nil
		return nil, fmt.Errorf("vm %s: starting qemu: %v: %w", cfg.ID, err, errdefs.ErrUnavailable)
	}
	trace("qemu started")
	go func(r *os.File) {
		console.drain(r)
		close(v.consoleEnd)
	}(consoleR)
	consoleR = nil
	go func() {
		v.cmd.Wait()
		v.state = v.cmd.ProcessState
		// Whoever learns that QEMU ended finds its last words in the
		// console log.
		select {
		case <-v.consoleEnd:
		case <-time.After(consoleDrain):
		}
		close(v.exited)
	}()
	for _, f := range files {
		f.Close()
	}
	files = nil

	// QEMU owns the listening socket now; a connection made before it
	// accepts waits in the backlog, and is reset if QEMU dies first.
	conn, err := dialUnix(qmpSocket(cfg.Dir))
	if err == nil {
		v.qmp, err = qmp.Dial(ctx, conn)
	}
	if err != nil {
		return nil, v.startError(err)
	}
	trace("qmp connected")
	go v.watchEvents()
	if cfg.RestoreFrom != "" {
		if err := v.restore(ctx); err != nil {
			var me *migrationError
			badTemplate = errors.As(err, &me)
			return nil, v.startError(err)
		}
		trace("template restored")
	}
	if err := v.qmp.Cont(ctx); err != nil {
		return nil, v.startError(err)
	}
	return v, nil
}

// check validates cfg and fills in defaults that need the host.
func check(cfg *Config) error {
	if !isDir(cfg.Dir) {
		return fmt.Errorf("vm %s: directory %q: %w", cfg.ID, cfg.Dir, errdefs.ErrNotFound)
	}
	if cfg.Kernel.Path == "" {
		return fmt.Errorf("vm %s: no guest kernel; %s: %w", cfg.ID, fetchHint, errdefs.ErrUnavailable)
	}
	for _, f := range append([]string{cfg.Kernel.Path, cfg.Initramfs, cfg.Scratch}, cfg.Layers...) {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("vm %s: %s: %w", cfg.ID, f, errdefs.ErrNotFound)
		}
	}
	if (cfg.SaveTo != "" || cfg.RestoreFrom != "") && (len(cfg.Shares) > 0 || cfg.Transport == TransportVsock || cfg.RAMFile == "") {
		return fmt.Errorf("vm %s: a template needs its RAM in a file, no shares and the virtio-serial channel: %w", cfg.ID, errdefs.ErrInvalid)
	}
	if cfg.Accel == "" {
		cfg.Accel = AccelTCG
	}
	if cfg.Firmware == "" {
		cfg.Firmware = DefaultFirmware()
	}
	q, err := exec.LookPath(cfg.qemu())
	if err != nil {
		return fmt.Errorf("vm %s: %s not found (apt-get install qemu-system-x86): %w", cfg.ID, cfg.qemu(), errdefs.ErrUnavailable)
	}
	cfg.QEMU = q
	return nil
}

// startError explains why QEMU failed to come up, as one line, and makes
// sure it is gone. A QEMU that dies while berth connects to it (killed,
// or failing on its command line) breaks the QMP connection a moment
// before it is reaped: that is waited for, briefly, so the error says how
// QEMU ended (and QEMU's own last words) rather than how a socket failed.
func (v *VM) startError(err error) error {
	ended := errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
	if !ended { // else QEMU is not dying: the start was given up, and berth stops it
		select {
		case <-v.exited:
		case <-time.After(qemuDying):
		}
	}
	e := v.Exit()
	v.cmd.Process.Kill()
	<-v.exited
	var msg string
	switch {
	case e.Signal != 0:
		msg = fmt.Sprintf("qemu was killed by signal %d (%v) while starting", int(e.Signal), e.Signal)
	case e.Code != 0:
		msg = fmt.Sprintf("qemu exited with status %d while starting", e.Code)
		if last := lastLine(v.stderr.String()); last != "" {
			msg += ": " + last
		}
	case ended:
		msg = "qemu" // err says the rest
	default:
		msg = "qemu: " + err.Error()
	}
	if !ended {
		err = errdefs.ErrUnavailable
	}
	return fmt.Errorf("vm %s: %s: %w", v.cfg.ID, msg, err)
}

// RestoreError is a VM that could not be started from its template (a
// damaged or stale one); the template should go.
type RestoreError struct{ Err error }

func (e *RestoreError) Error() string { return e.Err.Error() }
func (e *RestoreError) Unwrap() error { return e.Err }

// migrationCaps are the migration capabilities of a template's save and
// restore: guest RAM is a file of its own, so the stream carries only the
// device state (and the firmware's small RAM regions).
var migrationCaps = map[string]bool{"x-ignore-shared": true}

// restore loads cfg.RestoreFrom into a QEMU waiting with -incoming defer.
func (v *VM) restore(ctx context.Context) error {
	if err := v.qmp.SetMigrationCapabilities(ctx, migrationCaps); err != nil {
		return fmt.Errorf("restore template: %w", err)
	}
	if err := v.qmp.MigrateIncoming(ctx, "fd:"+strconv.Itoa(fdState)); err != nil {
		return fmt.Errorf("restore template: %w", err)
	}
	if err := v.waitMigration(ctx); err != nil {
		return fmt.Errorf("restore template: %w", err)
	}
	return nil
}

// SaveState pauses the guest and saves its device state to cfg.SaveTo,
// which appears once complete; its RAM is the shared cfg.RAMFile,
// complete once the guest is paused. QEMU is left paused; Quit it next.
// QEMU writes the state to a descriptor berth passes it over QMP (getfd):
// its sandbox lets it neither run a command nor open a file.
func (v *VM) SaveState(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("vm %s: save state: %w", v.cfg.ID, err)
		}
	}()
	if v.cfg.SaveTo == "" {
		return fmt.Errorf("no file to save to: %w", errdefs.ErrInvalid)
	}
	part := v.cfg.SaveTo + ".part"
	f, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	err = v.qmp.Stop(ctx)
	if err == nil {
		err = v.qmp.SetMigrationCapabilities(ctx, migrationCaps)
	}
	if err == nil {
		err = v.qmp.GetFD(ctx, "state", f)
	}
	if err == nil {
		err = v.qmp.Migrate(ctx, "fd:state")
	}
	if err == nil {
		err = v.waitMigration(ctx)
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(part, v.cfg.SaveTo)
	}
	if err != nil {
		os.Remove(part)
	}
	return err
}

// migrationError is a migration QEMU reports failed, with its reason.
type migrationError struct{ desc string }

func (e *migrationError) Error() string { return e.desc }

// waitMigration polls QEMU until the current migration completed or failed.
// The state is small (the RAM is left out): a few milliseconds.
func (v *VM) waitMigration(ctx context.Context) error {
	for {
		m, err := v.qmp.QueryMigrate(ctx)
		if err != nil {
			return err
		}
		switch m.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			if m.ErrorDesc == "" {
				m.ErrorDesc = "migration " + m.Status
			}
			return &migrationError{m.ErrorDesc}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-v.exited:
			return errors.New("qemu exited")
		case <-time.After(time.Millisecond):
		}
	}
}

// qemuDying bounds the wait for a QEMU whose QMP connection failed to
// exit by itself.
const qemuDying = 2 * time.Second

// watchEvents records the events that say how the VM ends and passes all
// events on to Events.
func (v *VM) watchEvents() {
	defer close(v.eventsDone)
	defer close(v.events)
	for ev := range v.qmp.Events() {
		v.mu.Lock()
		switch ev.Name {
		case qmp.EventShutdown:
			if info, ok := ev.Shutdown(); ok {
				v.shutdown = &info
			}
		case qmp.EventGuestPanicked:
			v.panicked = true
		}
		v.mu.Unlock()
		select {
		case v.events <- ev:
		default: // nobody listening; the VM keeps what it needs
		}
	}
}

// QMP returns the VM's QMP client.
func (v *VM) QMP() *qmp.Client { return v.qmp }

// Events returns QMP events (up to 256 unread are kept, later ones are
// dropped); it is closed when QEMU's QMP connection ends.
func (v *VM) Events() <-chan qmp.Event { return v.events }

// Pid is QEMU's process id.
func (v *VM) Pid() int { return v.cmd.Process.Pid }

// Config returns the VM's configuration (with defaults resolved).
func (v *VM) Config() Config { return v.cfg }

// AgentConn connects to the guest agent's virtio-serial port. One
// connection at a time is served; another may follow when it is closed.
// With vsock use DialAgent.
func (v *VM) AgentConn() (net.Conn, error) {
	c, err := dialUnix(agentSocket(v.cfg.Dir))
	if err != nil {
		return nil, fmt.Errorf("vm %s: agent socket: %v: %w", v.cfg.ID, err, errdefs.ErrUnavailable)
	}
	return c, nil
}

// DialAgent connects to the guest agent over the VM's transport. Over
// virtio-serial it connects at once (QEMU's chardev accepts before the
// guest is up); over vsock it retries until the agent listens or ctx
// ends. The agent serves one connection: its end powers the guest off.
func (v *VM) DialAgent(ctx context.Context) (io.ReadWriteCloser, error) {
	if v.cfg.Transport != TransportVsock {
		return v.AgentConn()
	}
	f, err := dialVsock(ctx, v.cfg.GuestCID, AgentVsockPort)
	if err != nil {
		return nil, fmt.Errorf("vm %s: agent: %w", v.cfg.ID, err)
	}
	return f, nil
}

// Transport is the agent's channel.
func (v *VM) Transport() Transport {
	if v.cfg.Transport == "" {
		return TransportSerial
	}
	return v.cfg.Transport
}

// Exited is closed when QEMU has exited.
func (v *VM) Exited() <-chan struct{} { return v.exited }

// Wait waits for QEMU to exit and says how: nil when the guest powered
// off or QEMU was asked to quit; an error for a guest that panicked or
// reset (kernel panic with -no-reboot), a QEMU killed or failing.
func (v *VM) Wait() error {
	<-v.exited
	<-v.eventsDone
	e := v.Exit()
	id := v.cfg.ID
	switch {
	case e.Signal != 0:
		return fmt.Errorf("vm %s: qemu killed by signal %d (%v): %w", id, e.Signal, e.Signal, errdefs.ErrUnavailable)
	case e.Code != 0:
		return fmt.Errorf("vm %s: qemu exited with status %d: %s: %w", id, e.Code, lastLine(v.stderr.String()), errdefs.ErrUnavailable)
	case e.Panicked || e.Shutdown == "guest-panic":
		return fmt.Errorf("vm %s: guest kernel panicked: %s: %w", id, lastLine(v.ConsoleTail(20)), errdefs.ErrUnavailable)
	case e.Shutdown == "guest-reset":
		return fmt.Errorf("vm %s: guest reset itself (kernel panic or reboot): %s: %w", id, lastLine(v.ConsoleTail(20)), errdefs.ErrUnavailable)
	case e.Shutdown == "host-signal":
		return fmt.Errorf("vm %s: qemu terminated by a signal: %w", id, errdefs.ErrUnavailable)
	}
	return nil
}

// Exit reports how QEMU ended; meaningful once Exited is closed.
func (v *VM) Exit() Exit {
	select {
	case <-v.exited:
	default:
		return Exit{}
	}
	var e Exit
	if ws, ok := v.state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		e.Code, e.Signal = -1, ws.Signal()
	} else {
		e.Code = v.state.ExitCode()
	}
	v.mu.Lock()
	if v.shutdown != nil {
		e.Shutdown = v.shutdown.Reason
	}
	e.Panicked = v.panicked
	v.mu.Unlock()
	return e
}

// Kill kills QEMU at once (SIGKILL). Wait then reports it.
func (v *VM) Kill() error {
	if err := v.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("vm %s: kill qemu: %w", v.cfg.ID, err)
	}
	return nil
}

// ConsoleTail returns the last n lines of the guest's serial console.
func (v *VM) ConsoleTail(n int) string {
	f, err := os.Open(v.cfg.consoleLog())
	if err != nil {
		return ""
	}
	defer f.Close()
	const window = 64 << 10
	if st, err := f.Stat(); err == nil && st.Size() > window {
		f.Seek(st.Size()-window, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	s := strings.TrimRight(strings.ReplaceAll(string(b), "\r", ""), "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Cleanup kills QEMU and the virtiofsd helpers, waits for them, and
// removes the VM's sockets and scratch disk. The console log stays. It is
// idempotent and safe after any failure.
func (v *VM) Cleanup() error {
	v.cleanOnce.Do(func() {
		if v.cmd != nil && v.cmd.Process != nil {
			v.cmd.Process.Kill()
			<-v.exited
		}
		if v.qmp != nil {
			v.qmp.Close()
			<-v.eventsDone
		}
		for _, h := range v.virtiofsd {
			h.stop()
		}
		var errs []error
		for _, p := range append(v.sockets, v.cfg.Scratch, v.jail) {
			if p == "" {
				continue
			}
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			v.cleanErr = fmt.Errorf("vm %s: cleanup: %w", v.cfg.ID, err)
		}
	})
	return v.cleanErr
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
