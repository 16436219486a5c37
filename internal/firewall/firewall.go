// Package firewall keeps berth's packet filtering and NAT: masquerading
// traffic that leaves a berth network, forwarding for its bridges, and the
// DNAT of published ports.
//
// Everything lives in one nftables table, "ip berth", so that berth never
// edits another program's rules, with one exception: when the iptables-nft
// chain "ip filter FORWARD" exists (Docker sets its policy to drop, and a
// drop in any base chain drops the packet whatever berth's table accepts),
// EnsureNetwork inserts at its top "iifname <bridge> accept" and
// "oifname <bridge> accept", marked with the comment "berth:<bridge>", and
// RemoveNetwork deletes them. They use only expressions iptables-nft can
// read back, so iptables (and Docker through it) can still edit the table.
//
// The table holds:
//
//   - chain prerouting (nat, dstnat) and chain output (nat, -100): for
//     destinations of type local (and, in output, not 127.0.0.0/8, which a
//     userland proxy serves), DNAT through two maps: "ports", keyed by
//     meta l4proto . th dport, for ports published on every address, and
//     "addrports", keyed by ip daddr . meta l4proto . th dport, for ports
//     bound to one address. Both map to ipv4_addr . inet_service, so
//     publishing or withdrawing a port is one element change.
//   - for replicated services (SetService): two verdict maps keyed the same
//     way, "svcports" and "svcaddrports", looked up by the same two chains,
//     whose values are "goto svc/NAME/PROTO/HOSTIP/PORT": one chain per
//     service port, holding one rule, "dnat ip to numgen inc mod N map
//     { 0 : a . p, ... }" with an anonymous map (or, with no backend,
//     "reject"). Changing the backends flushes the chain and writes the
//     rule again in one batch; conntrack keeps established connections on
//     the backend they started with. A port is the instance's or the
//     service's, never both.
//   - chain postrouting (nat, srcnat): per network, masquerade what its
//     subnet sends out of another interface than its bridge, and masquerade
//     DNATed connections from the subnet that go back into the bridge
//     (hairpin: an instance reaching a published port through the host's
//     address, its own or a neighbour's). With br_netfilter on, the DNAT
//     back to the sender is bridged out of the port it came in by, so the
//     bridge's ports need hairpin mode on, as Docker sets it; that is the
//     bridge owner's job, not this package's.
//   - chain forward (filter, 0): per network, accept what comes from the
//     bridge and established or related traffic to it.
//
// A network's rules carry the comment "berth:<bridge>"; EnsureNetwork
// replaces them, RemoveNetwork deletes them, and the table itself is
// deleted when no network rule, published port or service is left.
//
// A Firewall acts on the network namespace of the thread that created it
// (New), from any goroutine. Every change takes an exclusive flock on the
// lock file given to New, so several berth processes can publish and
// withdraw ports at once; each change is one netlink batch, applied whole
// or not at all.
package firewall

import (
	"fmt"
	"net/netip"

	"github.com/berth-dev/berth/internal/errdefs"
)

// Network is one berth network: the bridge its instances are attached to
// and the IPv4 subnet they take their addresses from.
type Network struct {
	Bridge string
	Subnet netip.Prefix
}

// Port is one published port: packets to HostIP:HostPort over Proto go to
// Addr:Port. An invalid HostIP, or 0.0.0.0, means every local address;
// ListPorts reports those as 0.0.0.0.
type Port struct {
	Proto    string // "tcp" or "udp"
	HostIP   netip.Addr
	HostPort uint16
	Addr     netip.Addr
	Port     uint16
}

// String is the port as "tcp/0.0.0.0:8080->10.89.0.2:80".
func (p Port) String() string {
	return fmt.Sprintf("%s->%s", p.hostKey(), netip.AddrPortFrom(p.Addr, p.Port))
}

// hostKey names what two publishers may not share: "tcp/0.0.0.0:8080".
func (p Port) hostKey() string {
	host := p.HostIP
	if !host.IsValid() {
		host = netip.IPv4Unspecified()
	}
	return fmt.Sprintf("%s/%s", p.Proto, netip.AddrPortFrom(host, p.HostPort))
}

// anyAddr reports whether p is published on every local address.
func (p Port) anyAddr() bool {
	return !p.HostIP.IsValid() || p.HostIP.IsUnspecified()
}

// normalize checks p and returns it with IPv4-mapped addresses unmapped
// and an every-address HostIP spelt 0.0.0.0.
func (p Port) normalize() (Port, error) {
	host, err := normalizeHost("port "+p.String(), p.Proto, p.HostIP, p.HostPort)
	if err != nil {
		return p, err
	}
	p.HostIP = host
	if p.Port == 0 {
		return p, fmt.Errorf("port %s: port 0: %w", p, errdefs.ErrInvalid)
	}
	p.Addr = p.Addr.Unmap()
	if !p.Addr.Is4() || p.Addr.IsUnspecified() {
		return p, fmt.Errorf("port %s: destination is not an IPv4 address: %w", p, errdefs.ErrInvalid)
	}
	return p, nil
}

// normalizeHost checks the host side that ports and services share, and
// returns the host address unmapped, or 0.0.0.0 for every address. what
// names the port or service in errors.
func normalizeHost(what, proto string, ip netip.Addr, port uint16) (netip.Addr, error) {
	if proto != "tcp" && proto != "udp" {
		return ip, fmt.Errorf("%s: protocol %q is not tcp or udp: %w", what, proto, errdefs.ErrInvalid)
	}
	if port == 0 {
		return ip, fmt.Errorf("%s: port 0: %w", what, errdefs.ErrInvalid)
	}
	if !ip.IsValid() || ip.IsUnspecified() {
		return netip.IPv4Unspecified(), nil
	}
	ip = ip.Unmap()
	switch {
	case !ip.Is4():
		return ip, fmt.Errorf("%s: host address is not IPv4: %w", what, errdefs.ErrInvalid)
	case ip.IsLoopback():
		return ip, fmt.Errorf("%s: loopback is served by the userland proxy, not NAT: %w", what, errdefs.ErrInvalid)
	case ip.IsMulticast():
		return ip, fmt.Errorf("%s: host address is multicast: %w", what, errdefs.ErrInvalid)
	}
	return ip, nil
}

// normalize checks n and returns it with its subnet masked.
func (n Network) normalize() (Network, error) {
	if n.Bridge == "" || len(n.Bridge) > 15 {
		return n, fmt.Errorf("network %q: bridge name must be 1 to 15 bytes: %w", n.Bridge, errdefs.ErrInvalid)
	}
	if !n.Subnet.IsValid() || !n.Subnet.Addr().Is4() || n.Subnet.Bits() == 0 {
		return n, fmt.Errorf("network %q: subnet %s is not an IPv4 prefix: %w", n.Bridge, n.Subnet, errdefs.ErrInvalid)
	}
	n.Subnet = n.Subnet.Masked()
	return n, nil
}

// ruleTag is the comment on every rule EnsureNetwork adds for bridge.
func ruleTag(bridge string) string { return "berth:" + bridge }
