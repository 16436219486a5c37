package netdns

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Every address a test sends to is on 127.0.0.0/8. The records upstreams
// answer with name documentation addresses, which nothing is sent to.

var loopback = netip.MustParseAddrPort("127.0.0.1:0")

// upstream is a DNS server of the test's own on loopback, UDP and TCP on
// one port, that records what it is asked.
type upstream struct {
	addr netip.AddrPort
	mu   sync.Mutex
	seen []string // "udp example.org. A", in arrival order
}

// startUpstream serves answer (or, when nil, one A record 198.51.100.7
// for any A question) until the test ends.
func startUpstream(t *testing.T, answer func(network string, q *dns.Msg) *dns.Msg) *upstream {
	t.Helper()
	u := &upstream{}
	pc, ln := listenPair(t)
	u.addr = netip.MustParseAddrPort(pc.LocalAddr().String())
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		network := w.LocalAddr().Network()
		u.mu.Lock()
		u.seen = append(u.seen, network+" "+q.Question[0].Name+" "+dns.TypeToString[q.Question[0].Qtype])
		u.mu.Unlock()
		var r *dns.Msg
		if answer != nil {
			r = answer(network, q)
		} else {
			r = new(dns.Msg)
			r.SetReply(q)
			if q.Question[0].Qtype == dns.TypeA {
				r.Answer = append(r.Answer, aRecord(q.Question[0].Name, "198.51.100.7"))
			}
		}
		if r != nil {
			w.WriteMsg(r)
		}
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return u
}

// listenPair binds UDP and TCP sockets on one loopback port.
func listenPair(t *testing.T) (net.PacketConn, net.Listener) {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		pc.Close()
	}
	t.Fatal("no loopback port free for both UDP and TCP")
	return nil, nil
}

func (u *upstream) asked() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.seen)
}

// askedFor says whether the upstream was asked anything about name.
func (u *upstream) askedFor(name string) bool {
	for _, s := range u.asked() {
		if strings.EqualFold(strings.Fields(s)[1], name) {
			return true
		}
	}
	return false
}

// deadAddr is a loopback port nothing listens on, UDP or TCP.
func deadAddr(t *testing.T) netip.AddrPort {
	pc, ln := listenPair(t)
	a := netip.MustParseAddrPort(pc.LocalAddr().String())
	pc.Close()
	ln.Close()
	return a
}

func aRecord(name, ip string) *dns.A {
	return &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.ParseIP(ip)}
}

// names is a network's names as a caller's Lookup and Reverse give them.
var names = map[string][]netip.Addr{
	"web":              {netip.MustParseAddr("10.89.0.2"), netip.MustParseAddr("10.89.0.3")},
	"web.corp.example": {netip.MustParseAddr("10.89.0.2"), netip.MustParseAddr("10.89.0.3")},
	"db":               {netip.MustParseAddr("10.89.0.4")},
}

func lookup(name string) []netip.Addr { return names[name] }

func reverse(ip netip.Addr) []string {
	switch ip {
	case netip.MustParseAddr("10.89.0.4"):
		return []string{"db"}
	case netip.MustParseAddr("fd00::4"):
		return []string{"db"}
	}
	return nil
}

