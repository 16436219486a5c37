package network

import (
	"errors"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Live TCP states of a conntrack entry: from the first SYN to the last
// ACK (TIME_WAIT and CLOSE are over).
const (
	tcpSynSent = 1
	tcpLastAck = 6
)

// Drain waits until the connections the kernel tracks to any of addrs
// (replicas taken out of their service's balancer: DNATed to them, or
// proxied) have ended, or until limit passes. It returns how many were
// still open.
func Drain(addrs []netip.Addr, limit time.Duration) int {
	want := map[netip.Addr]bool{}
	for _, a := range addrs {
		want[a] = true
	}
	deadline := time.Now().Add(limit)
	for {
		open := 0
		flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			continue
		}
		if err != nil {
			// No conntrack to ask: give the connections the limit.
			time.Sleep(time.Until(deadline))
			return -1
		}
		for _, f := range flows {
			src, ok := netip.AddrFromSlice(f.Reverse.SrcIP)
			if !ok || !want[src.Unmap()] || f.Forward.Protocol != unix.IPPROTO_TCP {
				continue
			}
			if tcp, ok := f.ProtoInfo.(*netlink.ProtoInfoTCP); ok && tcp.State >= tcpSynSent && tcp.State <= tcpLastAck {
				open++
			}
		}
		if open == 0 || time.Now().After(deadline) {
			return open
		}
		time.Sleep(100 * time.Millisecond)
	}
}
