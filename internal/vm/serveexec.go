package vm

import (
	"context"
	"errors"
	"os"
	"syscall"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/agent"
)

// ServeExec runs sp in the guest beside the workload for another process
// (the instance's control socket: berth exec, berth-runtime's exec relay)
// with that process's stdio, and returns its exit code (128+N for signal
// N; 126, 127 or 125 when it could not start). Window sizes on resize and
// signals on signals are passed on while it runs; when both channels are
// closed, the caller has hung up and the process is killed.
func (m *Machine) ServeExec(sp *specs.Process, stdin, stdout, stderr *os.File, resize <-chan specs.Box, signals <-chan syscall.Signal) (int, error) {
	proc, err := m.StartExec(context.Background(), sp, agent.Stdio{Stdin: stdin, Stdout: stdout, Stderr: stderr})
	if err != nil {
		var se *StartError
		if errors.As(err, &se) {
			return se.Code, err
		}
		return 125, err
	}
	done := make(chan struct{})
	go func() {
		for resize != nil || signals != nil {
			select {
			case b, ok := <-resize:
				if !ok {
					resize = nil
					continue
				}
				proc.Resize(uint16(b.Height), uint16(b.Width))
			case sig, ok := <-signals:
				if !ok {
					signals = nil
					continue
				}
				proc.Signal(sig)
			case <-done:
				return
			}
		}
		proc.Signal(syscall.SIGKILL) // hung up while it runs
	}()
	st, err := proc.Wait()
	close(done)
	return st.Code, err
}
