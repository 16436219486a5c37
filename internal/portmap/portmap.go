// Package portmap publishes an instance's ports on the host, as Docker's
// -p and -P do: it parses the flags' syntax into Mappings, claims each
// mapping's host port at start (so a taken port is refused at once), and
// relays connections that reach those ports to the instance.
//
// The kernel's DNAT (set by another package) carries traffic from other
// hosts to the instance before it reaches the sockets held here; what the
// proxy sees in practice is clients on loopback, which DNAT cannot serve
// without route_localnet. The relay still works for any client.
//
// berth publishes on IPv4 only for now: an IPv6 host address is refused.
package portmap

import (
	"fmt"
	"net/netip"
	"strconv"
)

// Mapping is one published port: host IP and port to the instance's port.
type Mapping struct {
	// Proto is "tcp" or "udp".
	Proto string
	// HostIP is the host address to listen on; the zero Addr means every
	// address (0.0.0.0).
	HostIP netip.Addr
	// HostPort is the host port; 0 means any free port the kernel picks.
	// With HostPortEnd set it is the first port of a range to pick from.
	HostPort uint16
	// HostPortEnd, when not 0, is the last port of the range
	// HostPort-HostPortEnd from which one free host port is picked.
	HostPortEnd uint16
	// Port is the instance's port.
	Port uint16
}

// String is the mapping as `berth port` prints it, after Docker's
// `docker port`: "80/tcp -> 0.0.0.0:32768". An unpicked range shows as
// "80/tcp -> 0.0.0.0:8000-8002".
func (m Mapping) String() string {
	return fmt.Sprintf("%d/%s -> %s", m.Port, m.Proto, m.hostSide())
}

// hostAddr names the mapping's host side as errors do:
// "0.0.0.0:8080/tcp", or "0.0.0.0:8000-8002/tcp" for a range.
func (m Mapping) hostAddr() string {
	return m.hostSide() + "/" + m.Proto
}

// hostSide is "IP:PORT" or "IP:FIRST-LAST", with 0.0.0.0 for every
// address.
func (m Mapping) hostSide() string {
	ip := "0.0.0.0"
	if m.HostIP.IsValid() {
		ip = m.HostIP.String()
		if m.HostIP.Is6() {
			ip = "[" + ip + "]"
		}
	}
	port := strconv.Itoa(int(m.HostPort))
	if m.HostPortEnd != 0 {
		port += "-" + strconv.Itoa(int(m.HostPortEnd))
	}
	return ip + ":" + port
}
