package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/firewall"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/netdns"
	"github.com/berth-dev/berth/internal/portmap"
)

// The files of an instance's directory bind-mounted over the workload's
// /etc/hosts, /etc/resolv.conf and /etc/hostname (Files).
const (
	HostsFileName    = "hosts"
	ResolvFileName   = "resolv.conf"
	HostnameFileName = "hostname"
)

// Files are the destinations in the workload and the names of their
// sources in the instance's directory.
var Files = [][2]string{{"/etc/hosts", HostsFileName}, {"/etc/resolv.conf", ResolvFileName}, {"/etc/hostname", HostnameFileName}}

// HostResolvConf is the host's resolver configuration, read for the
// name servers of instances on the default network and for forwarding.
var HostResolvConf = "/etc/resolv.conf"

// Attachment is an instance's hold on its network, from the start its
// owner makes to its end: its address, its veth, its published ports
// (DNAT rules and the loopback proxy) and, on a user network, its names
// and the resolver its owner serves.
type Attachment struct {
	st    *Store
	net   *Network
	id    string
	ip    netip.Addr
	mac   net.HardwareAddr
	ports []portmap.Mapping
	proxy *portmap.Proxy
	dnat  []firewall.Port
	dns   *netdns.Server
	entry bool
}

// Attach claims instance in's place on the network its NetConfig names,
// for a start: its address, its /etc files in dir (the instance's
// directory), and its published host ports, bound now so a taken one is
// refused before anything runs. The namespace is wired by Wire, called
// by the engine; Up then opens the instance to the network. On failure
// nothing is held.
func Attach(root string, in *instance.Instance, dir string, stale Stale) (_ *Attachment, err error) {
	c := in.Net
	st, err := Open(root)
	if err != nil {
		return nil, err
	}
	n, err := st.Get(c.Network)
	if err != nil {
		return nil, err
	}
	var want netip.Addr
	if c.IP != "" {
		if want, err = netip.ParseAddr(c.IP); err != nil {
			return nil, fmt.Errorf("--ip %q: not an IPv4 address: %w", c.IP, errdefs.ErrInvalid)
		}
	}
	var ms []portmap.Mapping
	for _, p := range c.Publish {
		m, err := portmap.Parse(p)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m...)
	}
	extra, err := ParseAddHosts(c.AddHosts, n.Gateway)
	if err != nil {
		return nil, err
	}
	dns, err := ParseDNS(c.DNS)
	if err != nil {
		return nil, err
	}
	trace("network: record read")
	if err := st.Ensure(n); err != nil {
		return nil, err
	}
	trace("network: bridge and rules ensured")
	a := &Attachment{st: st, net: n, id: in.ID}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	if a.ip, err = st.Claim(n, in.ID, want, stale); err != nil {
		return nil, err
	}
	trace("network: address claimed")
	a.mac = MACFor(a.ip)
	if c.MAC != "" {
		if a.mac, err = ParseMAC(c.MAC); err != nil {
			return nil, err
		}
	}
	hostname := in.Hostname
	if hostname == "" {
		hostname = in.ShortID()
	}
	resolv, err := a.resolvConf(dns)
	if err != nil {
		return nil, err
	}
	for name, data := range map[string][]byte{
		HostsFileName:    HostsFile(a.ip, hostname, extra),
		ResolvFileName:   resolv,
		HostnameFileName: []byte(hostname + "\n"),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return nil, fmt.Errorf("instance %s: %w", in.ShortID(), err)
		}
	}
	if len(ms) > 0 {
		if a.proxy, a.ports, err = portmap.Listen(ms); err != nil {
			return nil, err
		}
	}
	if !n.Default() {
		names := []string{in.ShortID()}
		if in.Name != "" {
			names = append([]string{in.Name}, names...)
		}
		names = append(names, c.Aliases...)
		var servers []string
		for _, d := range dns {
			servers = append(servers, d.String())
		}
		if err := st.AddEntry(n, Entry{ID: in.ID, IP: a.ip, Names: names, DNS: servers}); err != nil {
			return nil, err
		}
		a.entry = true
	}
	return a, nil
}

