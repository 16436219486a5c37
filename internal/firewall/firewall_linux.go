package firewall

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/lockfile"
)

const (
	tableName   = "berth"
	mapAny      = "ports"        // meta l4proto . th dport : ipv4_addr . inet_service
	mapAddr     = "addrports"    // ip daddr . meta l4proto . th dport : ipv4_addr . inet_service
	mapSvcAny   = "svcports"     // meta l4proto . th dport : verdict (goto a service's chain)
	mapSvcAddr  = "svcaddrports" // ip daddr . meta l4proto . th dport : verdict
	chainPre    = "prerouting"
	chainOut    = "output"
	chainPost   = "postrouting"
	chainFwd    = "forward"
	tagPrefix   = "berth:"
	rtnLocal    = 2    // RTN_LOCAL, the fib address type of a local address
	ipsDstNAT   = 0x20 // IPS_DST_NAT, the conntrack status bit of a DNATed connection
	ifnameBytes = 16   // IFNAMSIZ
)

// The IDs of the sets berth adds, unique within one batch: a rule or
// element refers to a set made in the same batch by name, or (an
// anonymous one, whose name the kernel picks) by ID. Fixed IDs keep the
// library's process-wide counter out of it.
const (
	idPortsAny uint32 = iota + 1
	idPortsAddr
	idSvcAny
	idSvcAddr
	idBalance
)

var (
	table = &nftables.Table{Name: tableName, Family: nftables.TableFamilyIPv4}

	// The concatenated types of the port maps' keys and values.
	keyAny  = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
	keyAddr = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	dest    = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
)

// Firewall changes berth's table in one network namespace.
type Firewall struct {
	lockPath string
	netns    *os.File
}

// New returns a Firewall for the network namespace of the calling thread,
// serialised with other berth processes by an flock on lockPath (created
// if missing; its directory must exist). Close releases the namespace.
func New(lockPath string) (*Firewall, error) {
	ns, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("firewall: open network namespace: %w", err)
	}
	return &Firewall{lockPath: lockPath, netns: ns}, nil
}

// Close releases the network namespace New took hold of.
func (f *Firewall) Close() error { return f.netns.Close() }

// conn opens a netlink connection to nf_tables in f's namespace.
func (f *Firewall) conn() (*nftables.Conn, error) {
	c, err := nftables.New(nftables.WithNetNSFd(int(f.netns.Fd())))
	if err != nil {
		return nil, fmt.Errorf("nf_tables: %v: %w", err, errdefs.ErrUnavailable)
	}
	return c, nil
}

// locked runs fn with the lock file held (how is unix.LOCK_EX or LOCK_SH),
// a connection to nf_tables and berth's state read through it.
func (f *Firewall) locked(how int, fn func(c *nftables.Conn, s *state) error) error {
	lk, err := lockfile.Open(f.lockPath, how)
	if err != nil {
		return fmt.Errorf("firewall lock: %w", err)
	}
	defer lk.Close()
	c, err := f.conn()
	if err != nil {
		return err
	}
	s, err := read(c)
	if err != nil {
		return err
	}
	return fn(c, s)
}

