package runtime

import (
	"encoding/json"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/container"
)

// Hook points, as the runtime spec names them.
const (
	HookPrestart        = "prestart"
	HookCreateRuntime   = "createRuntime"
	HookCreateContainer = "createContainer"
	HookStartContainer  = "startContainer"
	HookPoststart       = "poststart"
	HookPoststop        = "poststop"
)

// hooksOf returns the spec's hooks for one point.
func hooksOf(spec *specs.Spec, point string) []specs.Hook {
	h := spec.Hooks
	if h == nil {
		return nil
	}
	switch point {
	case HookPrestart:
		//lint:ignore SA1019 deprecated in the spec, still used (dockerd's network hook)
		return h.Prestart
	case HookCreateRuntime:
		return h.CreateRuntime
	case HookCreateContainer:
		return h.CreateContainer
	case HookStartContainer:
		return h.StartContainer
	case HookPoststart:
		return h.Poststart
	case HookPoststop:
		return h.Poststop
	}
	return nil
}

// runHooks runs the hooks of one point in order in berth-runtime's own
// namespaces, each with the container's state JSON on its stdin, and
// stops at the first failure. (A container's createContainer and
// startContainer hooks run in the container: the engine runs them, see
// create.go and ops.go; a VM's all run here.)
func runHooks(spec *specs.Spec, point string, state specs.State) error {
	hooks := hooksOf(spec, point)
	if len(hooks) == 0 {
		return nil
	}
	in, err := json.Marshal(state)
	if err != nil {
		return err
	}
	return container.RunHooks(point, hooks, in)
}
