package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/engine"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/lifecycle"
)

// monitorVerb is the hidden verb of the per-instance monitor process.
const monitorVerb = "__monitor"

// The monitor's modes, after its instance's ID on its command line (the
// ID stays right after the verb: rm -f finds monitors by that pair).
const (
	// monitorRun: run -d's first start; a failed start removes the
	// instance.
	monitorRun = ""
	// monitorStart: a user's start of a stopped instance (berth start,
	// restart, the boot-time start; lifecycle.Revive recorded it).
	monitorStart = "--start"
	// monitorAgain: a restart by the restart policy after a reconcile
	// found the owner gone (lifecycle.Reconcile recorded it).
	monitorAgain = "--again"
)

// spawnMonitor starts a monitor for instance id in mode, in a session of
// its own, and returns it; files become its fds 3 and up.
func spawnMonitor(root, id, mode string, files ...*os.File) (*os.Process, error) {
	args := []string{"--root", root, monitorVerb, id}
	if mode != monitorRun {
		args = append(args, mode)
	}
	cmd := exec.Command("/proc/self/exe", args...)
	cmd.ExtraFiles = files
	// The monitor lives as long as the instance: one P keeps its threads
	// and caches, and so its memory, small.
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start monitor: %w", err)
	}
	return cmd.Process, nil
}

// reviver is lifecycle.Spawner for berth: a monitor that starts the
// instance again, as its restart policy asks, after a reconcile.
func reviver(root string) lifecycle.Spawn {
	return func(id string) (int, error) {
		p, err := spawnMonitor(root, id, monitorAgain)
		if err != nil {
			return 0, err
		}
		pid := p.Pid
		_ = p.Release()
		return pid, nil
	}
}

// runDetached starts the instance under a monitor process of its own and
// returns once the workload runs (printing its ID) or failed to start.
// guard's cancel reaches the monitor through a pipe (see cmdMonitor); a
// start given up on kills it.
func runDetached(g *globals, guard *startGuard, st *instance.Store, in *instance.Instance) error {
	r, w, err := os.Pipe()
	if err != nil {
		_ = st.Remove(in.ID)
		return guard.failed(err)
	}
	defer r.Close()
	cr, cw, err := os.Pipe()
	if err != nil {
		w.Close()
		_ = st.Remove(in.ID)
		return guard.failed(err)
	}
	defer cw.Close()
	proc, err := spawnMonitor(g.root, in.ID, monitorRun, w, cr)
	w.Close()
	cr.Close()
	if err != nil {
		_ = st.Remove(in.ID)
		return guard.failed(err)
	}
	stopCancel := guard.monitoring(proc.Pid, cw)
	_ = proc.Release()
	line, _ := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimSpace(line)
	stopCancel()
	if line == "ok" {
		fmt.Println(in.ID)
		if sig, _ := guard.settle(); sig != 0 {
			// The start won the race with the signal: the workload gets
			// it, as a foreground one would.
			if _, cur, err := lookupInstance(g, in.ID); err == nil {
				_ = lifecycle.Signal(st, cur, sig)
			}
		}
		return nil
	}
	// The monitor removed the instance; it reports "CODE message".
	code, msg, ok := parseReport(line)
	if !ok {
		_ = st.Remove(in.ID)
		return guard.failed(errors.New("the monitor exited before starting the instance"))
	}
	if err := guard.failed(nil); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "berth run: %s\n", msg)
	return exitStatus(code)
}

// parseReport reads a monitor's report of a failed start, "CODE message".
func parseReport(line string) (int, string, bool) {
	codeStr, msg, _ := strings.Cut(line, " ")
	code, err := strconv.Atoi(codeStr)
	return code, msg, line != "" && err == nil
}

// cmdMonitor is the owner of one detached instance: it starts it, owns
// the workload's stdio, writes its output to the log, runs its health
// check and records its end; then, as its restart policy (or its health
// check) asks, it waits the back-off and starts it again, until it ends
// for good or the user stops it. Started as monitorRun or monitorStart,
// it reports the first start's outcome on fd 3 and is cancelled through
// fd 4 (see runDetached).
func cmdMonitor(g *globals, args []string) error {
	container.Prewarm()
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGPIPE)
	debug.SetGCPercent(20)
	if len(args) < 1 || len(args) > 2 {
		return errors.New("usage: __monitor ID [--start|--again]")
	}
	mode := monitorRun
	if len(args) == 2 {
		mode = args[1]
	}
	var report *os.File
	ctx := context.Background()
	if mode != monitorAgain {
		report = os.NewFile(3, "report")
		ctx = monitorContext()
	}
	st, err := g.instanceStore()
	if err != nil {
		return err
	}
	in, err := st.Get(args[0])
	if err != nil {
		return err
	}
	fail := func(err error) error {
		if mode == monitorRun {
			return failMonitor(st, in, report, err)
		}
		_ = lifecycle.Failed(st, in.ID, exitCode(err), err)
		if report != nil {
			fmt.Fprintf(report, "%d %s\n", exitCode(err), oneLine(err))
			report.Close()
		}
		return err
	}
	if mode != monitorRun {
		if in, err = lifecycle.Again(st, in.ID, mode == monitorAgain); err != nil {
			if report != nil {
				fmt.Fprintf(report, "%d %s\n", exitCode(err), oneLine(err))
			}
			return nil // stopped by the user meanwhile, or owned by another
		}
	}
	images, err := g.imageStore()
	if err != nil {
		return fail(err)
	}
	img, err := images.Resolve(in.ImageID)
	if err != nil {
		return fail(err)
	}
	if err := holdImage(images, img); err != nil {
		return fail(err)
	}
	logCfg := instance.DefaultLogConfig
	if in.LogConfig != nil {
		logCfg = *in.LogConfig
	}
	log, err := instance.CreateLog(st.LogPath(in.ID), logCfg)
	if err != nil {
		return fail(err)
	}
	defer log.Close()
	var backoff instance.Backoff
	for {
		began := time.Now()
		c, drain, err := startOwned(ctx, g, st, in, log)
		restart := false
		if err != nil {
			if report != nil {
				return fail(err) // the user sees why; the policy does not retry
			}
			_ = lifecycle.Failed(st, in.ID, exitCode(err), err)
		} else {
			if report != nil {
				fmt.Fprintln(report, "ok")
				report.Close()
				report = nil
			}
			// Start-up (image lookup, spec, seccomp compile) is over: hand
			// its heap back to the kernel, the monitor idles from now on.
			debug.FreeOSMemory()
			stopHealth := lifecycle.WatchHealth(st, in, c)
			_, _ = lifecycle.Finish(st, in, c, drain)
			restart = stopHealth()
		}
		if heldStdin != nil {
			heldStdin.Close()
			heldStdin = nil
		}
		mode = monitorAgain
		if again, err := lifecycle.Ended(st, in.ID, restart); err != nil || !again {
			return nil
		}
		// The back-off, cut short when the user stops the instance.
		for wake := time.Now().Add(backoff.Next(time.Since(began))); time.Now().Before(wake); {
			time.Sleep(min(100*time.Millisecond, time.Until(wake)))
			if !lifecycle.Waiting(st, in.ID) {
				break
			}
		}
		if in, err = lifecycle.Again(st, in.ID, true); err != nil {
			return nil
		}
	}
}