// inNetns runs fn on a thread of its own in f's namespace, for what
// nf_tables' netlink does not reach (sysctls, /proc/net). The thread is
// never handed back to the scheduler: it ends with the goroutine.
func (f *Firewall) inNetns(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Back to its own namespace before the thread is handed back;
		// if that fails it stays locked and ends with the goroutine.
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- fmt.Errorf("open own network namespace: %w", err)
			return
		}
		defer self.Close()
		if err := unix.Setns(int(f.netns.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		err = fn()
		if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// state is what berth has in the namespace now.
type state struct {
	exists   bool
	ports    []Port
	services []Service                   // one per service chain
	rules    map[string][]*nftables.Rule // chain -> berth's tagged network rules
	fwd      *nftables.Chain             // iptables-nft's ip filter FORWARD, if any
	fwdOwn   []*nftables.Rule            // berth's rules in it
}

// read gathers berth's state with c.
func read(c *nftables.Conn) (*state, error) {
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("nf_tables: list chains: %v: %w", err, errdefs.ErrUnavailable)
	}
	s := &state{rules: map[string][]*nftables.Rule{}}
	for _, ch := range chains {
		switch {
		case ch.Table.Name == tableName:
			s.exists = true
			if !strings.HasPrefix(ch.Name, svcChainPrefix) {
				continue
			}
			svc, ok := parseChainName(ch.Name)
			if !ok {
				return nil, fmt.Errorf("nf_tables: chain %s is not one berth wrote: %w", ch.Name, errdefs.ErrInvalid)
			}
			s.services = append(s.services, svc)
		case ch.Table.Name == "filter" && ch.Name == "FORWARD" && ch.Hooknum != nil:
			s.fwd = ch
			if s.fwdOwn, err = tagged(c, ch); err != nil {
				return nil, err
			}
		}
	}
	if !s.exists {
		return s, nil
	}
	for _, name := range []string{chainPost, chainFwd} {
		if s.rules[name], err = tagged(c, &nftables.Chain{Table: table, Name: name}); err != nil {
			return nil, err
		}
	}
	for _, m := range []struct {
		name  string
		every bool
	}{{mapAny, true}, {mapAddr, false}} {
		elems, err := c.GetSetElements(&nftables.Set{Table: table, Name: m.name})
		if err != nil {
			return nil, fmt.Errorf("nf_tables: list map %s: %v", m.name, err)
		}
		for _, e := range elems {
			p, ok := decodePort(e, m.every)
			if !ok {
				return nil, fmt.Errorf("nf_tables: map %s holds an element berth did not write: %w", m.name, errdefs.ErrInvalid)
			}
			s.ports = append(s.ports, p)
		}
	}
	return s, nil
}

// tagged lists the rules of ch whose comment is berth's.
func tagged(c *nftables.Conn, ch *nftables.Chain) ([]*nftables.Rule, error) {
	rules, err := c.GetRules(ch.Table, ch)
	if err != nil {
		return nil, fmt.Errorf("nf_tables: list chain %s %s: %v", ch.Table.Name, ch.Name, err)
	}
	var own []*nftables.Rule
	for _, r := range rules {
		if strings.HasPrefix(comment(r), tagPrefix) {
			own = append(own, r)
		}
	}
	return own, nil
}

// comment is r's userdata comment, as nft and iptables-nft write it.
func comment(r *nftables.Rule) string {
	s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return s
}

// complete reports whether every rule EnsureNetwork makes for the bridge
// whose tag is tag is in place: two in each of berth's chains, two in
// iptables' FORWARD chain when there is one.
func (s *state) complete(tag string) bool {
	count := func(rules []*nftables.Rule) int {
		n := 0
		for _, r := range rules {
			if comment(r) == tag {
				n++
			}
		}
		return n
	}
	if !s.exists || count(s.rules[chainPost]) != 2 || count(s.rules[chainFwd]) != 2 {
		return false
	}
	return s.fwd == nil || count(s.fwdOwn) == 2
}

// empty reports whether nothing of berth's would be left in its table.
func (s *state) empty() bool {
	return len(s.ports) == 0 && len(s.services) == 0 && len(s.rules[chainPost]) == 0 && len(s.rules[chainFwd]) == 0
}

// commit sends c's batch, naming what failed.
func commit(c *nftables.Conn, what string) error {
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nf_tables: %s: %s", what, strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return nil
}

// EnsureNetwork sets up NAT and forwarding for n, replacing whatever berth
// had for n's bridge, and turns on IPv4 forwarding in the namespace (as
// Docker does). Calling it again is harmless.
func (f *Firewall) EnsureNetwork(n Network) error {
	n, err := n.normalize()
	if err != nil {
		return err
	}
	err = f.locked(unix.LOCK_EX, func(c *nftables.Conn, s *state) error {
		tag := ruleTag(n.Bridge)
		if s.complete(tag) {
			return nil // the common case: an instance's start on a network in use
		}
		if !s.exists {
			addSkeleton(c)
		}
		for chain, rules := range s.rules {
			for _, r := range rules {
				if comment(r) == tag {
					if err := c.DelRule(&nftables.Rule{Table: table, Chain: &nftables.Chain{Name: chain, Table: table}, Handle: r.Handle}); err != nil {
						return err
					}
				}
			}
		}
		ud := userdata.AppendString(nil, userdata.TypeComment, tag)
		post := &nftables.Chain{Name: chainPost, Table: table}
		fwd := &nftables.Chain{Name: chainFwd, Table: table}
		c.AddRule(&nftables.Rule{Table: table, Chain: post, UserData: ud, Exprs: slices.Concat(
			matchSaddr(n.Subnet), matchIfname(expr.MetaKeyOIFNAME, n.Bridge, expr.CmpOpNeq), masq())})
		c.AddRule(&nftables.Rule{Table: table, Chain: post, UserData: ud, Exprs: slices.Concat(
			matchSaddr(n.Subnet), matchIfname(expr.MetaKeyOIFNAME, n.Bridge, expr.CmpOpEq), matchCtDNAT(), masq())})
		c.AddRule(&nftables.Rule{Table: table, Chain: fwd, UserData: ud, Exprs: acceptIf(expr.MetaKeyIIFNAME, n.Bridge)})
		c.AddRule(&nftables.Rule{Table: table, Chain: fwd, UserData: ud, Exprs: acceptReplies(n.Bridge)})
		if s.fwd != nil {
			if err := delOwn(c, s.fwd, s.fwdOwn, tag); err != nil {
				return err
			}
			// At the top, before any drop, and only with expressions
			// iptables-nft can read back (no ct: it would call the whole
			// table incompatible and Docker could no longer edit it).
			// Berth's own forward chain is where its traffic is judged.
			c.InsertRule(&nftables.Rule{Table: s.fwd.Table, Chain: s.fwd, UserData: ud, Exprs: acceptIf(expr.MetaKeyOIFNAME, n.Bridge)})
			c.InsertRule(&nftables.Rule{Table: s.fwd.Table, Chain: s.fwd, UserData: ud, Exprs: acceptIf(expr.MetaKeyIIFNAME, n.Bridge)})
		}
		return commit(c, "network "+n.Bridge)
	})
	if err != nil {
		return err
	}
	return f.inNetns(func() error {
		const forward = "/proc/sys/net/ipv4/ip_forward"
		if b, err := os.ReadFile(forward); err == nil && strings.TrimSpace(string(b)) == "1" {
			return nil
		}
		if err := os.WriteFile(forward, []byte("1\n"), 0o644); err != nil {
			return fmt.Errorf("network %s: enable IPv4 forwarding: %w", n.Bridge, err)
		}
		return nil
	})
}

// RemoveNetwork deletes what EnsureNetwork added for n's bridge, and berth's
// table when nothing else of berth's is in it. IPv4 forwarding stays on. A
// network berth does not have is not an error.
func (f *Firewall) RemoveNetwork(n Network) error {
	n, err := n.normalize()
	if err != nil {
		return err
	}
	return f.locked(unix.LOCK_EX, func(c *nftables.Conn, s *state) error {
		tag := ruleTag(n.Bridge)
		if s.fwd != nil {
			if err := delOwn(c, s.fwd, s.fwdOwn, tag); err != nil {
				return err
			}
		}
		if s.exists {
			dropped := false
			for chain, rules := range s.rules {
				s.rules[chain] = slices.DeleteFunc(rules, func(r *nftables.Rule) bool { return comment(r) == tag })
				dropped = dropped || len(s.rules[chain]) != len(rules)
			}
			switch {
			case s.empty():
				c.DelTable(table)
			case dropped:
				for _, chain := range []string{chainPost, chainFwd} {
					if err := delOwn(c, &nftables.Chain{Name: chain, Table: table}, s.rules[chain], tag); err != nil {
						return err
					}
				}
			}
		}
		return commit(c, "remove network "+n.Bridge)
	})
}

// delOwn queues the deletion of the rules among own whose comment is tag.
func delOwn(c *nftables.Conn, ch *nftables.Chain, own []*nftables.Rule, tag string) error {
	for _, r := range own {
		if comment(r) != tag {
			continue
		}
		if err := c.DelRule(&nftables.Rule{Table: ch.Table, Chain: ch, Handle: r.Handle}); err != nil {
			return fmt.Errorf("nf_tables: delete rule %d of %s: %v", r.Handle, ch.Name, err)
		}
	}
	return nil
}

// AddPorts publishes ports, all or none, in one batch. A port already
// published with the same destination is left as it is; one whose
// protocol, host address and host port are taken by another destination,
// or that clashes with an every-address port on the same protocol and host
// port (or the reverse), is refused with ErrConflict.
func (f *Firewall) AddPorts(ports []Port) error {
	want, err := normalizeAll(ports)
	if err != nil {
		return err
	}
	return f.locked(unix.LOCK_EX, func(c *nftables.Conn, s *state) error {
		var add []Port
		taken := slices.Clone(s.ports)
		for _, p := range want {
			if i := slices.IndexFunc(s.services, func(v Service) bool { return clash(p, v.hostSide()) }); i >= 0 {
				return fmt.Errorf("port %s: %s publishes it already: %w", p.hostKey(), s.services[i], errdefs.ErrConflict)
			}
			if i := slices.IndexFunc(taken, func(q Port) bool { return clash(p, q) }); i >= 0 {
				if taken[i] == p {
					continue
				}
				return fmt.Errorf("port %s: %s is published already: %w", p.hostKey(), taken[i], errdefs.ErrConflict)
			}
			taken = append(taken, p)
			add = append(add, p)
		}
		if len(add) == 0 {
			return nil
		}
		if !s.exists {
			addSkeleton(c)
		}
		if err := queuePorts(c.SetAddElements, add); err != nil {
			return err
		}
		return commit(c, "publish ports")
	})
}

// RemovePorts withdraws ports, all in one batch. A port that is not
// published (or is published to another destination) is skipped, so that
// cleanup after a crash can call it blindly. Berth's table goes when
// nothing of berth's is left in it.
func (f *Firewall) RemovePorts(ports []Port) error {
	gone, err := normalizeAll(ports)
	if err != nil {
		return err
	}
	return f.locked(unix.LOCK_EX, func(c *nftables.Conn, s *state) error {
		if !s.exists {
			return nil
		}
		var del []Port
		s.ports = slices.DeleteFunc(s.ports, func(p Port) bool {
			if slices.Contains(gone, p) {
				del = append(del, p)
				return true
			}
			return false
		})
		switch {
		case len(del) == 0:
			return nil
		case s.empty():
			c.DelTable(table)
		default:
			if err := queuePorts(c.SetDeleteElements, del); err != nil {
				return err
			}
		}
		return commit(c, "withdraw ports")
	})
}

// ListPorts returns the ports published now, every-address ones with
// HostIP 0.0.0.0.
func (f *Firewall) ListPorts() ([]Port, error) {
	var ports []Port
	err := f.locked(unix.LOCK_SH, func(_ *nftables.Conn, s *state) error {
		ports = s.ports
		return nil
	})
	return ports, err
}

// Check says in one line what keeps berth's firewall from working in the
// namespace: nf_tables missing or lacking NAT, masquerade, conntrack or fib,
// or iptables-legacy tables (berth cannot see or open their drops).
func (f *Firewall) Check() error {
	c, err := f.conn()
	if err != nil {
		return err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return fmt.Errorf("nf_tables unavailable: %v: %w", err, errdefs.ErrUnavailable)
	}
	// A table made and deleted in one batch: the kernel checks every
	// expression berth uses and leaves nothing behind.
	probe := &nftables.Table{Name: "berth-probe", Family: nftables.TableFamilyIPv4}
	c.AddTable(probe)
	addChains(c, probe)
	c.AddRule(&nftables.Rule{Table: probe, Chain: &nftables.Chain{Name: chainPost, Table: probe},
		Exprs: slices.Concat(matchCtDNAT(), masq())})
	c.AddRule(&nftables.Rule{Table: probe, Chain: &nftables.Chain{Name: chainPre, Table: probe},
		Exprs: slices.Concat(matchLocal(), []expr.Any{
			&expr.Immediate{Register: 1, Data: []byte{10, 0, 0, 1}},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
		})})
	// What a service's chain holds: numgen, and reject in a nat chain.
	c.AddRule(&nftables.Rule{Table: probe, Chain: &nftables.Chain{Name: chainPre, Table: probe},
		Exprs: []expr.Any{
			&expr.Numgen{Register: reg1, Modulus: 2, Type: unix.NFT_NG_INCREMENTAL},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(2)},
			&expr.Reject{Type: unix.NFT_REJECT_TCP_RST},
		}})
	c.DelTable(probe)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nf_tables lacks what berth needs (nat, masquerade, conntrack, fib, numgen, reject): %v: %w", err, errdefs.ErrUnavailable)
	}
	for _, t := range tables {
		if t.Name == "filter" {
			return nil
		}
	}
	var legacy []byte
	err = f.inNetns(func() error {
		var err error
		legacy, err = os.ReadFile("/proc/thread-self/net/ip_tables_names")
		return err
	})
	if err == nil && len(bytes.TrimSpace(legacy)) > 0 {
		return fmt.Errorf("iptables-legacy tables are in use (%s): berth's nftables rules cannot see their drops; switch to iptables-nft: %w",
			strings.Join(strings.Fields(string(legacy)), ", "), errdefs.ErrUnavailable)
	}
	return nil
}