// serve starts a Server on a random loopback port with the test's names
// and the given upstreams, closed when the test ends.
func serve(t *testing.T, cfg Config, upstreams ...netip.AddrPort) *Server {
	t.Helper()
	if !cfg.Addr.IsValid() {
		cfg.Addr = loopback
	}
	if cfg.Lookup == nil {
		cfg.Lookup = lookup
	}
	if cfg.Reverse == nil {
		cfg.Reverse = reverse
	}
	if cfg.Upstreams == nil && upstreams != nil {
		cfg.Upstreams = func(netip.Addr) []netip.AddrPort { return upstreams }
	}
	s, err := Serve(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// ask sends one question to addr over network ("udp" or "tcp"); edns,
// when not zero, is the UDP size the query advertises.
func ask(t *testing.T, addr netip.AddrPort, network, name string, qtype uint16, edns uint16) *dns.Msg {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	if edns != 0 {
		q.SetEdns0(edns, false)
	}
	c := dns.Client{Net: network, Timeout: 5 * time.Second, UDPSize: edns}
	r, _, err := c.Exchange(q, addr.String())
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	if r.Id != q.Id {
		t.Fatalf("%s %s: reply ID %d, query ID %d", network, name, r.Id, q.Id)
	}
	return r
}

// addrsOf is the sorted addresses of r's A and AAAA answers.
func addrsOf(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A.String())
		case *dns.AAAA:
			out = append(out, rr.AAAA.String())
		}
	}
	slices.Sort(out)
	return out
}

func TestOwnNames(t *testing.T) {
	up := startUpstream(t, nil)
	var mu sync.Mutex
	var looked []string
	s := serve(t, Config{Lookup: func(name string) []netip.Addr {
		mu.Lock()
		looked = append(looked, name)
		mu.Unlock()
		return names[name]
	}}, up.addr)

	for _, network := range []string{"udp", "tcp"} {
		for _, name := range []string{"web.", "WEB.", "Web.Corp.EXAMPLE."} {
			r := ask(t, s.Addr(), network, name, dns.TypeA, 0)
			if r.Rcode != dns.RcodeSuccess || !r.Authoritative || r.Truncated {
				t.Errorf("%s %s A: rcode %s, aa %v, tc %v", network, name, dns.RcodeToString[r.Rcode], r.Authoritative, r.Truncated)
			}
			if got := addrsOf(r); !slices.Equal(got, []string{"10.89.0.2", "10.89.0.3"}) {
				t.Errorf("%s %s A: %v, want both replicas", network, name, got)
			}
			for _, rr := range r.Answer {
				if rr.Header().Ttl != TTL || rr.Header().Name != name {
					t.Errorf("%s %s A: answer %v, want TTL %d and the name as asked", network, name, rr, TTL)
				}
			}
		}
	}
	for _, qtype := range []uint16{dns.TypeAAAA, dns.TypeMX, dns.TypeTXT} {
		r := ask(t, s.Addr(), "udp", "db.", qtype, 0)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
			t.Errorf("db %s: rcode %s with %d answers, want NOERROR and none", dns.TypeToString[qtype], dns.RcodeToString[r.Rcode], len(r.Answer))
		}
	}
	if r := ask(t, s.Addr(), "udp", "db.", dns.TypeANY, 0); !slices.Equal(addrsOf(r), []string{"10.89.0.4"}) {
		t.Errorf("db ANY: %v", addrsOf(r))
	}
	mu.Lock()
	for _, n := range looked {
		if n != strings.ToLower(n) || strings.HasSuffix(n, ".") {
			t.Errorf("Lookup was given %q, want lower case without the trailing dot", n)
		}
	}
	mu.Unlock()
	if a := up.asked(); len(a) != 0 {
		t.Errorf("the network's own names reached the upstream: %v", a)
	}
}

func TestOwnNamesTruncatedOverUDP(t *testing.T) {
	var many []netip.Addr
	for i := range 100 {
		many = append(many, netip.AddrFrom4([4]byte{10, 89, 1, byte(i)}))
	}
	s := serve(t, Config{Lookup: func(string) []netip.Addr { return many }})
	r := ask(t, s.Addr(), "udp", "svc.", dns.TypeA, 0)
	if !r.Truncated || len(r.Answer) == 100 {
		t.Errorf("100 replicas over plain UDP: tc %v with %d answers, want a truncated answer", r.Truncated, len(r.Answer))
	}
	if r := ask(t, s.Addr(), "tcp", "svc.", dns.TypeA, 0); r.Truncated || len(r.Answer) != 100 {
		t.Errorf("100 replicas over TCP: tc %v with %d answers, want all", r.Truncated, len(r.Answer))
	}
	if r := ask(t, s.Addr(), "udp", "svc.", dns.TypeA, 4096); r.Truncated || len(r.Answer) != 100 || r.IsEdns0() == nil {
		t.Errorf("100 replicas over UDP with EDNS 4096: tc %v with %d answers (edns %v), want all", r.Truncated, len(r.Answer), r.IsEdns0() != nil)
	}
}

