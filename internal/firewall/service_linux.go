package firewall

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
)

// SetService publishes s's port balanced over backends, replacing the
// backends it had, in one batch: each new connection (or UDP flow) to
// HostIP:HostPort from another host or namespace, or from the host itself
// to one of its non-loopback addresses, is DNATed to the next backend in
// turn. Conntrack keeps a connection on the backend it started with, so a
// change moves new connections only. With no backends the port stays
// claimed and refuses: a TCP reset, or ICMP port unreachable for UDP.
//
// The port is s's alone: a published instance port (AddPorts) or another
// service on the same protocol and host port, on the same host address or
// with either on every address, is refused with ErrConflict naming it.
// Loopback clients are not served here: portmap.Pool balances those.
func (f *Firewall) SetService(s Service, backends []Backend) error {
	s, err := s.normalize()
	if err != nil {
		return err
	}
	bs, err := normalizeBackends(s, backends)
	if err != nil {
		return err
	}
	return f.locked(unix.LOCK_EX, func(c *nftables.Conn, st *state) error {
		known, err := st.claim(s)
		if err != nil {
			return err
		}
		if !st.exists {
			addSkeleton(c)
		} else if !known {
			if err := ensureServiceMaps(c); err != nil {
				return err
			}
		}
		ch := &nftables.Chain{Name: s.chainName(), Table: table}
		c.AddChain(ch)
		// Flushing the chain also frees the anonymous map of its old rule.
		c.FlushChain(ch)
		if err := addBalance(c, ch, s, bs); err != nil {
			return err
		}
		if !known {
			m := svcMap(s.HostIP.IsUnspecified())
			goTo := &expr.Verdict{Kind: expr.VerdictGoto, Chain: ch.Name}
			if err := c.SetAddElements(m, []nftables.SetElement{{Key: hostKey(s.hostSide()), VerdictData: goTo}}); err != nil {
				return fmt.Errorf("nf_tables: map %s: %v", m.Name, err)
			}
		}
		return commit(c, s.String())
	})
}

// RemoveService withdraws s's port and its balancing, in one batch; berth's
// table goes when nothing of berth's is left in it. A service that is not
// published (or whose port another service holds) is skipped, so that
// clean-up can call it blindly.
func (f *Firewall) RemoveService(s Service) error {
	s, err := s.normalize()
	if err != nil {
		return err
	}
	return f.locked(unix.LOCK_EX, func(c *nftables.Conn, st *state) error {
		i := slices.Index(st.services, s)
		if i < 0 {
			return nil
		}
		st.services = slices.Delete(st.services, i, i+1)
		if st.empty() {
			c.DelTable(table)
			return commit(c, "withdraw "+s.String())
		}
		m := svcMap(s.HostIP.IsUnspecified())
		if err := c.SetDeleteElements(m, []nftables.SetElement{{Key: hostKey(s.hostSide())}}); err != nil {
			return fmt.Errorf("nf_tables: map %s: %v", m.Name, err)
		}
		// The kernel deletes the chain's rule, and its anonymous map, with it.
		c.DelChain(&nftables.Chain{Name: s.chainName(), Table: table})
		return commit(c, "withdraw "+s.String())
	})
}

// ListServices returns the services published now, every-address ones with
// HostIP 0.0.0.0, each with its backends in the order SetService was given
// them (none for a port that refuses).
func (f *Firewall) ListServices() (map[Service][]Backend, error) {
	out := make(map[Service][]Backend)
	err := f.locked(unix.LOCK_SH, func(c *nftables.Conn, st *state) error {
		for _, s := range st.services {
			bs, err := readBalance(c, s)
			if err != nil {
				return err
			}
			out[s] = bs
		}
		return nil
	})
	return out, err
}

// claim checks that normalized s may take its port, and reports whether s
// has it already.
func (st *state) claim(s Service) (known bool, err error) {
	hp := s.hostSide()
	if i := slices.IndexFunc(st.ports, func(p Port) bool { return clash(hp, p) }); i >= 0 {
		return false, fmt.Errorf("%s: port %s is published already: %w", s, st.ports[i], errdefs.ErrConflict)
	}
	for _, o := range st.services {
		switch {
		case o == s:
			known = true
		case clash(hp, o.hostSide()):
			return false, fmt.Errorf("%s: %s holds the port already: %w", s, o, errdefs.ErrConflict)
		}
	}
	return known, nil
}

// ensureServiceMaps queues the services' maps and rules in a table that
// lacks them (one an older berth made, with instances' ports only).
func ensureServiceMaps(c *nftables.Conn) error {
	sets, err := c.GetSets(table)
	if err != nil {
		return fmt.Errorf("nf_tables: list sets: %v: %w", err, errdefs.ErrUnavailable)
	}
	if !slices.ContainsFunc(sets, func(s *nftables.Set) bool { return s.Name == mapSvcAny }) {
		addServiceMaps(c)
	}
	return nil
}

// svcMap is one of the services' verdict maps: the every-address one or
// the address-bound one, keyed as the port maps are.
func svcMap(every bool) *nftables.Set {
	s := &nftables.Set{Table: table, ID: idSvcAddr, Name: mapSvcAddr, KeyType: keyAddr, DataType: nftables.TypeVerdict,
		IsMap: true, Concatenation: true, KeyByteOrder: binaryutil.BigEndian}
	if every {
		s.ID, s.Name, s.KeyType = idSvcAny, mapSvcAny, keyAny
	}
	return s
}

