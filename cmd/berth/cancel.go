package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/engine"
	"github.com/berth-dev/berth/internal/instance"
)

// `berth run` catches the signals it relays from its first instruction
// (catchEarlySignals). Until the workload runs, SIGINT, SIGTERM, SIGHUP
// and SIGQUIT cancel the start instead of waiting for it: what the start
// made is undone and berth exits 128+N, the status the workload would
// have had, killed by the signal. A start that cannot be interrupted
// (blocked on a lock another process holds, a read that never returns)
// must still yield: before the record exists there is nothing to undo
// and berth exits at once; after, it waits for the start to unwind for
// unwindGrace, or until a second such signal, then removes the record
// and the cgroup itself and exits (its QEMU and container init end with
// it). A signal that comes as the workload starts reaches it; other
// signals reach a foreground workload once it runs.

// cancels says whether sig cancels a start.
func cancels(sig syscall.Signal) bool {
	switch sig {
	case syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT:
		return true
	}
	return false
}

// unwindGrace bounds how long a cancelled start may take to undo what it
// made (a QEMU to kill, a container's init and cgroup) before berth does
// without it.
const unwindGrace = 5 * time.Second

// startGuard watches the signals of one start: of a foreground instance,
// or of a detached one until its monitor reports (see runDetached). A nil
// guard never cancels.
type startGuard struct {
	ctx     context.Context
	cancel  context.CancelFunc
	pre     engine.Prepared
	done    chan struct{} // closed by settle
	stopped chan struct{} // closed once watch has returned
	settled sync.Once

	// mu orders the record's creation against an abandoned start.
	mu      sync.Mutex
	sig     syscall.Signal   // the first signal that cancelled the start
	pending []syscall.Signal // every signal caught, in order, for the workload
	st      *instance.Store  // the record, once made
	id      string
	cgroup  string
	monitor int // a detached instance's monitor, once started
	monBorn uint64
}

// guardStart starts watching the signals caught for a foreground start;
// pre is the init prestarted for it, if any (it ends with an abandoned
// start).
func guardStart(pre engine.Prepared) *startGuard {
	awaitEarlySignals()
	ctx, cancel := context.WithCancel(context.Background())
	g := &startGuard{ctx: ctx, cancel: cancel, pre: pre, done: make(chan struct{}), stopped: make(chan struct{})}
	go g.watch(earlySignals)
	return g
}

// context is what the start runs under: cancelled by a signal.
func (g *startGuard) context() context.Context {
	if g == nil {
		return context.Background()
	}
	return g.ctx
}

func (g *startGuard) watch(ch <-chan os.Signal) {
	defer close(g.stopped)
	var unwound <-chan time.Time
	for {
		select {
		case <-g.done:
			return
		default:
		}
		select {
		case <-g.done:
			return
		case <-unwound:
			g.mu.Lock()
			g.abandon(g.sig, "the start did not unwind within "+unwindGrace.String()+": given up")
		case s := <-ch:
			sig := s.(syscall.Signal)
			g.mu.Lock()
			g.pending = append(g.pending, sig)
			if !cancels(sig) {
				g.mu.Unlock()
				continue
			}
			switch {
			case g.sig != 0:
				g.abandon(sig, "given up without waiting for the start to unwind")
			case g.st == nil:
				g.abandon(sig, "start cancelled")
			}
			g.sig = sig
			g.mu.Unlock()
			trace("start cancelled")
			g.cancel()
			unwound = time.After(unwindGrace)
		}
	}
}

// abandon ends berth, on sig, without waiting for the start: it removes
// the record and the container's cgroup, ends the prestarted init, and
// exits 128+N. The caller holds mu, which is never released: no record
// is made meanwhile.
func (g *startGuard) abandon(sig syscall.Signal, why string) {
	if instance.Alive(g.monitor, g.monBorn) {
		_ = syscall.Kill(g.monitor, syscall.SIGKILL)
	}
	if g.st != nil {
		if g.cgroup != "" {
			_ = container.Cleanup(g.cgroup)
		}
		_ = g.st.Remove(g.id)
	}
	if g.pre != nil {
		g.pre.Close()
	}
	fmt.Fprintf(os.Stderr, "berth run: %s before the workload started: %s\n", unix.SignalName(sig), why)
	os.Exit(128 + int(sig))
}

// create writes the instance's record, unless the start was cancelled.
func (g *startGuard) create(st *instance.Store, in *instance.Instance) error {
	if g == nil {
		return st.Create(in)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.ctx.Err(); err != nil {
		return err
	}
	if err := st.Create(in); err != nil {
		return err
	}
	g.st, g.id, g.cgroup = st, in.ID, in.Cgroup
	return nil
}

// monitoring hands the start to the monitor pid of a detached instance:
// a cancel is passed on as a byte on cancelPipe, and a start given up on
// kills the monitor. stop ends the passing on.
func (g *startGuard) monitoring(pid int, cancelPipe *os.File) (stop func() bool) {
	if g == nil {
		return func() bool { return true }
	}
	g.mu.Lock()
	g.monitor, g.monBorn = pid, instance.ProcStart(pid)
	g.mu.Unlock()
	return context.AfterFunc(g.ctx, func() { _, _ = cancelPipe.Write([]byte{1}) })
}

// settle ends the watch once the start is over, the workload running or
// not. It returns the signal that cancelled the start, 0 if none, and
// every signal caught until now, in order, for the workload.
func (g *startGuard) settle() (syscall.Signal, []syscall.Signal) {
	if g == nil {
		return 0, nil
	}
	g.settled.Do(func() {
		close(g.done)
		<-g.stopped
		g.cancel()
	})
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sig, g.pending
}

// failed is the error of a start that failed: the cancel's, when a
// signal cancelled it, else err.
func (g *startGuard) failed(err error) error {
	if sig, _ := g.settle(); sig != 0 {
		return &codedError{code: 128 + int(sig), err: fmt.Errorf("%s before the workload started: start cancelled", unix.SignalName(sig))}
	}
	return err
}
