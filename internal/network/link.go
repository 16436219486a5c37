package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/firewall"
	"github.com/berth-dev/berth/internal/lockfile"
)

// Ensure makes n's firewall rules and, when it is missing (the first
// start after a create or a reboot), its bridge, and puts the gateway's
// address on it and brings it up (both no-ops when done already). The
// rules come first, so a bridge never exists without them.
func (s *Store) Ensure(n *Network) error {
	f, err := lockfile.Open(filepath.Join(s.dir, n.Name, ".lock"), unix.LOCK_EX)
	if err != nil {
		return fmt.Errorf("network %s: %w", n.Name, err)
	}
	defer f.Close()
	// The rules are put back each time: someone may have flushed them,
	// or made the FORWARD chain berth must open a way through.
	fw, err := s.firewall()
	if err != nil {
		return err
	}
	if err := fw.EnsureNetwork(fwNetwork(n)); err != nil {
		return fmt.Errorf("network %s: %w", n.Name, err)
	}
	br, err := netlink.LinkByName(n.Bridge)
	if err != nil {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = n.Bridge
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("network %s: create bridge %s: %w", n.Name, n.Bridge, err)
		}
		if br, err = netlink.LinkByName(n.Bridge); err != nil {
			return fmt.Errorf("network %s: bridge %s: %w", n.Name, n.Bridge, err)
		}
	}
	gw := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(n.Gateway, n.Subnet.Bits()))}
	if err := netlink.AddrReplace(br, gw); err != nil {
		return fmt.Errorf("network %s: address %s on %s: %w", n.Name, n.Gateway, n.Bridge, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return fmt.Errorf("network %s: bring up %s: %w", n.Name, n.Bridge, err)
	}
	return nil
}

// teardown removes n's bridge and firewall rules.
func (s *Store) teardown(n *Network) error {
	if br, err := netlink.LinkByName(n.Bridge); err == nil {
		if err := netlink.LinkDel(br); err != nil {
			return fmt.Errorf("network %s: remove bridge %s: %w", n.Name, n.Bridge, err)
		}
	}
	fw, err := s.firewall()
	if err != nil {
		return err
	}
	if err := fw.RemoveNetwork(fwNetwork(n)); err != nil {
		return fmt.Errorf("network %s: %w", n.Name, err)
	}
	return nil
}

func fwNetwork(n *Network) firewall.Network {
	return firewall.Network{Bridge: n.Bridge, Subnet: n.Subnet}
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}

// MACFor is the MAC an address gets unless one is asked for: locally
// administered, with the address in its last four bytes (as Docker
// does), so it is unique on the network.
func MACFor(ip netip.Addr) net.HardwareAddr {
	a := ip.As4()
	return net.HardwareAddr{0x02, 0x42, a[0], a[1], a[2], a[3]}
}

// HostVeth is the name of the host's end of an instance's veth.
func HostVeth(id string) string {
	if len(id) > 12 {
		id = id[:12]
	}
	return "vb" + id
}

// Wire puts the network namespace at path nsPath on n: a veth whose host
// end (hostVeth) is a port of n's bridge and whose other end is the
// namespace's eth0, with ip, mac, the bridge's MTU and a default route
// through the gateway.
func Wire(n *Network, nsPath, hostVeth string, ip netip.Addr, mac net.HardwareAddr) (err error) {
	nsf, err := os.Open(nsPath)
	if err != nil {
		return fmt.Errorf("network namespace %s: %w", nsPath, err)
	}
	defer nsf.Close()
	br, err := netlink.LinkByName(n.Bridge)
	if err != nil {
		return fmt.Errorf("network %s: bridge %s: %w", n.Name, n.Bridge, err)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = hostVeth
	attrs.MasterIndex = br.Attrs().Index
	attrs.MTU = br.Attrs().MTU
	attrs.Flags = net.FlagUp
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerHardwareAddr: mac,
		PeerNamespace: netlink.NsFd(nsf.Fd()), PeerMTU: uint32(br.Attrs().MTU), PeerTxQLen: -1}
	err = netlink.LinkAdd(veth)
	if errors.Is(err, unix.EEXIST) {
		// Left by an earlier start of this instance whose owner died.
		Unwire(hostVeth)
		err = netlink.LinkAdd(veth)
	}
	if err != nil {
		return fmt.Errorf("network %s: create veth %s: %w", n.Name, hostVeth, err)
	}
	trace("network: veth made")
	defer func() {
		if err != nil {
			Unwire(hostVeth)
		}
	}()
	// Hairpin: a DNAT back to the sender leaves by the port it came in.
	if hl, err := netlink.LinkByName(hostVeth); err != nil {
		return fmt.Errorf("network %s: veth %s: %w", n.Name, hostVeth, err)
	} else if err := netlink.LinkSetHairpin(hl, true); err != nil {
		return fmt.Errorf("network %s: hairpin on %s: %w", n.Name, hostVeth, err)
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(nsf.Fd()))
	if err != nil {
		return fmt.Errorf("network namespace %s: %w", nsPath, err)
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("network namespace %s: eth0: %w", nsPath, err)
	}
	if err := h.AddrAdd(eth0, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(ip, n.Subnet.Bits()))}); err != nil {
		return fmt.Errorf("network namespace %s: address %s: %w", nsPath, ip, err)
	}
	if err := h.LinkSetUp(eth0); err != nil {
		return fmt.Errorf("network namespace %s: bring up eth0: %w", nsPath, err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: n.Gateway.AsSlice()}); err != nil {
		return fmt.Errorf("network namespace %s: default route via %s: %w", nsPath, n.Gateway, err)
	}
	trace("network: eth0 addressed and routed")
	return nil
}

// Unwire removes the veth whose host end is hostVeth (its other end goes
// with it); a missing one is no error.
func Unwire(hostVeth string) error {
	l, err := netlink.LinkByName(hostVeth)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("veth %s: %w", hostVeth, err)
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("remove veth %s: %w", hostVeth, err)
	}
	return nil
}

// route is one of the host's IPv4 routes, for the subnet checks.
type route struct {
	dst netip.Prefix
	dev string
}

// hostRoutes lists the host's IPv4 routes to networks (not the default
// route).
func hostRoutes() ([]route, error) {
	var rs []netlink.Route
	var err error
	for try := 0; try < 5; try++ {
		if rs, err = netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list the host's routes: %w: %w", err, errdefs.ErrUnavailable)
	}
	var out []route
	for _, r := range rs {
		if r.Dst == nil {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		if ones == 0 {
			continue
		}
		a, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		dev := fmt.Sprint(r.LinkIndex)
		if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
			dev = l.Attrs().Name
		}
		out = append(out, route{dst: netip.PrefixFrom(a.Unmap(), ones).Masked(), dev: dev})
	}
	return out, nil
}

// CheckFirewall says in one line what keeps berth from setting up its
// NAT and port rules in this namespace, or nil.
func CheckFirewall() error {
	fw, err := firewall.New("")
	if err != nil {
		return err
	}
	defer fw.Close()
	return fw.Check()
}

// linkExists reports whether this namespace has a device called name.
func linkExists(name string) bool {
	_, err := netlink.LinkByName(name)
	return err == nil
}