// startOwned starts the instance with stdio that its monitor copies into
// log, and returns it with the drain Finish waits for.
func startOwned(ctx context.Context, g *globals, st *instance.Store, in *instance.Instance, log *instance.LogWriter) (engine.Running, func(), error) {
	stdio, copiers, closeChild, err := monitorStdio(in, log)
	if err != nil {
		return nil, nil, err
	}
	c, err := lifecycle.Start(ctx, lifecycle.StartOptions{Store: st, Instance: in, Stdio: stdio, Root: g.root})
	drain := copiers.Wait
	if lifecycle.Traits(in).OwnerWritesOutput {
		// The monitor itself writes the workload's output into the
		// pipes: they close once the workload has ended.
		drain = func() { closeChild(); copiers.Wait() }
	} else {
		closeChild()
	}
	if err != nil {
		closeChild()
		return nil, nil, err
	}
	if master := c.Console(); master != nil {
		// -t: the terminal's output goes to the log until every holder of
		// its slave has ended. The master stays open (and unwritten) for
		// the instance's life, so a shell reading the terminal waits.
		copiers.Add(1)
		go func() {
			defer copiers.Done()
			defer master.Close()
			log.Copy("stdout", master)
		}()
	}
	return c, drain, nil
}

// heldStdin is the write end of a -i instance's stdin, kept open (and
// referenced, so no finalizer closes it) for the monitor's lifetime.
var heldStdin *os.File

// monitorStdio makes the workload's stdio: pipes whose output the monitor
// copies into the log. With -i, stdin is a pipe the monitor holds open, so
// a shell waiting on it keeps running. With -t there is none: the engine
// allocates the terminal in the instance (see cmdMonitor).
func monitorStdio(in *instance.Instance, log *instance.LogWriter) (container.Stdio, *sync.WaitGroup, func(), error) {
	var wg sync.WaitGroup
	var child []*os.File
	closeChild := func() {
		for _, f := range child {
			f.Close()
		}
	}
	copyTo := func(stream string, r io.ReadCloser) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Close()
			log.Copy(stream, r)
		}()
	}
	var stdio container.Stdio
	if in.Tty && lifecycle.Traits(in).LocalTerminal {
		return stdio, &wg, closeChild, nil
	}
	if in.Interactive {
		r, w, err := os.Pipe()
		if err != nil {
			return stdio, nil, closeChild, err
		}
		stdio.Stdin = r
		child = append(child, r)
		heldStdin = w
	}
	for _, stream := range []string{"stdout", "stderr"} {
		r, w, err := os.Pipe()
		if err != nil {
			closeChild()
			return stdio, nil, closeChild, err
		}
		if stream == "stdout" {
			stdio.Stdout = w
		} else {
			stdio.Stderr = w
		}
		child = append(child, w)
		copyTo(stream, r)
	}
	return stdio, &wg, closeChild, nil
}

// failMonitor reports a failed start to the waiting CLI and removes the
// instance, so a failed start leaves nothing behind.
func failMonitor(st *instance.Store, in *instance.Instance, report *os.File, err error) error {
	fmt.Fprintf(report, "%d %s\n", exitCode(err), oneLine(err))
	report.Close()
	_ = st.Remove(in.ID)
	return err
}

// monitorContext is what a monitor's start runs under: cancelled when the
// CLI waiting for the start writes to the pipe it passed as fd 4 (see
// runDetached). The pipe's end of file (the CLI is done, or gone)
// cancels nothing.
func monitorContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	syscall.CloseOnExec(4) // not for the workload's processes
	go func() {
		f := os.NewFile(4, "cancel")
		var b [1]byte
		if n, _ := f.Read(b[:]); n > 0 {
			cancel()
		}
		f.Close()
	}()
	return ctx
}