// normalizeAll checks ports and normalizes each.
func normalizeAll(ports []Port) ([]Port, error) {
	out := make([]Port, 0, len(ports))
	for _, p := range ports {
		p, err := p.normalize()
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// clash reports whether normalized ports p and q cannot both be published.
func clash(p, q Port) bool {
	return p.Proto == q.Proto && p.HostPort == q.HostPort &&
		(p.HostIP == q.HostIP || p.anyAddr() || q.anyAddr())
}

// addSkeleton queues berth's table with its chains, maps and the rules
// that look them up.
func addSkeleton(c *nftables.Conn) {
	c.AddTable(table)
	addChains(c, table)
	for _, every := range []bool{true, false} {
		// The set is new, so AddSet cannot fail on existing elements.
		_ = c.AddSet(portMap(every), nil)
	}
	addHookRules(c, dnatLookup)
	addServiceMaps(c)
}

// addServiceMaps queues the services' verdict maps and the rules that
// look them up (apart from addSkeleton for a table an older berth made).
func addServiceMaps(c *nftables.Conn) {
	for _, every := range []bool{true, false} {
		_ = c.AddSet(svcMap(every), nil)
	}
	addHookRules(c, svcLookup)
}

// addHookRules queues in prerouting and output, for destinations of type
// local (in output, not loopback), the address-bound then the
// every-address lookup that lookup makes.
func addHookRules(c *nftables.Conn, lookup func(every bool) []expr.Any) {
	for _, chain := range []string{chainPre, chainOut} {
		ch := &nftables.Chain{Name: chain, Table: table}
		match := matchLocal()
		if chain == chainOut {
			match = slices.Concat(matchNotLoopback(), match)
		}
		c.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: slices.Concat(match, lookup(false))})
		c.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: slices.Concat(match, lookup(true))})
	}
}