// svcLookup is "[ip daddr .] meta l4proto . th dport vmap @m": a goto to
// the chain of the service whose port it is.
func svcLookup(every bool) []expr.Any {
	return append(loadKey(every),
		&expr.Lookup{SourceRegister: reg32a, DestRegister: unix.NFT_REG_VERDICT, IsDestRegSet: true, SetName: svcMap(every).Name})
}

// icmpPortUnreach is ICMP_PORT_UNREACH, the code of "reject" with no
// reason given.
const icmpPortUnreach = 3

// addBalance queues the one rule of normalized s's chain ch:
//
//	meta l4proto tcp dnat ip to numgen inc mod N map { 0 : a . p, 1 : b . q, ... }
//
// with an anonymous map, made in the same batch, or with no backends
// "meta l4proto tcp reject with tcp reset" ("reject", ICMP port
// unreachable, for UDP).
func addBalance(c *nftables.Conn, ch *nftables.Chain, s Service, bs []Backend) error {
	exprs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{protoNum(s.Proto)}},
	}
	if len(bs) == 0 {
		refuse := &expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: icmpPortUnreach}
		if s.Proto == "tcp" {
			refuse = &expr.Reject{Type: unix.NFT_REJECT_TCP_RST}
		}
		c.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: append(exprs, refuse)})
		return nil
	}
	m := &nftables.Set{Table: table, ID: idBalance, Name: "__map%d", Anonymous: true, Constant: true,
		IsMap: true, KeyType: nftables.TypeInteger, DataType: dest}
	elems := make([]nftables.SetElement, len(bs))
	for i, b := range bs {
		elems[i] = nftables.SetElement{Key: binaryutil.BigEndian.PutUint32(uint32(i)), Val: addrPortData(b.Addr, b.Port)}
	}
	if err := c.AddSet(m, elems); err != nil {
		return fmt.Errorf("nf_tables: %s: backends: %v", s, err)
	}
	c.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: append(exprs,
		&expr.Numgen{Register: reg1, Modulus: uint32(len(bs)), Type: unix.NFT_NG_INCREMENTAL},
		// numgen leaves its number in host byte order, and the library
		// marks every anonymous map's keys big-endian: turned, the keys
		// read back right in `nft list ruleset`.
		&expr.Byteorder{SourceRegister: reg1, DestRegister: reg1, Op: expr.ByteorderHton, Len: 4, Size: 4},
		&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: m.Name, SetID: m.ID},
		dnatReg1(),
	)})
	return nil
}

// readBalance reads back the backends addBalance wrote for s.
func readBalance(c *nftables.Conn, s Service) ([]Backend, error) {
	name := s.chainName()
	rules, err := c.GetRules(table, &nftables.Chain{Name: name, Table: table})
	if err != nil {
		return nil, fmt.Errorf("nf_tables: list chain %s: %v", name, err)
	}
	if len(rules) != 1 {
		return nil, fmt.Errorf("nf_tables: chain %s holds %d rules, berth writes one: %w", name, len(rules), errdefs.ErrInvalid)
	}
	i := slices.IndexFunc(rules[0].Exprs, func(e expr.Any) bool { _, ok := e.(*expr.Lookup); return ok })
	if i < 0 {
		return nil, nil // no backends: the rule refuses
	}
	set := rules[0].Exprs[i].(*expr.Lookup).SetName
	elems, err := c.GetSetElements(&nftables.Set{Table: table, Name: set})
	if err != nil {
		return nil, fmt.Errorf("nf_tables: list map %s of chain %s: %v", set, name, err)
	}
	// berth's keys are big-endian (addBalance); nft(8) writes the rule
	// back with host-order keys and no byte order turn (after a `nft list
	// ruleset` saved and loaded again, say). Only one of the two numbers
	// the keys 0 to N-1 when N > 1.
	for _, order := range []binaryutil.ByteOrder{binaryutil.BigEndian, binaryutil.NativeEndian} {
		if bs, ok := decodeBalance(elems, order); ok {
			return bs, nil
		}
	}
	return nil, fmt.Errorf("nf_tables: map %s of chain %s is not backends numbered 0 to %d: %w", set, name, len(elems)-1, errdefs.ErrInvalid)
}

// decodeBalance reads the elements of a map addBalance wrote, keyed in
// order, into the backends in key order; false unless the keys are 0 to
// N-1 and the values addresses and ports.
func decodeBalance(elems []nftables.SetElement, order binaryutil.ByteOrder) ([]Backend, bool) {
	bs := make([]Backend, len(elems))
	for _, e := range elems {
		if len(e.Key) != 4 || len(e.Val) != 8 {
			return nil, false
		}
		n := order.Uint32(e.Key)
		if n >= uint32(len(bs)) || bs[n].Port != 0 {
			return nil, false
		}
		bs[n] = Backend{Addr: netip.AddrFrom4([4]byte(e.Val[:4])), Port: uint16(e.Val[4])<<8 | uint16(e.Val[5])}
	}
	return bs, true
}
