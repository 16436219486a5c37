package qmp

import (
	"context"
	"encoding/json"
	"errors"
)

// Status is the reply of query-status.
type Status struct {
	// Status is QEMU's run state: "running", "paused", "prelaunch",
	// "shutdown", "guest-panicked", "internal-error", ...
	Status  string `json:"status"`
	Running bool   `json:"running"`
}

// QueryStatus returns the VM's run state.
func (c *Client) QueryStatus(ctx context.Context) (Status, error) {
	var s Status
	err := c.Execute(ctx, "query-status", nil, &s)
	return s, err
}

// Stop pauses the guest's vCPUs.
func (c *Client) Stop(ctx context.Context) error {
	return c.Execute(ctx, "stop", nil, nil)
}

// Cont resumes a paused guest (or starts one created with -S).
func (c *Client) Cont(ctx context.Context) error {
	return c.Execute(ctx, "cont", nil, nil)
}

// SystemPowerdown presses the guest's ACPI power button; the guest decides
// whether and when to power off.
func (c *Client) SystemPowerdown(ctx context.Context) error {
	return c.Execute(ctx, "system_powerdown", nil, nil)
}

// Quit makes QEMU exit at once. QEMU may hang up before its reply is read;
// that counts as success.
func (c *Client) Quit(ctx context.Context) error {
	err := c.Execute(ctx, "quit", nil, nil)
	if errors.Is(err, ErrClosed) {
		return nil
	}
	return err
}

// ShutdownInfo is the data of a SHUTDOWN event.
type ShutdownInfo struct {
	// Guest is true when the guest caused the shutdown (power off, reset
	// with -no-reboot, panic with a panic device).
	Guest bool `json:"guest"`
	// Reason is QEMU's ShutdownCause: "guest-shutdown", "guest-reset",
	// "guest-panic", "host-qmp-quit", "host-signal", ...
	Reason string `json:"reason"`
}

// Shutdown decodes the data of a SHUTDOWN event; ok is false for other
// events or undecodable data.
func (e Event) Shutdown() (info ShutdownInfo, ok bool) {
	if e.Name != EventShutdown || json.Unmarshal(e.Data, &info) != nil {
		return ShutdownInfo{}, false
	}
	return info, true
}
