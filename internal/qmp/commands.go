package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"sort"
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

// SerialPortChange is the data of a VSERPORT_CHANGE event.
type SerialPortChange struct {
	// ID is the virtserialport device's id.
	ID string `json:"id"`
	// Open is true when the guest opened the port, false when it closed it.
	Open bool `json:"open"`
}

// SerialPort decodes the data of a VSERPORT_CHANGE event; ok is false for
// other events or undecodable data.
func (e Event) SerialPort() (ch SerialPortChange, ok bool) {
	if e.Name != EventSerialPort || json.Unmarshal(e.Data, &ch) != nil {
		return SerialPortChange{}, false
	}
	return ch, true
}

// Migration is the reply of query-migrate, as far as berth reads it.
type Migration struct {
	// Status is "none", "setup", "active", "completed", "failed",
	// "cancelled", ...
	Status string `json:"status"`
	// ErrorDesc says why a failed migration failed.
	ErrorDesc string `json:"error-desc"`
}

// SetMigrationCapabilities turns migration capabilities on or off, such as
// "x-ignore-shared" (RAM that is a shared file is left out of the stream:
// the file itself is the saved RAM).
func (c *Client) SetMigrationCapabilities(ctx context.Context, caps map[string]bool) error {
	type capability struct {
		Capability string `json:"capability"`
		State      bool   `json:"state"`
	}
	var list []capability
	for name, on := range caps {
		list = append(list, capability{name, on})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Capability < list[j].Capability })
	return c.Execute(ctx, "migrate-set-capabilities", map[string]any{"capabilities": list}, nil)
}

// Migrate starts saving the VM to uri ("fd:N" for a descriptor QEMU
// holds, "exec:CMD", ...); QueryMigrate says when it is done.
func (c *Client) Migrate(ctx context.Context, uri string) error {
	return c.Execute(ctx, "migrate", map[string]string{"uri": uri}, nil)
}

// GetFD passes f to QEMU, which keeps its own copy under name (the
// getfd command): "fd:NAME" in Migrate names it. The connection must be
// a unix socket.
func (c *Client) GetFD(ctx context.Context, name string, f *os.File) error {
	return c.execute(ctx, "getfd", map[string]string{"fdname": name}, nil, f)
}

// MigrateIncoming starts loading a saved VM from uri into a QEMU started
// with -incoming defer; QueryMigrate says when it is done.
func (c *Client) MigrateIncoming(ctx context.Context, uri string) error {
	return c.Execute(ctx, "migrate-incoming", map[string]string{"uri": uri}, nil)
}

// QueryMigrate returns the state of the current (or last) migration.
func (c *Client) QueryMigrate(ctx context.Context) (Migration, error) {
	var m Migration
	err := c.Execute(ctx, "query-migrate", nil, &m)
	return m, err
}
