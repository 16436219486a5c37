package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
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

// runHooks runs the hooks of one point in order, each with the container's
// state JSON on its stdin, and stops at the first failure. Every hook runs
// in the runtime's namespaces (berth-runtime does not enter the
// container's for createContainer and startContainer; see docs/runtime.md).
func runHooks(spec *specs.Spec, point string, state specs.State) error {
	hooks := hooksOf(spec, point)
	if len(hooks) == 0 {
		return nil
	}
	in, err := json.Marshal(state)
	if err != nil {
		return err
	}
	for i, h := range hooks {
		if err := runHook(h, in); err != nil {
			return fmt.Errorf("%s hook #%d (%s): %w", point, i, h.Path, err)
		}
	}
	return nil
}

func runHook(h specs.Hook, state []byte) error {
	ctx := context.Background()
	if h.Timeout != nil && *h.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(*h.Timeout)*time.Second)
		defer cancel()
	}
	args := h.Args
	if len(args) == 0 {
		args = []string{h.Path}
	}
	cmd := exec.CommandContext(ctx, h.Path)
	cmd.Args = args
	cmd.Env = h.Env
	if cmd.Env == nil {
		cmd.Env = []string{}
	}
	cmd.Stdin = bytes.NewReader(state)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		return fmt.Errorf("timed out after %ds", *h.Timeout)
	}
	if err != nil {
		msg := strings.TrimSpace(out.String())
		if msg != "" {
			return fmt.Errorf("%v: %s", err, strings.ReplaceAll(msg, "\n", "; "))
		}
		return err
	}
	return nil
}
