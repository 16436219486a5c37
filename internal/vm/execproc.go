package vm

import (
	"context"
	"errors"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/agent"
)

// StartExec starts sp in the guest beside the workload and returns it
// running, for a caller that waits for it, signals it and resizes its
// terminal itself (Exec does all of that in one call). A process the
// guest could not start is a *StartError (126, 127 or 125).
func (m *Machine) StartExec(ctx context.Context, sp *specs.Process, stdio agent.Stdio) (*agent.Proc, error) {
	proc, err := m.client.Exec(ctx, *ProcessOf(sp), stdio)
	if err != nil {
		var se *agent.StartError
		if errors.As(err, &se) {
			return nil, &StartError{Code: se.Code, Msg: se.Msg}
		}
		return nil, err
	}
	return proc, nil
}