func TestDomain(t *testing.T) {
	up := startUpstream(t, nil)
	s := serve(t, Config{Domain: "Berth.Internal."}, up.addr)
	for _, name := range []string{"ghost.berth.internal.", "BERTH.INTERNAL."} {
		r := ask(t, s.Addr(), "udp", name, dns.TypeA, 0)
		if r.Rcode != dns.RcodeNameError || !r.Authoritative {
			t.Errorf("%s: rcode %s aa %v, want an authoritative NXDOMAIN", name, dns.RcodeToString[r.Rcode], r.Authoritative)
		}
	}
	if r := ask(t, s.Addr(), "udp", "notberth.internal.", dns.TypeA, 0); r.Rcode != dns.RcodeSuccess || !up.askedFor("notberth.internal.") {
		t.Errorf("a name that only ends like the domain was not forwarded: %s", dns.RcodeToString[r.Rcode])
	}
	if up.askedFor("ghost.berth.internal.") || up.askedFor("berth.internal.") {
		t.Errorf("names in the network's domain reached the upstream: %v", up.asked())
	}
}

func TestReverse(t *testing.T) {
	up := startUpstream(t, nil)
	s := serve(t, Config{}, up.addr)
	for _, name := range []string{"4.0.89.10.in-addr.arpa.", "4.0.89.10.IN-ADDR.ARPA."} {
		r := ask(t, s.Addr(), "udp", name, dns.TypePTR, 0)
		if len(r.Answer) != 1 || r.Answer[0].(*dns.PTR).Ptr != "db." || !r.Authoritative {
			t.Errorf("PTR %s: %v", name, r.Answer)
		}
	}
	v6, _ := dns.ReverseAddr("fd00::4")
	if r := ask(t, s.Addr(), "tcp", v6, dns.TypePTR, 0); len(r.Answer) != 1 || r.Answer[0].(*dns.PTR).Ptr != "db." {
		t.Errorf("PTR %s: %v", v6, r.Answer)
	}
	if r := ask(t, s.Addr(), "udp", "4.0.89.10.in-addr.arpa.", dns.TypeA, 0); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("A for our reverse name: %s with %v, want NOERROR and none", dns.RcodeToString[r.Rcode], r.Answer)
	}
	if up.askedFor("4.0.89.10.in-addr.arpa.") {
		t.Error("the reverse name of our address reached the upstream")
	}
	ask(t, s.Addr(), "udp", "9.0.89.10.in-addr.arpa.", dns.TypePTR, 0)
	if !up.askedFor("9.0.89.10.in-addr.arpa.") {
		t.Error("the reverse name of an address not ours was not forwarded")
	}
}

// TestReverseBadNames: names Reverse gives that cannot go on the wire
// are left out, and the others still answered.
func TestReverseBadNames(t *testing.T) {
	s := serve(t, Config{Reverse: func(netip.Addr) []string {
		return []string{"", ".", "a..b", strings.Repeat("x", 64) + ".example", strings.Repeat("abc.", 64), "db", "web.corp.example."}
	}})
	r := ask(t, s.Addr(), "udp", "4.0.89.10.in-addr.arpa.", dns.TypePTR, 0)
	var got []string
	for _, rr := range r.Answer {
		got = append(got, rr.(*dns.PTR).Ptr)
	}
	if want := []string{"db.", "web.corp.example."}; r.Rcode != dns.RcodeSuccess || !slices.Equal(got, want) {
		t.Errorf("PTR: %s %v, want %v", dns.RcodeToString[r.Rcode], got, want)
	}
}

