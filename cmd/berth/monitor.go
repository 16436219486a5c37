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

	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/lifecycle"
)

// monitorVerb is the hidden verb of the per-instance monitor process.
const monitorVerb = "__monitor"

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
	cmd := exec.Command("/proc/self/exe", "--root", g.root, monitorVerb, in.ID)
	cmd.ExtraFiles = []*os.File{w, cr}
	// The monitor lives as long as the instance: one P keeps its threads
	// and caches, and so its memory, small.
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	cr.Close()
	if err != nil {
		_ = st.Remove(in.ID)
		return guard.failed(fmt.Errorf("start monitor: %w", err))
	}
	stopCancel := guard.monitoring(cmd.Process.Pid, cw)
	_ = cmd.Process.Release()
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
	codeStr, msg, _ := strings.Cut(line, " ")
	code, convErr := strconv.Atoi(codeStr)
	if line == "" || convErr != nil {
		_ = st.Remove(in.ID)
		return guard.failed(errors.New("the monitor exited before starting the instance"))
	}
	if err := guard.failed(nil); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "berth run: %s\n", msg)
	return exitStatus(code)
}

// cmdMonitor is the monitor process of one detached instance: it owns the
// workload's stdio, writes its output to the log and records its end.
func cmdMonitor(g *globals, args []string) error {
	container.Prewarm()
	report := os.NewFile(3, "report")
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGPIPE)
	debug.SetGCPercent(20)
	if len(args) != 1 {
		return errors.New("usage: __monitor ID")
	}
	st, err := g.instanceStore()
	if err != nil {
		return err
	}
	in, err := st.Get(args[0])
	if err != nil {
		return err
	}
	images, err := g.imageStore()
	if err != nil {
		return failMonitor(st, in, report, err)
	}
	img, err := images.Resolve(in.ImageID)
	if err != nil {
		return failMonitor(st, in, report, err)
	}
	if err := holdImage(images, img); err != nil {
		return failMonitor(st, in, report, err)
	}
	logCfg := instance.DefaultLogConfig
	if in.LogConfig != nil {
		logCfg = *in.LogConfig
	}
	log, err := instance.CreateLog(st.LogPath(in.ID), logCfg)
	if err != nil {
		return failMonitor(st, in, report, err)
	}
	defer log.Close()
	stdio, copiers, closeChild, err := monitorStdio(in, log)
	if err != nil {
		return failMonitor(st, in, report, err)
	}
	c, err := lifecycle.Start(monitorContext(), lifecycle.StartOptions{Store: st, Instance: in, Stdio: stdio, Root: g.root})
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
		return failMonitor(st, in, report, err)
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
	fmt.Fprintln(report, "ok")
	report.Close()
	// Start-up (image lookup, spec, seccomp compile) is over: hand its
	// heap back to the kernel, the monitor idles from now on.
	debug.FreeOSMemory()
	_, _ = lifecycle.Finish(st, in, c, drain)
	if heldStdin != nil {
		heldStdin.Close()
	}
	return nil
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
