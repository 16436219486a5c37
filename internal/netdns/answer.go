package netdns

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

// ednsSize is the UDP payload size berth's own answers advertise when the
// query carried EDNS: the size DNS Flag Day 2020 settled on, which crosses
// any path unfragmented.
const ednsSize = 1232

// Message sizes: what a client without EDNS takes over UDP, and the most
// a message can be (over TCP, its length is two bytes).
const (
	minMsgSize = 512
	maxMsgSize = 65535
)

// query is a client's query as read.
type query struct {
	raw      []byte // the packet, for the upstreams
	header   dnsmessage.Header
	question dnsmessage.Question // the first question, if any
	nq       int                 // how many questions
	udpSize  int                 // the size its EDNS record says; 0 without EDNS
}

// udpLimit is how big a reply the client takes over UDP: 512 bytes, or
// the size its EDNS record says when larger.
func (q *query) udpLimit() int {
	return min(max(minMsgSize, q.udpSize), maxMsgSize)
}

// handle reads one query and answers it when the answer needs no
// upstream. It returns nil, nil for a packet to drop, and q with a nil
// reply for a query to forward.
func (s *Server) handle(b []byte) (q *query, reply *dnsmessage.Message) {
	q, reply = parse(b)
	if q != nil && reply == nil {
		reply = s.local(q)
	}
	return q, reply
}

// parse reads one query. It returns nil, nil when the packet is to be
// dropped (malformed or cut short, or a response), or the query and, when
// the query is not one this server handles (an opcode other than QUERY,
// not exactly one question), the error reply to send.
func parse(b []byte) (q *query, reply *dnsmessage.Message) {
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil || h.Response {
		return nil, nil
	}
	questions, err := p.AllQuestions()
	if err != nil {
		return nil, nil
	}
	if p.SkipAllAnswers() != nil || p.SkipAllAuthorities() != nil {
		return nil, nil
	}
	q = &query{raw: slices.Clone(b), header: h, nq: len(questions)}
	if len(questions) > 0 {
		q.question = questions[0]
	}
	for {
		rh, err := p.AdditionalHeader()
		if err == dnsmessage.ErrSectionDone {
			break
		}
		if err != nil {
			return nil, nil
		}
		if rh.Type == dnsmessage.TypeOPT {
			q.udpSize = max(1, int(rh.Class)) // not 0: 0 says no EDNS
		}
		if p.SkipAdditional() != nil {
			return nil, nil
		}
	}
	switch {
	case h.OpCode != 0: // QUERY
		return q, failure(q, dnsmessage.RCodeNotImplemented)
	case q.nq != 1:
		return q, failure(q, dnsmessage.RCodeFormatError)
	}
	return q, nil
}

// failure is the reply to q with rcode and no records: its question, its
// opcode and, for a QUERY, its RD and CD bits.
func failure(q *query, rcode dnsmessage.RCode) *dnsmessage.Message {
	r := &dnsmessage.Message{Header: dnsmessage.Header{
		ID:                 q.header.ID,
		Response:           true,
		OpCode:             q.header.OpCode,
		RecursionAvailable: true,
		RCode:              rcode,
	}}
	if q.header.OpCode == 0 {
		r.Header.RecursionDesired = q.header.RecursionDesired
		r.Header.CheckingDisabled = q.header.CheckingDisabled
	}
	if q.nq > 0 {
		r.Questions = []dnsmessage.Question{q.question}
	}
	return r
}

// authoritative is an empty reply to q with rcode from the server that
// owns the name.
func authoritative(q *query, rcode dnsmessage.RCode) *dnsmessage.Message {
	r := failure(q, rcode)
	r.Header.Authoritative = true
	return r
}

