package lifecycle

import (
	"bytes"
	"context"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/engine"
	"github.com/berth-dev/berth/internal/health"
	"github.com/berth-dev/berth/internal/instance"
)

// healthGrace is how long a health check's stop or restart waits after
// SIGTERM before SIGKILL, stop's default.
const healthGrace = 10 * time.Second

// WatchHealth runs the health check of in (in.Healthcheck), which its
// owner started as w, until the returned stop is called (once the
// workload has ended). Each check runs in the instance through its
// engine's exec, with the workload's environment and user, and its
// result goes into the record (Instance.Health). When the instance turns
// unhealthy, in.HealthOnFailure is applied through w: kill sends
// SIGKILL (the restart policy then decides), stop stops it as the user
// would, restart stops it and has stop report that the owner should
// start it again (see Ended's force). Without a check it does nothing.
func WatchHealth(st *instance.Store, in *instance.Instance, w engine.Running) (stop func() (restart bool)) {
	c := in.Healthcheck
	if c.Disabled() {
		return func() bool { return false }
	}
	ctx, cancel := context.WithCancel(context.Background())
	var restart atomic.Bool
	done := make(chan struct{})
	started := time.Now()
	bundle, bundleErr := st.LoadBundle(in.ID)
	probe := func(ctx context.Context, cmd []string) (int, string, error) {
		if bundleErr != nil {
			return -1, "", bundleErr
		}
		return execCheck(ctx, st, in.ID, bundle, cmd)
	}
	paused := func() bool {
		cur, err := st.Get(in.ID)
		return err != nil || cur.Status != instance.Running
	}
	report := func(s health.State, _ health.Result) {
		var was string
		_, _ = st.Update(in.ID, func(x *instance.Instance) error {
			if x.Health != nil {
				was = x.Health.Status
			}
			x.Health = &s
			return nil
		})
		if s.Status != health.Unhealthy || was == health.Unhealthy {
			return
		}
		switch in.HealthOnFailure {
		case instance.HealthKill:
			_ = w.Signal(syscall.SIGKILL)
		case instance.HealthStop:
			_, _ = st.Update(in.ID, func(x *instance.Instance) error { x.StoppedByUser = true; return nil })
			stopOwned(ctx, w)
		case instance.HealthRestart:
			restart.Store(true)
			stopOwned(ctx, w)
		}
	}
	go func() {
		defer close(done)
		health.Run(ctx, c, started, probe, paused, report)
	}()
	return func() bool {
		cancel()
		<-done
		return restart.Load()
	}
}

// stopOwned stops a workload its owner holds: SIGTERM, then SIGKILL
// unless it ended (ctx, cancelled once it has) within healthGrace.
func stopOwned(ctx context.Context, w engine.Running) {
	_ = w.Signal(syscall.SIGTERM)
	select {
	case <-ctx.Done():
	case <-time.After(healthGrace):
		_ = w.Signal(syscall.SIGKILL)
	}
}

// execCheck runs cmd in instance id as its workload's process would run
// (environment, user, working directory), without a terminal, and
// returns its exit code and the first health.MaxOutput bytes of its
// output.
func execCheck(ctx context.Context, st *instance.Store, id string, b *instance.Bundle, cmd []string) (int, string, error) {
	cur, err := st.Get(id)
	if err != nil {
		return -1, "", err
	}
	h, err := Handle(st, cur)
	if err != nil {
		return -1, "", err
	}
	p := *b.Spec.Process
	p.Args, p.Terminal, p.ConsoleSize = cmd, false, nil
	r, wr, err := os.Pipe()
	if err != nil {
		return -1, "", err
	}
	defer r.Close()
	var out bytes.Buffer
	var copied sync.WaitGroup
	copied.Add(1)
	go func() {
		defer copied.Done()
		_, _ = io.Copy(&out, io.LimitReader(r, health.MaxOutput))
		_, _ = io.Copy(io.Discard, r)
	}()
	proc, err := h.Exec(ctx, &p, engine.Stdio{Stdout: wr, Stderr: wr}, nil)
	wr.Close()
	if err != nil {
		return -1, "", err
	}
	exit, err := proc.Wait()
	if err != nil {
		return -1, "", err
	}
	// A process the check left in the background may hold the pipe: its
	// output is not waited for beyond a moment.
	waited := make(chan struct{})
	go func() { copied.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(time.Second):
		r.Close()
		<-waited
	}
	return exit.Code, out.String(), nil
}