// resolvConf is the instance's /etc/resolv.conf: the network's resolver
// on a user network (its gateway), else the name servers asked for or
// the host's.
func (a *Attachment) resolvConf(dns []netip.Addr) ([]byte, error) {
	if !a.net.Default() {
		return netdns.ResolvConf([]netip.Addr{a.net.Gateway}, nil, []string{"ndots:0"}), nil
	}
	if len(dns) == 0 {
		ups, _ := netdns.HostUpstreams(HostResolvConf)
		for _, u := range ups {
			dns = append(dns, u.Addr())
		}
	}
	return netdns.ResolvConf(dns, nil, nil), nil
}

// Wire puts the namespace at nsPath on the network (the engine's hook).
func (a *Attachment) Wire(nsPath string) error {
	return Wire(a.net, nsPath, HostVeth(a.id), a.ip, a.mac)
}

// Up opens the wired instance to the network: the DNAT of its published
// ports, the proxy of their loopback side, and on a user network the
// resolver its owner serves on the gateway.
func (a *Attachment) Up() error {
	for _, m := range a.ports {
		if m.HostIP.IsValid() && m.HostIP.IsLoopback() {
			continue // only the proxy answers there
		}
		a.dnat = append(a.dnat, firewall.Port{Proto: m.Proto, HostIP: m.HostIP, HostPort: m.HostPort, Addr: a.ip, Port: m.Port})
	}
	if len(a.dnat) > 0 {
		fw, err := a.st.firewall()
		if err != nil {
			a.dnat = nil
			return err
		}
		if err := fw.AddPorts(a.dnat); err != nil {
			a.dnat = nil
			return err
		}
	}
	if a.proxy != nil {
		ip := a.ip
		go a.proxy.Serve(func(m portmap.Mapping) netip.AddrPort { return netip.AddrPortFrom(ip, m.Port) })
	}
	if !a.net.Default() {
		names := a.st.Names(a.net)
		srv, err := netdns.Serve(netdns.Config{
			Addr:    netip.AddrPortFrom(a.net.Gateway, 53),
			Lookup:  names.Lookup,
			Reverse: names.Reverse,
			Upstreams: func(client netip.Addr) []netip.AddrPort {
				var out []netip.AddrPort
				for _, d := range names.DNSOf(client) {
					if ip, err := netip.ParseAddr(d); err == nil {
						out = append(out, netip.AddrPortFrom(ip, 53))
					}
				}
				if len(out) == 0 {
					out, _ = netdns.HostUpstreams(HostResolvConf)
				}
				return out
			},
		})
		if err != nil {
			return err
		}
		a.dns = srv
	}
	return nil
}

// Endpoint is what the instance's record keeps of its place.
func (a *Attachment) Endpoint() *instance.Endpoint {
	ep := &instance.Endpoint{Network: a.net.Name, NetworkID: a.net.ID, IP: a.ip.String(), PrefixLen: a.net.Subnet.Bits(),
		Gateway: a.net.Gateway.String(), MAC: a.mac.String(), HostVeth: HostVeth(a.id)}
	for _, m := range a.ports {
		hip := "0.0.0.0"
		if m.HostIP.IsValid() {
			hip = m.HostIP.String()
		}
		ep.Ports = append(ep.Ports, instance.PortBinding{Proto: m.Proto, HostIP: hip, HostPort: m.HostPort, Port: m.Port})
	}
	return ep
}

// Close gives back everything the attachment holds. It may be called
// more than once.
func (a *Attachment) Close() error {
	var errs []error
	if a.dns != nil {
		a.dns.Close()
		a.dns = nil
	}
	if a.proxy != nil {
		a.proxy.Close()
		a.proxy = nil
	}
	if len(a.dnat) > 0 {
		if fw, err := a.st.firewall(); err != nil {
			errs = append(errs, err)
		} else {
			errs = append(errs, fw.RemovePorts(a.dnat))
		}
		a.dnat = nil
	}
	if a.entry {
		a.st.RemoveEntry(a.net, a.id)
		a.entry = false
	}
	if a.ip.IsValid() {
		errs = append(errs, Unwire(HostVeth(a.id)))
		a.st.Release(a.net, a.ip, a.id)
		a.ip = netip.Addr{}
	}
	a.st.Close()
	return errors.Join(errs...)
}

