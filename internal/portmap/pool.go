package portmap

import (
	"net/netip"
	"slices"
	"sync/atomic"
)

// Pool balances a replicated service's loopback clients over its
// replicas, as the kernel's DNAT balances everyone else's: its Next is a
// Serve target that hands each new connection or UDP flow to the next
// backend in turn. The zero Pool has no backends and refuses every
// client. It is safe for concurrent use:
//
//	var pool portmap.Pool
//	pool.Set(healthy) // again whenever replicas come, go or change health
//	p.Serve(pool.Next)
type Pool struct {
	backends atomic.Pointer[[]netip.AddrPort]
	turn     atomic.Uint64
}

// Set replaces the backends. Connections already relayed stay where they
// are; new ones go to the new set. An empty set refuses new clients.
func (p *Pool) Set(backends []netip.AddrPort) {
	bs := slices.Clone(backends)
	p.backends.Store(&bs)
}

// Next returns the backend for one new client of m, round robin over the
// current set (m's port plays no part: each backend names its own), or
// the invalid AddrPort, which Serve takes as a refusal, when there is
// none.
func (p *Pool) Next(m Mapping) netip.AddrPort {
	bs := p.backends.Load()
	if bs == nil || len(*bs) == 0 {
		return netip.AddrPort{}
	}
	return (*bs)[(p.turn.Add(1)-1)%uint64(len(*bs))]
}
