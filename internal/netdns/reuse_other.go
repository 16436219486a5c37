//go:build !linux

package netdns

import (
	"fmt"
	"syscall"

	"github.com/berth-dev/berth/internal/errdefs"
)

// reusePort fails: the resolver shares its port among processes the way
// Linux's SO_REUSEPORT does, and berth's networks exist only on Linux.
func reusePort(network, address string, c syscall.RawConn) error {
	return fmt.Errorf("SO_REUSEPORT: need Linux: %w", errdefs.ErrNotSupported)
}