// Detach gives back what the record of instance in says it held on its
// network, for an instance whose owner died without doing so (the
// reconcile): its DNAT rules, its veth, its names and its address. The
// loopback proxy and the resolver died with the owner. An owner that
// died before recording where the instance was leaves no record of its
// DNAT elements, but its names and address claim are found by the
// instance's ID, and its veth went with the namespace.
func Detach(root string, in *instance.Instance) error {
	ep := in.Endpoint
	netName := ""
	switch {
	case ep != nil:
		netName = ep.Network
	case in.Net.Attached():
		netName = in.Net.Network
	default:
		return nil
	}
	st, err := Open(root)
	if err != nil {
		return err
	}
	defer st.Close()
	var errs []error
	if ep != nil {
		ip, _ := netip.ParseAddr(ep.IP)
		var dnat []firewall.Port
		for _, p := range ep.Ports {
			hip, _ := netip.ParseAddr(p.HostIP)
			if hip.IsLoopback() {
				continue
			}
			if hip.IsUnspecified() {
				hip = netip.Addr{}
			}
			dnat = append(dnat, firewall.Port{Proto: p.Proto, HostIP: hip, HostPort: p.HostPort, Addr: ip, Port: p.Port})
		}
		if len(dnat) > 0 {
			if fw, err := st.firewall(); err != nil {
				errs = append(errs, err)
			} else {
				errs = append(errs, fw.RemovePorts(dnat))
			}
		}
		errs = append(errs, Unwire(ep.HostVeth))
	}
	if n, err := st.read(netName); err == nil && (ep == nil || n.ID == ep.NetworkID) {
		st.RemoveEntry(n, in.ID)
		if ip, ok := st.Holders(n)[in.ID]; ok {
			st.Release(n, ip, in.ID)
		}
	}
	return errors.Join(errs...)
}

// ParseAddHosts parses --add-host values, NAME:IP each ("host-gateway"
// for the network's gateway, as Docker's names the host).
func ParseAddHosts(vals []string, gateway netip.Addr) ([][2]string, error) {
	var out [][2]string
	for _, v := range vals {
		name, addr, ok := strings.Cut(v, ":")
		if !ok || name == "" || addr == "" {
			return nil, fmt.Errorf("--add-host %q: want NAME:IP: %w", v, errdefs.ErrInvalid)
		}
		if addr == "host-gateway" {
			if !gateway.IsValid() {
				return nil, fmt.Errorf("--add-host %q: host-gateway needs a network: %w", v, errdefs.ErrInvalid)
			}
			addr = gateway.String()
		} else if ip, err := netip.ParseAddr(strings.Trim(addr, "[]")); err != nil {
			return nil, fmt.Errorf("--add-host %q: %q is not an IP address: %w", v, addr, errdefs.ErrInvalid)
		} else {
			addr = ip.String()
		}
		out = append(out, [2]string{name, addr})
	}
	return out, nil
}

// ParseDNS parses --dns values.
func ParseDNS(vals []string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, v := range vals {
		ip, err := netip.ParseAddr(v)
		if err != nil || !ip.Is4() {
			return nil, fmt.Errorf("--dns %q: not an IPv4 address: %w", v, errdefs.ErrInvalid)
		}
		out = append(out, ip)
	}
	return out, nil
}

// ParseMAC parses --mac-address: a unicast Ethernet address.
func ParseMAC(v string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(v)
	if err != nil || len(mac) != 6 {
		return nil, fmt.Errorf("--mac-address %q: not an Ethernet address: %w", v, errdefs.ErrInvalid)
	}
	if mac[0]&1 != 0 {
		return nil, fmt.Errorf("--mac-address %q: a multicast address: %w", v, errdefs.ErrInvalid)
	}
	return mac, nil
}
