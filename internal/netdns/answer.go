package netdns

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// ednsSize is the UDP payload size berth's own answers advertise when the
// query carried EDNS: the size DNS Flag Day 2020 settled on, which crosses
// any path unfragmented.
const ednsSize = 1232

// handle reads one query and answers it when the answer needs no
// upstream. It returns nil, nil for a packet to drop, and q with a nil
// reply for a query to forward.
func (s *Server) handle(b []byte) (q, reply *dns.Msg) {
	q, reply = s.parse(b)
	if q != nil && reply == nil {
		reply = s.local(q)
	}
	return q, reply
}

// parse reads one query. It returns nil, nil when the packet is to be
// dropped (malformed or cut short, or a response), or the query and, when the query is
// not one this server handles (an opcode other than QUERY, not exactly one
// question), the error reply to send.
func (s *Server) parse(b []byte) (q, reply *dns.Msg) {
	q = new(dns.Msg)
	if err := q.Unpack(b); err != nil || q.Response {
		return nil, nil
	}
	// Unpack stops quietly where the packet ends: a packet with fewer
	// questions than its header counts is cut short, not a query.
	if int(binary.BigEndian.Uint16(b[4:6])) != len(q.Question) {
		return nil, nil
	}
	switch {
	case q.Opcode != dns.OpcodeQuery:
		return q, failure(q, dns.RcodeNotImplemented)
	case len(q.Question) != 1:
		return q, failure(q, dns.RcodeFormatError)
	}
	return q, nil
}

// failure is the reply to q with rcode and no records.
func failure(q *dns.Msg, rcode int) *dns.Msg {
	r := new(dns.Msg)
	r.SetRcode(q, rcode)
	r.RecursionAvailable = true
	return r
}

// local answers q when its name is the network's own: an instance name or
// alias, an address of the network's in reverse, or a name in the
// network's domain. It returns nil for a name to forward.
func (s *Server) local(q *dns.Msg) *dns.Msg {
	question := q.Question[0]
	if question.Qclass != dns.ClassINET && question.Qclass != dns.ClassANY {
		return nil
	}
	name := normalize(question.Name)
	if ip, ok := reverseAddr(name); ok {
		return s.pointers(q, ip)
	}
	var addrs []netip.Addr
	if s.cfg.Lookup != nil {
		addrs = s.cfg.Lookup(name)
	}
	if len(addrs) == 0 {
		if s.domain != "" && (name == s.domain || strings.HasSuffix(name, "."+s.domain)) {
			r := failure(q, dns.RcodeNameError)
			r.Authoritative = true
			return r
		}
		return nil
	}
	r := authoritative(q)
	// Every replica, in an order of their own each time, so that clients
	// taking the first address spread over them.
	addrs = append([]netip.Addr(nil), addrs...)
	rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case a.Is4() && (question.Qtype == dns.TypeA || question.Qtype == dns.TypeANY):
			r.Answer = append(r.Answer, &dns.A{Hdr: header(question, dns.TypeA), A: a.AsSlice()})
		case a.Is6() && (question.Qtype == dns.TypeAAAA || question.Qtype == dns.TypeANY):
			r.Answer = append(r.Answer, &dns.AAAA{Hdr: header(question, dns.TypeAAAA), AAAA: a.AsSlice()})
		}
	}
	return r
}

// pointers answers the reverse query q for ip with the names Reverse
// gives, or returns nil when ip is not the network's.
func (s *Server) pointers(q *dns.Msg, ip netip.Addr) *dns.Msg {
	if s.cfg.Reverse == nil {
		return nil
	}
	names := s.cfg.Reverse(ip)
	if len(names) == 0 {
		return nil
	}
	question := q.Question[0]
	r := authoritative(q)
	if question.Qtype == dns.TypePTR || question.Qtype == dns.TypeANY {
		for _, n := range names {
			if _, ok := dns.IsDomainName(n); !ok || n == "" {
				continue
			}
			r.Answer = append(r.Answer, &dns.PTR{Hdr: header(question, dns.TypePTR), Ptr: dns.Fqdn(n)})
		}
	}
	return r
}

// authoritative is an empty NOERROR reply to q from the server that owns
// the name.
func authoritative(q *dns.Msg) *dns.Msg {
	r := new(dns.Msg)
	r.SetReply(q)
	r.Authoritative = true
	r.RecursionAvailable = true
	return r
}

// header is the header of an answer of type rrtype to question, with the
// name spelt as the client asked it.
func header(question dns.Question, rrtype uint16) dns.RR_Header {
	return dns.RR_Header{Name: question.Name, Rrtype: rrtype, Class: dns.ClassINET, Ttl: TTL}
}

// pack is reply on the wire, with q's ID, fitted to what the client can
// take over UDP (512 bytes, or the size its EDNS record says) with the TC
// bit set when records had to go. Nil when reply cannot be packed.
func pack(reply, q *dns.Msg, overTCP bool) []byte {
	reply.Id = q.Id
	size := dns.MaxMsgSize
	if opt := q.IsEdns0(); opt != nil {
		if reply.IsEdns0() == nil {
			reply.SetEdns0(ednsSize, false)
		}
		if !overTCP {
			size = int(opt.UDPSize())
		}
	} else if !overTCP {
		size = dns.MinMsgSize
	}
	reply.Truncate(size)
	b, err := reply.Pack()
	if err != nil {
		return nil
	}
	return b
}

// normalize is name as Lookup takes it: lower case, no trailing dot.
func normalize(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// reverseAddr reads the address of a reverse name ("4.3.2.1.in-addr.arpa",
// or 32 nibbles and "ip6.arpa"), normalized. It says false for any other
// name, including the names of whole reverse zones.
func reverseAddr(name string) (netip.Addr, bool) {
	var text string
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa"); ok {
		labels := strings.Split(rest, ".")
		if len(labels) != 4 {
			return netip.Addr{}, false
		}
		slices.Reverse(labels)
		text = strings.Join(labels, ".")
	} else if rest, ok := strings.CutSuffix(name, ".ip6.arpa"); ok {
		labels := strings.Split(rest, ".")
		if len(labels) != 32 {
			return netip.Addr{}, false
		}
		slices.Reverse(labels)
		var b strings.Builder
		for i, l := range labels {
			if len(l) != 1 {
				return netip.Addr{}, false
			}
			if i > 0 && i%4 == 0 {
				b.WriteByte(':')
			}
			b.WriteString(l)
		}
		text = b.String()
	} else {
		return netip.Addr{}, false
	}
	// The labels must spell the address and nothing else: no zone, and
	// no IPv6 text smuggled into an in-addr.arpa name.
	a, err := netip.ParseAddr(text)
	if err != nil || a.Zone() != "" || a.Is4() != strings.HasSuffix(name, ".in-addr.arpa") {
		return netip.Addr{}, false
	}
	return a, true
}
