package runtime

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	gopath "path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/tty"
	"github.com/berth-dev/berth/internal/vm"
)

// relayed are the signals the owner passes on to the workload in the
// guest: a front end's (instance.Relayed) and, as the owner stands for
// the workload's process, those a process is sent by its terminal and by
// kill(1) users too (SIGKILL and SIGSTOP cannot be caught: SIGKILL ends
// the owner and QEMU with it). SIGWINCH becomes a resize of the guest's
// terminal.
var relayed = append(slices.Clone(instance.Relayed),
	syscall.SIGALRM, syscall.SIGCONT, syscall.SIGTSTP, syscall.SIGTTIN,
	syscall.SIGTTOU, syscall.SIGABRT, syscall.SIGWINCH,
)

// RunVMOwner is the VM owner (`berth-runtime __vm-owner DIR`, started by
// create with the workload's stdio as fds 0-2, a sync pipe as fd 3 and
// the start listener as fd 4). It says "ready" on the sync pipe, waits
// for start, boots the guest with the workload, answers start ("ok" or
// "error MESSAGE"), serves the control socket, relays signals, and
// returns the workload's exit status (128+N for signal N; 125 when the
// guest could not start, or the guest's 126/127 for a command that could
// not be run). A signal that ends a process by default ends the owner
// with 128+N before start.
func RunVMOwner(args []string) int {
	syncw := os.NewFile(3, "sync")
	fail := func(err error) int {
		fmt.Fprintf(syncw, "error %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
		syncw.Close()
		return 125
	}
	if len(args) != 1 {
		return fail(errors.New("usage: berth-runtime __vm-owner DIR"))
	}
	dir := args[0]
	rec, err := loadVMRecord(dir)
	if err != nil {
		return fail(err)
	}
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs, relayed...)
	// A closed stdout or stderr must fail the write, not kill the owner.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	lf := os.NewFile(4, "start.sock")
	l, err := net.FileListener(lf)
	lf.Close()
	if err != nil {
		return fail(fmt.Errorf("start listener: %w", err))
	}
	fmt.Fprintln(syncw, "ready")
	syncw.Close()

	// Whatever way the owner ends, the guest's disks and sockets go with
	// it (delete removes them too, for an owner killed by SIGKILL).
	defer os.RemoveAll(rec.Work)
	conn, sig, orphaned := awaitStart(l, sigs, filepath.Join(dir, vmRecordFile))
	l.Close()
	if conn == nil {
		if orphaned {
			dropCgroup(rec.Cgroup)
		}
		return 128 + int(sig)
	}
	defer conn.Close()
	answer := func(s string) { conn.Write([]byte(s + "\n")) }
	if line, _ := bufio.NewReader(conn).ReadString('\n'); strings.TrimSpace(line) != "start" {
		answer("error unexpected start request")
		return 125
	}
	terminal := rec.Spec.Process.Terminal
	stdio := agent.Stdio{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	if rec.Spec.Process.Terminal {
		if b := tty.Size(os.Stdin); b != nil {
			rec.Spec.Process.ConsoleSize = b
		}
	}
	rc := vm.RunConfig{ID: rec.ID, Dir: rec.Work, Spec: rec.Spec, Layers: rec.Layers, Guest: rec.Guest}
	if netnsPath(rec.Spec) != "" {
		// The owner runs in the namespace the spec names (dockerd's,
		// CNI's): the guest takes over its eth0, if it has one.
		rc.Network = &vm.Network{}
	}
	m, err := vm.Boot(context.Background(), rc, stdio)
	if err != nil {
		answer("error " + strings.ReplaceAll(err.Error(), "\n", "; "))
		var se *vm.StartError
		if errors.As(err, &se) {
			return se.Code
		}
		return 125
	}
	q := procRef{Pid: m.Pid(), Start: instance.ProcStart(m.Pid())}
	if err := writeJSON(filepath.Join(dir, vmQEMUFile), q); err != nil {
		m.Destroy()
		answer("error " + err.Error())
		return 125
	}
	stop, err := instance.ServeControl(instance.ControlSocket(dir), m)
	if err != nil {
		m.Destroy()
		answer("error " + err.Error())
		return 125
	}
	if err := os.WriteFile(filepath.Join(dir, vmRunningFile), nil, 0o600); err != nil {
		stop()
		m.Destroy()
		answer("error " + err.Error())
		return 125
	}
	answer("ok")
	conn.Close()

	go func() {
		for s := range sigs {
			if s == syscall.SIGWINCH {
				if b := tty.Size(os.Stdin); terminal && b != nil {
					m.Resize(uint16(b.Height), uint16(b.Width))
				}
				continue
			}
			m.Signal(s.(syscall.Signal))
		}
	}()
	st, werr := m.Wait()
	stop()
	m.Destroy()
	if werr != nil {
		fmt.Fprintf(os.Stderr, "berth-runtime: %v\n", werr)
	}
	return st.Code
}

// awaitStart waits for the start connection; a signal that would end
// the process by default ends the wait instead (conn nil), and so does
// the removal of the state directory (record is its vm.json): nobody
// can start the VM any more, and the owner must not wait forever.
func awaitStart(l net.Listener, sigs <-chan os.Signal, record string) (_ net.Conn, _ syscall.Signal, orphaned bool) {
	conns := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			conns <- c
		}
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case c := <-conns:
			return c, 0, false
		case <-tick.C:
			if _, err := os.Stat(record); errors.Is(err, fs.ErrNotExist) {
				return nil, syscall.SIGKILL, true
			}
		case s := <-sigs:
			switch s {
			case syscall.SIGWINCH, syscall.SIGCONT, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU:
				continue
			}
			return nil, s.(syscall.Signal), false
		}
	}
}