func TestReverseAddr(t *testing.T) {
	v6, _ := dns.ReverseAddr("2001:db8::567:89ab")
	for name, want := range map[string]string{
		"4.3.2.1.in-addr.arpa":    "1.2.3.4",
		"255.0.0.10.in-addr.arpa": "10.0.0.255",
		normalize(v6):             "2001:db8::567:89ab",
	} {
		if got, ok := reverseAddr(name); !ok || got.String() != want {
			t.Errorf("reverseAddr(%q) = %v, %v; want %s", name, got, ok, want)
		}
	}
	for _, name := range []string{"0.89.10.in-addr.arpa", "256.0.0.10.in-addr.arpa", "04.0.0.10.in-addr.arpa",
		"a.0.0.10.in-addr.arpa", "..0.10.in-addr.arpa", "in-addr.arpa", "1.ip6.arpa", "example.org",
		"4.3.2.::ffff:1.in-addr.arpa", strings.Repeat("0.", 28) + "%.e.t.h.ip6.arpa", strings.Repeat("g.", 32) + "ip6.arpa"} {
		if got, ok := reverseAddr(name); ok {
			t.Errorf("reverseAddr(%q) = %v, want not an address", name, got)
		}
	}
}

func TestForward(t *testing.T) {
	up := startUpstream(t, func(network string, q *dns.Msg) *dns.Msg {
		r := new(dns.Msg)
		r.SetReply(q)
		switch q.Question[0].Name {
		case "example.org.":
			r.Answer = append(r.Answer, aRecord("example.org.", "198.51.100.7"))
		default:
			r.Rcode = dns.RcodeNameError
		}
		return r
	})
	s := serve(t, Config{}, up.addr)
	for _, network := range []string{"udp", "tcp"} {
		r := ask(t, s.Addr(), network, "example.org.", dns.TypeA, 0)
		if !slices.Equal(addrsOf(r), []string{"198.51.100.7"}) || r.Authoritative {
			t.Errorf("%s: forwarded answer %v (aa %v), want the upstream's", network, r.Answer, r.Authoritative)
		}
		if r := ask(t, s.Addr(), network, "missing.example.", dns.TypeA, 1232); r.Rcode != dns.RcodeNameError {
			t.Errorf("%s: rcode %s, want the upstream's NXDOMAIN", network, dns.RcodeToString[r.Rcode])
		}
	}
	want := []string{"udp example.org. A", "udp missing.example. A", "tcp example.org. A", "tcp missing.example. A"}
	if got := up.asked(); !slices.Equal(got, want) {
		t.Errorf("upstream asked %q, want %q (over the client's own protocol)", got, want)
	}
}

