package main

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/agent"
)

// The guest's network card (a virtio-net device whose host side took
// over the instance's eth0, see internal/vm) belongs to the workload, as
// a container's eth0 does: the agent moves it into the workload's
// network namespace (the init's, made by the engine, which the spec
// names as new) and configures it there with what the host read from
// eth0 (agent.Net), before the workload starts. The agent's own
// namespace keeps only its loopback: the workload, even one given
// CAP_NET_ADMIN, can change its own eth0, as in a container, but
// reaches nothing of the agent's (its sockets, abstract unix sockets
// included, and its routes). A spec without a network namespace of its
// own (host network) shares the guest's, and the card stays there.
//
// A template's guest never brings the card up or addresses it, so a
// clone starts with no neighbour, address or route of the template's;
// its card carries the template's MAC in QEMU's saved state until the
// agent sets the clone's, before the card is up.

// guestIf is the name the card gets in the workload's namespace.
const guestIf = "eth0"

// configureNet moves the guest's card into the network namespace of pid
// (the workload's init) and gives it n's MAC, MTU, addresses and routes.
func configureNet(n *agent.Net, pid int) error {
	hw, err := net.ParseMAC(n.MAC)
	if err != nil || len(hw) != 6 {
		return fmt.Errorf("network card: bad MAC %q", n.MAC)
	}
	// Route only: the guest's kernel may lack the other netlink
	// families a handle opens by default.
	own, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("network card: netlink: %w", err)
	}
	defer own.Close()
	link, err := findCard(own)
	if err != nil {
		return err
	}
	// The MAC and MTU are set while the card is down (it is, unless a
	// spec of host network brought it up): a virtio-net card tells QEMU
	// its new MAC, whose receive filter follows.
	if err := own.LinkSetDown(link); err != nil {
		return fmt.Errorf("network card: %w", err)
	}
	if err := own.LinkSetHardwareAddr(link, hw); err != nil {
		return fmt.Errorf("network card: MAC %s: %w", n.MAC, err)
	}
	if n.MTU > 0 {
		if err := own.LinkSetMTU(link, n.MTU); err != nil {
			return fmt.Errorf("network card: MTU %d: %w", n.MTU, err)
		}
	}
	if link.Attrs().Name != guestIf {
		if err := own.LinkSetName(link, guestIf); err != nil {
			return fmt.Errorf("network card: rename %s: %w", link.Attrs().Name, err)
		}
	}
	target, err := netns.GetFromPid(pid)
	if err != nil {
		return fmt.Errorf("workload's network namespace: %w", err)
	}
	defer target.Close()
	h := own
	if same, err := sameNetNS(target); err != nil {
		return err
	} else if !same {
		if err := own.LinkSetNsFd(link, int(target)); err != nil {
			return fmt.Errorf("network card: move into the workload's namespace: %w", err)
		}
		if h, err = netlink.NewHandleAt(target, unix.NETLINK_ROUTE); err != nil {
			return fmt.Errorf("network card: netlink: %w", err)
		}
		defer h.Close()
	}
	if link, err = h.LinkByName(guestIf); err != nil {
		return fmt.Errorf("network card: %w", err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("network card: up: %w", err)
	}
	for _, a := range n.Addrs {
		addr, err := netlink.ParseAddr(a)
		if err != nil {
			return fmt.Errorf("network card: address %q: %w", a, err)
		}
		if err := h.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("network card: address %s: %w", a, err)
		}
	}
	if err := addRoutes(h, link, n); err != nil {
		return err
	}
	return flushNeighbours(h, link)
}

// findCard is the guest's one network card: eth0, or else the only link
// that is not a loopback.
func findCard(h *netlink.Handle) (netlink.Link, error) {
	if l, err := h.LinkByName(guestIf); err == nil {
		return l, nil
	}
	links, err := h.LinkList()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("network card: %w", err)
	}
	for _, l := range links {
		if l.Attrs().Flags&net.FlagLoopback == 0 && l.Type() == "device" {
			return l, nil
		}
	}
	return nil, errors.New("network card: the guest has none (is virtio_net in the initramfs?)")
}

// sameNetNS says whether ns is the agent's own network namespace.
func sameNetNS(ns netns.NsHandle) (bool, error) {
	var a, b unix.Stat_t
	if err := unix.Fstat(int(ns), &a); err != nil {
		return false, err
	}
	if err := unix.Stat("/proc/self/ns/net", &b); err != nil {
		return false, err
	}
	return a.Dev == b.Dev && a.Ino == b.Ino, nil
}

// addRoutes adds n's routes on link: those on the link first (a
// gateway may be reached through one), then those through a next hop,
// then the default route.
func addRoutes(h *netlink.Handle, link netlink.Link, n *agent.Net) error {
	var rs []*netlink.Route
	for _, onLink := range []bool{true, false} {
		for _, r := range n.Routes {
			if (r.Via == "") != onLink {
				continue
			}
			_, dst, err := net.ParseCIDR(r.Dst)
			if err != nil {
				return fmt.Errorf("network card: route %q: %w", r.Dst, err)
			}
			rt := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst}
			if onLink {
				rt.Scope = netlink.SCOPE_LINK
			} else if rt.Gw = net.ParseIP(r.Via); rt.Gw == nil {
				return fmt.Errorf("network card: route %s: bad next hop %q", r.Dst, r.Via)
			}
			rs = append(rs, rt)
		}
	}
	if n.Gateway != "" {
		gw := net.ParseIP(n.Gateway)
		if gw == nil {
			return fmt.Errorf("network card: bad gateway %q", n.Gateway)
		}
		rs = append(rs, &netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw})
	}
	for _, r := range rs {
		if err := h.RouteAdd(r); err != nil {
			return fmt.Errorf("network card: route %v: %w", r, err)
		}
	}
	return nil
}

// flushNeighbours removes any neighbour entry the card has: a template's
// guest never had its card up, so there should be none, and a clone must
// not start with another guest's.
func flushNeighbours(h *netlink.Handle, link netlink.Link) error {
	ns, err := h.NeighList(link.Attrs().Index, netlink.FAMILY_ALL)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return fmt.Errorf("network card: neighbours: %w", err)
	}
	for _, nb := range ns {
		if nb.State&netlink.NUD_PERMANENT == 0 {
			_ = h.NeighDel(&nb)
		}
	}
	return nil
}

// netHook is the engine's create hook that configures the card for the
// workload whose init is pid, or nil without a card.
func netHook(n *agent.Net) func(pid int) ([]byte, error) {
	if n == nil {
		return nil
	}
	return func(pid int) ([]byte, error) {
		if err := configureNet(n, pid); err != nil {
			logf("%v", err)
			return nil, err
		}
		tracef("network card ready")
		return nil, nil
	}
}
