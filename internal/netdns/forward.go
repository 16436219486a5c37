package netdns

import (
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// forward asks the upstreams Config.Upstreams gives for client, in order,
// and returns, on the wire and with q's ID, the first real answer (any
// rcode but SERVFAIL and REFUSED). An upstream that fails, stays silent
// past the timeout or answers SERVFAIL or REFUSED passes the query to the
// next; when none answered better, the last SERVFAIL or REFUSED is
// relayed, or SERVFAIL given. With no upstreams at all the answer is
// REFUSED.
//
// An upstream's answer is relayed as it came, only the ID put back: the
// upstream got the client's own query, EDNS size included, so its answer
// fits the client. One that does not (fetched over TCP for a client that
// asked over UDP) is cut down to its header and question, with the TC bit
// set, which sends the client to ask again over TCP.
func (s *Server) forward(q *query, client netip.Addr, overTCP bool) []byte {
	var upstreams []netip.AddrPort
	if s.cfg.Upstreams != nil {
		upstreams = s.cfg.Upstreams(client)
	}
	var last []byte
	tried := false
	for _, up := range upstreams {
		if !up.IsValid() || s.isSelf(up) {
			continue
		}
		tried = true
		r, rcode := s.exchange(q, up, overTCP)
		if r == nil {
			continue
		}
		if rcode == dnsmessage.RCodeServerFailure || rcode == dnsmessage.RCodeRefused {
			last = r
			continue
		}
		return fit(r, q, overTCP)
	}
	switch {
	case last != nil:
		return fit(last, q, overTCP)
	case !tried:
		return pack(failure(q, dnsmessage.RCodeRefused), q, overTCP)
	}
	return pack(failure(q, dnsmessage.RCodeServerFailure), q, overTCP)
}

// isSelf says whether up is this server's own address (or another owner's
// socket on it): forwarding there would only go round in a loop.
func (s *Server) isSelf(up netip.AddrPort) bool {
	return up.Port() == s.addr.Port() && up.Addr().Unmap() == s.addr.Addr().Unmap()
}

// exchange asks up for q, under an ID of its own so that a client's
// guessable IDs do not make the upstream's answers easier to spoof, and
// returns the answer with q's ID, and its rcode. It asks over TCP when
// the client did, or when up's UDP answer came truncated or too big for
// the client. Nil when up gave no usable answer.
func (s *Server) exchange(q *query, up netip.AddrPort, overTCP bool) ([]byte, dnsmessage.RCode) {
	out := slices.Clone(q.raw)
	id := uint16(rand.Uint32())
	binary.BigEndian.PutUint16(out, id)
	for {
		var r []byte
		if overTCP {
			r = askTCP(out, up, s.cfg.timeout)
		} else {
			r = askUDP(out, up, s.cfg.timeout, q.udpLimit())
		}
		var p dnsmessage.Parser
		h, err := p.Start(r)
		if err != nil || !h.Response || h.ID != id {
			return nil, 0
		}
		if !overTCP && (h.Truncated || len(r) > q.udpLimit()) {
			overTCP = true
			continue
		}
		questions, err := p.AllQuestions()
		if err != nil || !sameQuestion(questions, h.RCode, q.question) {
			return nil, 0
		}
		binary.BigEndian.PutUint16(r, q.header.ID)
		return r, h.RCode
	}
}

// askUDP sends the query out to up over UDP and returns the reply, nil
// when none came within timeout. It reads one byte more than the client
// takes, so that a reply too big for it shows. Datagrams that are not a
// reply to out (a late reply to an earlier query) are passed over.
func askUDP(out []byte, up netip.AddrPort, timeout time.Duration, size int) []byte {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(up))
	if err != nil {
		return nil
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(out); err != nil {
		return nil
	}
	buf := make([]byte, size+1)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil
		}
		if n >= 2 && buf[0] == out[0] && buf[1] == out[1] {
			return buf[:n]
		}
	}
}

// askTCP sends the query out to up over a TCP connection of its own and
// returns the reply, nil when none came within timeout.
func askTCP(out []byte, up netip.AddrPort, timeout time.Duration) []byte {
	deadline := time.Now().Add(timeout)
	d := net.Dialer{Deadline: deadline}
	c, err := d.Dial("tcp", up.String())
	if err != nil {
		return nil
	}
	defer c.Close()
	c.SetDeadline(deadline)
	if writeMsg(c, out) != nil {
		return nil
	}
	r, err := readMsg(c)
	if err != nil {
		return nil
	}
	return r
}

// readMsg reads one message of a DNS TCP stream: its length in two bytes,
// then the message.
func readMsg(r io.Reader) ([]byte, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint16(n[:]))
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

// writeMsg writes the message b on a DNS TCP stream, after its length,
// in one write.
func writeMsg(w io.Writer, b []byte) error {
	if len(b) > maxMsgSize {
		return errors.New("dns: message too long")
	}
	msg := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(b)), uint16(len(b)))
	_, err := w.Write(append(msg, b...))
	return err
}

// sameQuestion says whether an answer with questions and rcode answers
// question, when it says one (an error answer may carry none).
func sameQuestion(questions []dnsmessage.Question, rcode dnsmessage.RCode, question dnsmessage.Question) bool {
	if len(questions) == 0 {
		return rcode != dnsmessage.RCodeSuccess
	}
	a := questions[0]
	return len(questions) == 1 && a.Type == question.Type && a.Class == question.Class &&
		strings.EqualFold(a.Name.String(), question.Name.String())
}

// fit is the upstream's answer r for a client that asked q: as it is over
// TCP or when it fits the client over UDP, otherwise its header and q's
// question with the TC bit set.
func fit(r []byte, q *query, overTCP bool) []byte {
	if overTCP || len(r) <= q.udpLimit() {
		return r
	}
	var p dnsmessage.Parser
	h, err := p.Start(r)
	if err != nil {
		return nil
	}
	h.Truncated = true
	return pack(&dnsmessage.Message{Header: h, Questions: []dnsmessage.Question{q.question}}, q, false)
}