// addChains queues the four base chains of berth's table in t.
func addChains(c *nftables.Conn, t *nftables.Table) {
	accept := nftables.ChainPolicyAccept
	for _, ch := range []struct {
		name string
		typ  nftables.ChainType
		hook *nftables.ChainHook
		prio *nftables.ChainPriority
	}{
		{chainPre, nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest},
		{chainOut, nftables.ChainTypeNAT, nftables.ChainHookOutput, nftables.ChainPriorityNATDest},
		{chainPost, nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource},
		{chainFwd, nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter},
	} {
		c.AddChain(&nftables.Chain{Name: ch.name, Table: t, Type: ch.typ, Hooknum: ch.hook, Priority: ch.prio, Policy: &accept})
	}
}

// portMap is one of the two port maps: the every-address one or the
// address-bound one.
func portMap(every bool) *nftables.Set {
	s := &nftables.Set{Table: table, ID: idPortsAddr, Name: mapAddr, KeyType: keyAddr, DataType: dest,
		IsMap: true, Concatenation: true, KeyByteOrder: binaryutil.BigEndian}
	if every {
		s.ID, s.Name, s.KeyType = idPortsAny, mapAny, keyAny
	}
	return s
}

// queuePorts queues op (c.SetAddElements or c.SetDeleteElements) on the
// elements for ports in the maps they belong to.
func queuePorts(op func(*nftables.Set, []nftables.SetElement) error, ports []Port) error {
	anyElems, addrElems := encodePorts(ports)
	for _, m := range []struct {
		every bool
		elems []nftables.SetElement
	}{{true, anyElems}, {false, addrElems}} {
		if len(m.elems) == 0 {
			continue
		}
		if err := op(portMap(m.every), m.elems); err != nil {
			return fmt.Errorf("nf_tables: map %s: %v", portMap(m.every).Name, err)
		}
	}
	return nil
}

