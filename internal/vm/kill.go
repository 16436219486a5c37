package vm

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
)

// A VM's workload is reached through the guest agent, the guest's PID 1,
// which the workload can put out of action: a root workload may freeze it
// (moving it into a cgroup of its own and freezing that), stop it under
// ptrace, or take its CPU. Signals that must end the instance therefore do
// not rely on the guest alone: SIGKILL ends QEMU itself when the guest has
// not ended the workload within killBound, and a terminating signal the
// owner itself got (a foreground run's SIGTERM or SIGINT) ends it so when
// the agent no longer answers, or when it comes a second time.

// killBound is how long the guest has to end its workload after SIGKILL
// before QEMU is killed: enough for a healthy agent under software
// emulation on a loaded machine, short enough for rm -f and stop.
const killBound = 4 * time.Second

// relayBound bounds the relay of one signal to the agent: a guest that
// stopped reading its channel must not hang the caller.
const relayBound = 2 * time.Second

// answerBound is how long the agent has to answer after a terminating
// signal the owner relayed, before the guest counts as out of berth's
// reach.
const answerBound = 5 * time.Second

// Signal relays sig to the workload in the guest. SIGKILL ends the
// workload whatever the guest does (see Kill) and returns at once.
func (m *Machine) Signal(sig syscall.Signal) error {
	if sig == syscall.SIGKILL {
		m.Kill()
		return nil
	}
	return m.relay(sig)
}

// relay passes sig to the agent, waiting no longer than relayBound for
// the channel to take it.
func (m *Machine) relay(sig syscall.Signal) error {
	done := make(chan error, 1)
	go func() { done <- m.proc.Signal(sig) }()
	select {
	case err := <-done:
		return err
	case <-time.After(relayBound):
		return fmt.Errorf("vm %s: the guest did not take signal %d (%v) within %v: %w", m.cfg.ID, int(sig), sig, relayBound, errdefs.ErrUnavailable)
	}
}

// Kill ends the workload as SIGKILL does, and returns at once: the agent
// is told to kill it, and when QEMU has not ended within killBound (a
// guest whose agent is frozen, stopped or gone; or a guest still flushing
// its shares after the workload ended), QEMU is killed. Wait then reports
// exit status 137 unless the workload ended by itself first.
func (m *Machine) Kill() { m.kill(killBound) }

// kill is Kill with QEMU killed after bound (at once for 0).
func (m *Machine) kill(bound time.Duration) {
	m.killOnce.Do(func() {
		close(m.killed)
		// The relay may block on a guest that stopped reading: it
		// ends with the connection.
		go func() { _ = m.proc.Signal(syscall.SIGKILL) }()
	})
	go func() {
		select {
		case <-m.vm.Exited():
		case <-time.After(bound):
			trace("the guest did not end the workload: killing qemu")
			_ = m.vm.Kill()
		}
	}()
}

// killRequested reports whether the workload was killed (Kill).
func (m *Machine) killRequested() bool {
	select {
	case <-m.killed:
		return true
	default:
		return false
	}
}

// Interrupt relays a terminating signal (SIGTERM, SIGINT, SIGHUP,
// SIGQUIT) that the owner itself got, as a foreground run does, and keeps
// the guest to it: when the agent does not take the signal within
// relayBound or does not answer within answerBound, QEMU is killed at
// once; when a second such signal comes, the instance ends as with
// SIGKILL. A paused guest holds the signal until it resumes and is left
// alone.
func (m *Machine) Interrupt(sig syscall.Signal) error {
	if m.interrupted.Swap(true) {
		m.Kill()
		return nil
	}
	if err := m.relay(sig); err != nil {
		m.kill(0)
		return err
	}
	go func() {
		if !m.answers(answerBound) {
			// It did not answer: waiting for it to kill is in vain.
			m.kill(0)
		}
	}()
	return nil
}

// answers reports whether the guest agent answers a query within
// timeout, or need not: the guest is paused, or the workload ended.
func (m *Machine) answers(timeout time.Duration) bool {
	if m.paused() {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := m.client.Stats(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		return true // an answer, or the connection's end: the end is known
	}
	return m.paused() // paused meanwhile
}

// paused reports whether QEMU says the guest's vCPUs are stopped.
func (m *Machine) paused() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := m.vm.QMP().QueryStatus(ctx)
	return err == nil && st.Status == "paused"
}