// local answers q when its name is the network's own: an instance name or
// alias, an address of the network's in reverse, or a name in the
// network's domain. It returns nil for a name to forward.
func (s *Server) local(q *query) *dnsmessage.Message {
	question := q.question
	if question.Class != dnsmessage.ClassINET && question.Class != dnsmessage.ClassANY {
		return nil
	}
	name := normalize(question.Name.String())
	if ip, ok := reverseAddr(name); ok {
		return s.pointers(q, ip)
	}
	var addrs []netip.Addr
	if s.cfg.Lookup != nil {
		addrs = s.cfg.Lookup(name)
	}
	if len(addrs) == 0 {
		if s.domain != "" && (name == s.domain || strings.HasSuffix(name, "."+s.domain)) {
			return authoritative(q, dnsmessage.RCodeNameError)
		}
		return nil
	}
	r := authoritative(q, dnsmessage.RCodeSuccess)
	// Every replica, in an order of their own each time, so that clients
	// taking the first address spread over them.
	addrs = slices.Clone(addrs)
	rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case a.Is4() && (question.Type == dnsmessage.TypeA || question.Type == dnsmessage.TypeALL):
			r.Answers = append(r.Answers, answer(question, dnsmessage.TypeA, &dnsmessage.AResource{A: a.As4()}))
		case a.Is6() && (question.Type == dnsmessage.TypeAAAA || question.Type == dnsmessage.TypeALL):
			r.Answers = append(r.Answers, answer(question, dnsmessage.TypeAAAA, &dnsmessage.AAAAResource{AAAA: a.As16()}))
		}
	}
	return r
}

// pointers answers the reverse query q for ip with the names Reverse
// gives, or returns nil when ip is not the network's.
func (s *Server) pointers(q *query, ip netip.Addr) *dnsmessage.Message {
	if s.cfg.Reverse == nil {
		return nil
	}
	names := s.cfg.Reverse(ip)
	if len(names) == 0 {
		return nil
	}
	question := q.question
	r := authoritative(q, dnsmessage.RCodeSuccess)
	if question.Type == dnsmessage.TypePTR || question.Type == dnsmessage.TypeALL {
		for _, n := range names {
			if ptr, ok := domainName(n); ok {
				r.Answers = append(r.Answers, answer(question, dnsmessage.TypePTR, &dnsmessage.PTRResource{PTR: ptr}))
			}
		}
	}
	return r
}

// domainName is n, with or without its trailing dot, as a name that goes
// on the wire: labels of 1 to 63 bytes, 254 bytes in all with the dot.
func domainName(n string) (dnsmessage.Name, bool) {
	n = strings.TrimSuffix(n, ".")
	if n == "" || len(n) > 253 {
		return dnsmessage.Name{}, false
	}
	for l := range strings.SplitSeq(n, ".") {
		if l == "" || len(l) > 63 {
			return dnsmessage.Name{}, false
		}
	}
	name, err := dnsmessage.NewName(n + ".")
	return name, err == nil
}

// answer is a record of type rrtype answering question, with the name
// spelt as the client asked it.
func answer(question dnsmessage.Question, rrtype dnsmessage.Type, body dnsmessage.ResourceBody) dnsmessage.Resource {
	return dnsmessage.Resource{
		Header: dnsmessage.ResourceHeader{Name: question.Name, Type: rrtype, Class: dnsmessage.ClassINET, TTL: TTL},
		Body:   body,
	}
}

// pack is reply on the wire, with q's ID and, when q had EDNS, an EDNS
// record of berth's own, fitted to what the client can take (over UDP 512
// bytes, or the size its EDNS record says): when the answers do not all
// fit, those that do are kept and the TC bit set. Nil when reply cannot
// be packed.
func pack(reply *dnsmessage.Message, q *query, overTCP bool) []byte {
	reply.Header.ID = q.header.ID
	if q.udpSize != 0 {
		var opt dnsmessage.ResourceHeader
		if opt.SetEDNS0(ednsSize, dnsmessage.RCodeSuccess, false) != nil {
			return nil
		}
		reply.Additionals = []dnsmessage.Resource{{Header: opt, Body: &dnsmessage.OPTResource{}}}
	}
	limit := maxMsgSize
	if !overTCP {
		limit = q.udpLimit()
	}
	b, err := reply.Pack()
	if err != nil {
		return nil
	}
	if len(b) <= limit {
		return b
	}
	// The most answers that fit: the records are all small, so it is
	// cheap enough to pack again for each try.
	all := reply.Answers
	reply.Header.Truncated = true
	n := sort.Search(len(all)+1, func(n int) bool {
		reply.Answers = all[:n]
		b, err := reply.Pack()
		return err != nil || len(b) > limit
	}) - 1
	if n < 0 {
		return nil
	}
	reply.Answers = all[:n]
	b, err = reply.Pack()
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