// encodePorts turns normalized ports into elements of the every-address
// map and of the address-bound map. Each field of a concatenation takes a
// whole 32-bit register, zero-padded.
func encodePorts(ports []Port) (anyElems, addrElems []nftables.SetElement) {
	for _, p := range ports {
		e := nftables.SetElement{Key: hostKey(p), Val: addrPortData(p.Addr, p.Port)}
		if p.anyAddr() {
			anyElems = append(anyElems, e)
		} else {
			addrElems = append(addrElems, e)
		}
	}
	return anyElems, addrElems
}

// hostKey is normalized p's key in the every-address or the
// address-bound map of its kind: [host address .] protocol . host port.
func hostKey(p Port) []byte {
	proto := []byte{protoNum(p.Proto), 0, 0, 0}
	hport := []byte{byte(p.HostPort >> 8), byte(p.HostPort), 0, 0}
	if p.anyAddr() {
		return slices.Concat(proto, hport)
	}
	host := p.HostIP.As4()
	return slices.Concat(host[:], proto, hport)
}

// addrPortData is a DNAT destination as a map's value: address . port.
func addrPortData(addr netip.Addr, port uint16) []byte {
	a := addr.As4()
	return append(a[:], byte(port>>8), byte(port), 0, 0)
}

// decodePort reads back an element encodePorts wrote.
func decodePort(e nftables.SetElement, every bool) (Port, bool) {
	key := e.Key
	p := Port{HostIP: netip.IPv4Unspecified()}
	if !every {
		if len(key) != 12 {
			return p, false
		}
		p.HostIP = netip.AddrFrom4([4]byte(key[:4]))
		key = key[4:]
	}
	if len(key) != 8 || len(e.Val) != 8 {
		return p, false
	}
	switch key[0] {
	case unix.IPPROTO_TCP:
		p.Proto = "tcp"
	case unix.IPPROTO_UDP:
		p.Proto = "udp"
	default:
		return p, false
	}
	p.HostPort = uint16(key[4])<<8 | uint16(key[5])
	p.Addr = netip.AddrFrom4([4]byte(e.Val[:4]))
	p.Port = uint16(e.Val[4])<<8 | uint16(e.Val[5])
	return p, true
}

