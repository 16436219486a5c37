package netdns

import (
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// forward asks the upstreams Config.Upstreams gives for client, in order,
// and returns the first real answer (any rcode but SERVFAIL and REFUSED),
// with q's ID. An upstream that fails, stays silent past the timeout or
// answers SERVFAIL or REFUSED passes the query to the next; when none
// answered better, the last SERVFAIL or REFUSED is relayed, or SERVFAIL
// given. With no upstreams at all the answer is REFUSED.
func (s *Server) forward(q *dns.Msg, client netip.Addr, overTCP bool) *dns.Msg {
	var upstreams []netip.AddrPort
	if s.cfg.Upstreams != nil {
		upstreams = s.cfg.Upstreams(client)
	}
	var last *dns.Msg
	tried := false
	for _, up := range upstreams {
		if !up.IsValid() || s.isSelf(up) {
			continue
		}
		tried = true
		r := s.exchange(q, up, overTCP)
		if r == nil {
			continue
		}
		if r.Rcode == dns.RcodeServerFailure || r.Rcode == dns.RcodeRefused {
			last = r
			continue
		}
		return r
	}
	switch {
	case last != nil:
		return last
	case !tried:
		return failure(q, dns.RcodeRefused)
	}
	return failure(q, dns.RcodeServerFailure)
}

// isSelf says whether up is this server's own address (or another owner's
// socket on it): forwarding there would only go round in a loop.
func (s *Server) isSelf(up netip.AddrPort) bool {
	return up.Port() == s.addr.Port() && up.Addr().Unmap() == s.addr.Addr().Unmap()
}

// exchange asks up for q, under an ID of its own so that a client's
// guessable IDs do not make the upstream's answers easier to spoof. It
// asks over TCP when the client did, or when up's UDP answer came
// truncated. Nil when up gave no usable answer.
func (s *Server) exchange(q *dns.Msg, up netip.AddrPort, overTCP bool) *dns.Msg {
	out := q.Copy()
	out.Id = dns.Id()
	network := "udp"
	if overTCP {
		network = "tcp"
	}
	for {
		c := dns.Client{Net: network, Timeout: s.cfg.timeout}
		r, _, err := c.Exchange(out, up.String())
		if err != nil || !r.Response {
			return nil
		}
		if r.Truncated && network == "udp" {
			network = "tcp"
			continue
		}
		if !sameQuestion(r, out) {
			return nil
		}
		r.Id = q.Id
		return r
	}
}

// sameQuestion says whether r answers q's question, when it says one (an
// error answer may carry none).
func sameQuestion(r, q *dns.Msg) bool {
	if len(r.Question) == 0 {
		return r.Rcode != dns.RcodeSuccess
	}
	a, b := r.Question[0], q.Question[0]
	return len(r.Question) == 1 && a.Qtype == b.Qtype && a.Qclass == b.Qclass && strings.EqualFold(a.Name, b.Name)
}
