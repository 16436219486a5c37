//go:build !linux

package firewall

import (
	"fmt"

	"github.com/berth-dev/berth/internal/errdefs"
)

var errNotLinux = fmt.Errorf("firewall: nf_tables is Linux only: %w", errdefs.ErrNotSupported)

// Firewall changes berth's table; off Linux it does nothing but refuse.
type Firewall struct{}

// New fails off Linux.
func New(lockPath string) (*Firewall, error) { return nil, errNotLinux }

// Close does nothing.
func (f *Firewall) Close() error { return nil }

// EnsureNetwork fails off Linux.
func (f *Firewall) EnsureNetwork(n Network) error { return errNotLinux }

// RemoveNetwork fails off Linux.
func (f *Firewall) RemoveNetwork(n Network) error { return errNotLinux }

// AddPorts fails off Linux.
func (f *Firewall) AddPorts(ports []Port) error { return errNotLinux }

// RemovePorts fails off Linux.
func (f *Firewall) RemovePorts(ports []Port) error { return errNotLinux }

// ListPorts fails off Linux.
func (f *Firewall) ListPorts() ([]Port, error) { return nil, errNotLinux }

// Check says that berth's firewall needs Linux.
func (f *Firewall) Check() error { return errNotLinux }

// SetService fails off Linux.
func (f *Firewall) SetService(s Service, backends []Backend) error { return errNotLinux }

// RemoveService fails off Linux.
func (f *Firewall) RemoveService(s Service) error { return errNotLinux }

// ListServices fails off Linux.
func (f *Firewall) ListServices() (map[Service][]Backend, error) { return nil, errNotLinux }