func protoNum(proto string) byte {
	if proto == "udp" {
		return unix.IPPROTO_UDP
	}
	return unix.IPPROTO_TCP
}

// Registers: 1 is the first 128-bit register, whose four 32-bit parts
// are 8 to 11; a concatenation is loaded into consecutive 32-bit ones.
const (
	reg1   = 1
	reg32a = 8
	reg32b = 9
)

// matchLocal is "fib daddr type local".
func matchLocal() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(rtnLocal)},
	}
}

// matchNotLoopback is "ip daddr != 127.0.0.0/8".
func matchNotLoopback() []expr.Any {
	return matchPrefix(16, netip.MustParsePrefix("127.0.0.0/8"), expr.CmpOpNeq)
}

// matchSaddr is "ip saddr prefix".
func matchSaddr(prefix netip.Prefix) []expr.Any {
	return matchPrefix(12, prefix, expr.CmpOpEq)
}

// matchPrefix compares the IPv4 address at offset of the network header
// with prefix.
func matchPrefix(offset uint32, prefix netip.Prefix, op expr.CmpOp) []expr.Any {
	var m [4]byte
	for i := 0; i < prefix.Bits(); i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	net := prefix.Masked().Addr().As4()
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: m[:], Xor: make([]byte, 4)},
		&expr.Cmp{Op: op, Register: reg1, Data: net[:]},
	}
}