func TestForwardFallsThrough(t *testing.T) {
	good := startUpstream(t, nil)
	failing := startUpstream(t, func(_ string, q *dns.Msg) *dns.Msg {
		r := new(dns.Msg)
		return r.SetRcode(q, dns.RcodeServerFailure)
	})
	// A socket that is bound but never read: its queries time out.
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	silentAddr := netip.MustParseAddrPort(silent.LocalAddr().String())

	s := serve(t, Config{timeout: 200 * time.Millisecond}, deadAddr(t), silentAddr, failing.addr, good.addr)
	for _, network := range []string{"udp", "tcp"} {
		r := ask(t, s.Addr(), network, "example.org.", dns.TypeA, 0)
		if r.Rcode != dns.RcodeSuccess || !slices.Equal(addrsOf(r), []string{"198.51.100.7"}) {
			t.Errorf("%s: %s %v, want the answer of the last, working upstream", network, dns.RcodeToString[r.Rcode], r.Answer)
		}
	}
	if len(failing.asked()) != 2 || len(good.asked()) != 2 {
		t.Errorf("asked: failing %v, good %v", failing.asked(), good.asked())
	}

	// Nothing better than SERVFAIL: the upstream's SERVFAIL is relayed.
	s = serve(t, Config{}, deadAddr(t), failing.addr)
	if r := ask(t, s.Addr(), "udp", "example.org.", dns.TypeA, 0); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("dead and failing upstreams: %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	// No answer at all: SERVFAIL of our own.
	s = serve(t, Config{}, deadAddr(t))
	if r := ask(t, s.Addr(), "udp", "example.org.", dns.TypeA, 0); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("dead upstream: %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
}

func TestNoUpstreams(t *testing.T) {
	s := serve(t, Config{})
	for _, network := range []string{"udp", "tcp"} {
		if r := ask(t, s.Addr(), network, "example.org.", dns.TypeA, 0); r.Rcode != dns.RcodeRefused {
			t.Errorf("%s: %s, want REFUSED", network, dns.RcodeToString[r.Rcode])
		}
		if r := ask(t, s.Addr(), network, "web.", dns.TypeA, 0); len(r.Answer) != 2 {
			t.Errorf("%s: own name without upstreams: %v", network, r.Answer)
		}
	}
	// An upstream that is the server itself is not asked.
	self := serve(t, Config{Upstreams: func(netip.Addr) []netip.AddrPort { return nil }})
	loop := serve(t, Config{Addr: self.Addr(), Upstreams: func(netip.Addr) []netip.AddrPort {
		return []netip.AddrPort{self.Addr()}
	}})
	self.Close()
	if r := ask(t, loop.Addr(), "udp", "example.org.", dns.TypeA, 0); r.Rcode != dns.RcodeRefused {
		t.Errorf("upstream is the server's own address: %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
}

func TestUpstreamsByClient(t *testing.T) {
	up := startUpstream(t, nil)
	var mu sync.Mutex
	var clients []netip.Addr
	s := serve(t, Config{Upstreams: func(client netip.Addr) []netip.AddrPort {
		mu.Lock()
		clients = append(clients, client)
		mu.Unlock()
		return []netip.AddrPort{up.addr}
	}})
	ask(t, s.Addr(), "udp", "example.org.", dns.TypeA, 0)
	ask(t, s.Addr(), "tcp", "example.org.", dns.TypeA, 0)
	mu.Lock()
	defer mu.Unlock()
	want := netip.MustParseAddr("127.0.0.1")
	if len(clients) != 2 || clients[0] != want || clients[1] != want {
		t.Errorf("Upstreams was asked for %v, want the client 127.0.0.1 twice", clients)
	}
}

func TestTruncatedRetriedOverTCP(t *testing.T) {
	up := startUpstream(t, func(network string, q *dns.Msg) *dns.Msg {
		r := new(dns.Msg)
		r.SetReply(q)
		if network == "udp" {
			r.Truncated = true
			return r
		}
		for i := range 40 {
			r.Answer = append(r.Answer, aRecord(q.Question[0].Name, netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}).String()))
		}
		return r
	})
	s := serve(t, Config{}, up.addr)
	r := ask(t, s.Addr(), "udp", "big.example.", dns.TypeA, 4096)
	if r.Truncated || len(r.Answer) != 40 {
		t.Errorf("EDNS 4096 client: tc %v with %d answers, want all 40 fetched over TCP", r.Truncated, len(r.Answer))
	}
	if got, want := up.asked(), []string{"udp big.example. A", "tcp big.example. A"}; !slices.Equal(got, want) {
		t.Errorf("upstream asked %q, want %q", got, want)
	}
	// A client without EDNS takes 512 bytes: we truncate it ourselves.
	if r := ask(t, s.Addr(), "udp", "big.example.", dns.TypeA, 0); !r.Truncated {
		t.Errorf("plain UDP client: %d answers without TC", len(r.Answer))
	}
}

func TestMalformed(t *testing.T) {
	s := serve(t, Config{})
	c, err := net.Dial("udp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp := new(dns.Msg)
	resp.SetQuestion("web.", dns.TypeA)
	resp.Response = true
	respBytes, _ := resp.Pack()
	for _, junk := range [][]byte{{}, {0}, []byte("not a dns message at all"), []byte("\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00"), respBytes} {
		if _, err := c.Write(junk); err != nil {
			t.Fatal(err)
		}
	}
	// The server reads in order: had it answered the junk, that answer
	// would come before this one.
	for _, tc := range []struct {
		edit  func(*dns.Msg)
		rcode int
	}{
		{func(q *dns.Msg) { q.Opcode = dns.OpcodeNotify }, dns.RcodeNotImplemented},
		{func(q *dns.Msg) { q.Question = nil }, dns.RcodeFormatError},
		{func(q *dns.Msg) { q.Question = append(q.Question, q.Question[0]) }, dns.RcodeFormatError},
		{func(q *dns.Msg) {}, dns.RcodeSuccess},
	} {
		q := new(dns.Msg)
		q.SetQuestion("web.", dns.TypeA)
		tc.edit(q)
		b, err := q.Pack()
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		c.Write(b)
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		r := new(dns.Msg)
		if err := r.Unpack(buf[:n]); err != nil || r.Id != q.Id || r.Rcode != tc.rcode {
			t.Errorf("reply %v (%v), want ID %d and %s", r, err, q.Id, dns.RcodeToString[tc.rcode])
		}
	}

	// Over TCP a malformed message ends the connection.
	tc, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	tc.Write([]byte{0, 3, 1, 2, 3})
	if n, err := tc.Read(make([]byte, 64)); err == nil {
		t.Errorf("TCP garbage got %d bytes back, want the connection closed", n)
	}
	if r := ask(t, s.Addr(), "tcp", "web.", dns.TypeA, 0); len(r.Answer) != 2 {
		t.Errorf("after garbage: %v", r.Answer)
	}
}

// TestTwoServersShareThePort is the daemonless design: every owner binds
// the gateway's port, any of them answers, and closing one leaves the
// others serving.
func TestTwoServersShareThePort(t *testing.T) {
	only := func(ip string) func(string) []netip.Addr {
		return func(string) []netip.Addr { return []netip.Addr{netip.MustParseAddr(ip)} }
	}
	a := serve(t, Config{Lookup: only("10.89.0.10")})
	b := serve(t, Config{Addr: a.Addr(), Lookup: only("10.89.0.11")})
	if a.Addr() != b.Addr() {
		t.Fatalf("second server on %v, want %v", b.Addr(), a.Addr())
	}
	for _, network := range []string{"udp", "tcp"} {
		// The kernel picks a socket by the client's address and port; a
		// fresh client socket per query reaches both servers soon.
		seen := map[string]bool{}
		for i := 0; i < 200 && len(seen) < 2; i++ {
			for _, ip := range addrsOf(ask(t, a.Addr(), network, "web.", dns.TypeA, 0)) {
				seen[ip] = true
			}
		}
		if !seen["10.89.0.10"] || !seen["10.89.0.11"] {
			t.Errorf("%s: answers came from %v, want both servers", network, seen)
		}
	}
	a.Close()
	for _, network := range []string{"udp", "tcp"} {
		for range 10 {
			if got := addrsOf(ask(t, b.Addr(), network, "web.", dns.TypeA, 0)); !slices.Equal(got, []string{"10.89.0.11"}) {
				t.Fatalf("%s after the first server closed: %v, want the second's answer", network, got)
			}
		}
	}
}

func TestCloseFreesThePort(t *testing.T) {
	s := serve(t, Config{})
	ask(t, s.Addr(), "udp", "web.", dns.TypeA, 0)
	ask(t, s.Addr(), "tcp", "web.", dns.TypeA, 0)
	// A socket without SO_REUSEPORT cannot share the port while it serves.
	if pc, err := net.ListenPacket("udp", s.Addr().String()); err == nil {
		pc.Close()
		t.Fatal("a plain UDP socket bound the serving port")
	}
	// A client that keeps its TCP connection open does not hold Close up:
	// the idle connection is closed under it.
	idle, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	co := &dns.Conn{Conn: idle}
	q := new(dns.Msg)
	q.SetQuestion("web.", dns.TypeA)
	if err := co.WriteMsg(q); err != nil {
		t.Fatal(err)
	}
	if r, err := co.ReadMsg(); err != nil || len(r.Answer) != 2 {
		t.Fatalf("query on the idle connection: %v %v", r, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := idle.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("idle connection after Close: read %d bytes, %v; want it closed", n, err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	pc, err := net.ListenPacket("udp", s.Addr().String())
	if err != nil {
		t.Fatalf("UDP port still held after Close: %v", err)
	}
	pc.Close()
	ln, err := net.Listen("tcp", s.Addr().String())
	if err != nil {
		t.Fatalf("TCP port still held after Close: %v", err)
	}
	ln.Close()
}

func TestServeError(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	addr := netip.MustParseAddrPort(pc.LocalAddr().String())
	_, err = Serve(Config{Addr: addr})
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), addr.String()) {
		t.Errorf("Serve on a port taken without SO_REUSEPORT: %v, want one line naming %v", err, addr)
	}
	if _, err := Serve(Config{}); err == nil {
		t.Error("Serve without an address succeeded")
	}
}

// TestBoundedForwards: with every forward slot taken, a query to forward
// gets SERVFAIL at once, the network's own names are still answered, and
// Close waits for the forward in flight to be answered.
func TestBoundedForwards(t *testing.T) {
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	up := startUpstream(t, func(_ string, q *dns.Msg) *dns.Msg {
		r := new(dns.Msg)
		r.SetReply(q)
		if q.Question[0].Name == "slow.example." {
			arrived <- struct{}{}
			<-release
		}
		r.Answer = append(r.Answer, aRecord(q.Question[0].Name, "198.51.100.7"))
		return r
	})
	s := serve(t, Config{maxForwards: 1, timeout: time.Minute}, up.addr)

	slow := make(chan *dns.Msg, 1)
	go func() {
		q := new(dns.Msg)
		q.SetQuestion("slow.example.", dns.TypeA)
		c := dns.Client{Timeout: time.Minute}
		r, _, err := c.Exchange(q, s.Addr().String())
		if err != nil {
			t.Error(err)
		}
		slow <- r
	}()
	<-arrived
	if r := ask(t, s.Addr(), "udp", "other.example.", dns.TypeA, 0); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("forward while the only slot is taken: %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	if r := ask(t, s.Addr(), "udp", "web.", dns.TypeA, 0); len(r.Answer) != 2 {
		t.Errorf("own name while forwards are full: %v", r.Answer)
	}
	closed := make(chan error)
	go func() { closed <- s.Close() }()
	close(release)
	if r := <-slow; r == nil || !slices.Equal(addrsOf(r), []string{"198.51.100.7"}) {
		t.Errorf("the forward in flight at Close: %v, want its answer", r)
	}
	if err := <-closed; err != nil {
		t.Error(err)
	}
	if up.askedFor("other.example.") {
		t.Error("the query beyond the limit was forwarded")
	}
}

func TestHostUpstreams(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	systemd := write("systemd", "# resolved's own\nnameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch corp.example\n")
	for _, tc := range []struct {
		text, fallback string
		want           []string
	}{
		{"nameserver 192.0.2.1\n; comment\n# nameserver 192.0.2.9\nnameserver 127.0.0.1\nnameserver  192.0.2.2 \nnameserver 192.0.2.1\noptions edns0\n",
			systemd, []string{"192.0.2.1:53", "192.0.2.2:53"}},
		{"nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n", systemd, []string{"192.0.2.53:53", "[2001:db8::53]:53"}},
		{"nameserver ::1\nnameserver 0.0.0.0\n", systemd, []string{"192.0.2.53:53", "[2001:db8::53]:53"}},
		{"# no server at all\n", systemd, []string{"192.0.2.53:53", "[2001:db8::53]:53"}},
		{"nameserver 127.0.0.53\n", filepath.Join(dir, "absent"), nil},
		{"nameserver bogus\nnameserver ::ffff:192.0.2.7\nnameserver fe80::1%eth0\n", systemd, []string{"192.0.2.7:53", "[fe80::1%eth0]:53"}},
	} {
		got, err := hostUpstreams(write("resolv.conf", tc.text), tc.fallback)
		if err != nil {
			t.Errorf("%q: %v", tc.text, err)
			continue
		}
		var s []string
		for _, a := range got {
			s = append(s, a.String())
		}
		if !slices.Equal(s, tc.want) {
			t.Errorf("%q: %v, want %v", tc.text, s, tc.want)
		}
	}
	_, err := HostUpstreams(filepath.Join(dir, "missing"))
	if !errors.Is(err, os.ErrNotExist) || strings.Contains(err.Error(), "\n") {
		t.Errorf("missing file: %v", err)
	}
}

func TestResolvConf(t *testing.T) {
	got := string(ResolvConf(
		[]netip.Addr{netip.MustParseAddr("10.89.0.1"), {}, netip.MustParseAddr("::ffff:10.89.0.9")},
		[]string{"corp.example", "", "bad domain\nnameserver 6.6.6.6", "example.org"},
		[]string{"ndots:0", "edns0"}))
	want := "# Generated by berth.\n" +
		"search corp.example example.org\n" +
		"nameserver 10.89.0.1\n" +
		"nameserver 10.89.0.9\n" +
		"options ndots:0 edns0\n"
	if got != want {
		t.Errorf("ResolvConf =\n%s\nwant\n%s", got, want)
	}
	if got := string(ResolvConf([]netip.Addr{netip.MustParseAddr("10.89.0.1")}, []string{"."}, nil)); got != "# Generated by berth.\nnameserver 10.89.0.1\n" {
		t.Errorf("ResolvConf without search or options =\n%s", got)
	}
}

// FuzzHandle feeds the query handler any bytes: it must not panic, and
// whatever it answers must be a well-formed reply to the same ID.
func FuzzHandle(f *testing.F) {
	for _, name := range []string{"web.", "WEB.corp.example.", "4.0.89.10.in-addr.arpa.", "example.org.", "x.berth.internal."} {
		for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypePTR, dns.TypeANY} {
			q := new(dns.Msg)
			q.SetQuestion(name, qtype)
			q.SetEdns0(1232, false)
			b, _ := q.Pack()
			f.Add(b, false)
		}
	}
	f.Add([]byte{}, true)
	f.Add([]byte("\x00\x01\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00"), false)
	s := &Server{cfg: Config{Lookup: lookup, Reverse: reverse}, domain: "berth.internal"}
	f.Fuzz(func(t *testing.T, b []byte, overTCP bool) {
		q, reply := s.handle(b)
		if q == nil {
			return
		}
		var out []byte
		if reply != nil {
			out = pack(reply, q, overTCP)
		} else {
			out = s.forward(q, netip.MustParseAddr("127.0.0.1"), overTCP) // no upstreams: REFUSED
		}
		if out == nil {
			return
		}
		r := new(dns.Msg)
		if err := r.Unpack(out); err != nil {
			t.Fatalf("reply does not unpack: %v", err)
		}
		if !r.Response || r.Id != q.header.ID {
			t.Fatalf("reply %v to query ID %d", r, q.header.ID)
		}
		limit := max(dns.MinMsgSize, q.udpSize)
		if !overTCP && len(out) > limit {
			t.Fatalf("UDP reply of %d bytes to a client that takes %d", len(out), limit)
		}
	})
}