// dropCgroup removes the cgroup of an owner whose state directory went
// away before start: nobody else knows of it any more. The owner moves
// into the parent cgroup first (a cgroup with a member cannot be
// removed); where that fails (the hierarchy's root, or a cgroup v2
// parent with controllers on) the cgroup stays.
func dropCgroup(path string) {
	if path == "" {
		return
	}
	parent, err := cgroups.New(gopath.Dir(path))
	if err != nil || parent.Add(os.Getpid()) != nil {
		return
	}
	if cg, err := cgroups.New(path); err == nil {
		cg.Destroy()
	}
}

// RunExecRelay is an exec's host process (`berth-runtime __vm-exec
// SOCKET`, the process spec as JSON on fd 3): it has the owner at SOCKET
// run the process in the guest with the relay's own stdio, and returns
// its exit status. A terminal's size changes (SIGWINCH on a controlling
// terminal) are passed on.
func RunExecRelay(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: berth-runtime __vm-exec SOCKET")
		return 125
	}
	f := os.NewFile(3, "process")
	b, err := io.ReadAll(f)
	f.Close()
	var p specs.Process
	if err == nil {
		err = json.Unmarshal(b, &p)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "berth-runtime exec: process: %v\n", err)
		return 125
	}
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	var resize <-chan specs.Box
	if p.Terminal {
		if b := tty.Size(os.Stdin); b != nil {
			p.ConsoleSize = b
		}
		// The guest has the process's pty and line discipline: a local
		// terminal is made raw, and its size changes are passed on.
		var restore func()
		resize, restore = tty.AttachSizes(os.Stdin)
		defer restore()
	}
	// Signals sent to the relay (ctr task kill --exec-id, the shim's
	// kill) go on to the guest process, as they would reach the process
	// itself under runc. SIGKILL cannot be caught: the owner sees the
	// connection close and kills the guest process.
	// (SIGWINCH is the local terminal's business.)
	caught := make(chan os.Signal, 16)
	for _, sig := range relayed {
		if sig != syscall.SIGWINCH {
			signal.Notify(caught, sig)
		}
	}
	signals := make(chan syscall.Signal, 16)
	go func() {
		for s := range caught {
			signals <- s.(syscall.Signal)
		}
	}()
	code, err := instance.ControlExec(args[0], &p, os.Stdin, os.Stdout, os.Stderr, resize, signals)
	if err != nil {
		fmt.Fprintf(os.Stderr, "berth-runtime exec: %v\n", err)
		if code == 0 {
			code = 125
		}
	}
	return code
}