// matchIfname compares the input or output interface's name with name.
func matchIfname(key expr.MetaKey, name string, op expr.CmpOp) []expr.Any {
	data := make([]byte, ifnameBytes)
	copy(data, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: reg1},
		&expr.Cmp{Op: op, Register: reg1, Data: data},
	}
}

// matchCtBits is "ct key & bits != 0" for a host-order conntrack field.
func matchCtBits(key expr.CtKey, bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: key},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
	}
}

// matchCtDNAT is "ct status dnat".
func matchCtDNAT() []expr.Any { return matchCtBits(expr.CtKeySTATUS, ipsDstNAT) }

func masq() []expr.Any { return []expr.Any{&expr.Masq{}} }

// acceptIf is "iifname bridge accept" or "oifname bridge accept".
func acceptIf(key expr.MetaKey, bridge string) []expr.Any {
	return append(matchIfname(key, bridge, expr.CmpOpEq), &expr.Verdict{Kind: expr.VerdictAccept})
}

// acceptReplies is "oifname bridge ct state established,related accept".
func acceptReplies(bridge string) []expr.Any {
	return slices.Concat(matchIfname(expr.MetaKeyOIFNAME, bridge, expr.CmpOpEq),
		matchCtBits(expr.CtKeySTATE, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED),
		[]expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}})
}

// dnatLookup is "dnat ip to [ip daddr .] meta l4proto . th dport map @m".
func dnatLookup(every bool) []expr.Any {
	return append(loadKey(every),
		&expr.Lookup{SourceRegister: reg32a, DestRegister: reg1, IsDestRegSet: true, SetName: portMap(every).Name},
		// The value fills register 1: address in its first 32 bits, port in the second.
		dnatReg1(),
	)
}

// dnatReg1 is the DNAT to the address and port a map lookup left in
// register 1.
func dnatReg1() *expr.NAT {
	return &expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1, RegProtoMin: reg32b}
}

// loadKey loads "[ip daddr .] meta l4proto . th dport", a key of the
// address-bound or the every-address maps, from register reg32a on.
func loadKey(every bool) []expr.Any {
	var load []expr.Any
	next := uint32(reg32a)
	if !every {
		load = append(load, &expr.Payload{DestRegister: reg32a, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4})
		next = reg32b
	}
	return append(load,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: next},
		&expr.Payload{DestRegister: next + 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	)
}
