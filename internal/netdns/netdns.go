// Package netdns is the resolver of a berth network, in the role of Docker's
// embedded DNS and Podman's aardvark-dns: it listens on the network's
// gateway address, answers the network's own names (instances, aliases)
// from data its caller gives, and forwards every other query upstream.
//
// berth has no daemon, so there is no single resolver process: every owner
// process of an instance on the network runs one Server on the same address
// and port, each socket bound with SO_REUSEPORT. The kernel spreads queries
// among them, any of them can answer (they all read the same names from
// disk through Config.Lookup), and when the last instance ends nothing is
// left listening.
//
// Answers, in order of precedence:
//   - a malformed packet, or one that is itself a response, is dropped;
//   - an opcode other than QUERY gets NOTIMP, a count of questions other
//     than one gets FORMERR;
//   - a name Lookup knows gets its addresses (A for IPv4, AAAA for IPv6,
//     NOERROR with no answers for other types), authoritative, with TTL;
//   - a reverse name (in-addr.arpa, ip6.arpa) Reverse knows gets PTR records;
//   - a name at or under Config.Domain that Lookup does not know gets
//     NXDOMAIN: the network's own domain is never asked upstream;
//   - any other name is forwarded to the upstreams Config.Upstreams gives,
//     in order; REFUSED when there are none, SERVFAIL when none answered or
//     too many forwarded queries are already in flight.
package netdns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// TTL is the time to live, in seconds, of the answers for the network's
// own names. Docker's embedded DNS says 600; berth says less because
// instances come and go and their addresses are handed out again, and the
// resolver sits next to its clients, so asking again costs little.
const TTL = 60

// Defaults for the Config fields tests shorten.
const (
	defaultTimeout     = 3 * time.Second // one try of one upstream
	defaultMaxForwards = 256             // forwarded UDP queries in flight
	defaultMaxConns    = 64              // TCP connections open at once
	tcpIdle            = 10 * time.Second
)

// Config says where a Server listens and where its answers come from.
// The functions are called from several goroutines at once and must be
// safe for that; Lookup and Reverse are called for every query, on the
// goroutine that reads the socket, so they should return quickly (read
// from a cache the caller refreshes, not from a slow disk walk).
type Config struct {
	// Addr is where to listen, UDP and TCP, with SO_REUSEPORT: the
	// network's gateway address, port 53. Port 0 picks a port free for
	// both protocols (tests use it; Server.Addr tells which).
	Addr netip.AddrPort

	// Lookup gives the addresses of one of the network's own names: the
	// name is lower case without its trailing dot, as asked ("web", or
	// "web.corp.example" when the client appended a search domain; Lookup
	// decides what it knows). Nil or empty means the name is not ours.
	Lookup func(name string) []netip.Addr

	// Reverse, optional, gives the names (without trailing dot) of one of
	// the network's addresses, for PTR queries. Nil or empty means the
	// address is not ours and its reverse query is forwarded.
	Reverse func(ip netip.Addr) []string

	// Domain, optional, is the network's own domain (for example
	// "berth.internal"): names at or under it are never forwarded, and
	// those Lookup does not know get NXDOMAIN.
	Domain string

	// Upstreams gives the servers a query from client is forwarded to,
	// tried in order. Nil or empty: such queries get REFUSED, which tells
	// a stub resolver at once to try its next server.
	Upstreams func(client netip.Addr) []netip.AddrPort

	timeout     time.Duration // per upstream try; 0 = defaultTimeout
	maxForwards int           // 0 = defaultMaxForwards
	maxConns    int           // 0 = defaultMaxConns
}

// Server is a running resolver. Close stops it.
type Server struct {
	cfg    Config
	addr   netip.AddrPort
	udp    net.PacketConn
	tcp    net.Listener
	domain string // cfg.Domain, lower case, without trailing dot

	forwards chan struct{} // a slot per forwarded UDP query in flight
	conns    chan struct{} // a slot per open TCP connection

	wg        sync.WaitGroup // readers, forwards and connections
	mu        sync.Mutex
	closing   bool
	open      map[net.Conn]struct{}
	closeOnce sync.Once
}

// Serve binds cfg.Addr over UDP and TCP, with SO_REUSEADDR and
// SO_REUSEPORT so that other owners of the network's instances bind it too,
// and answers in goroutines of its own until Close.
func Serve(cfg Config) (*Server, error) {
	if !cfg.Addr.IsValid() {
		return nil, errors.New("dns: no address to listen on")
	}
	if cfg.timeout == 0 {
		cfg.timeout = defaultTimeout
	}
	if cfg.maxForwards == 0 {
		cfg.maxForwards = defaultMaxForwards
	}
	if cfg.maxConns == 0 {
		cfg.maxConns = defaultMaxConns
	}
	udp, tcp, err := listen(cfg.Addr)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		addr:     netip.AddrPortFrom(cfg.Addr.Addr(), uint16(udp.LocalAddr().(*net.UDPAddr).Port)),
		udp:      udp,
		tcp:      tcp,
		domain:   normalize(cfg.Domain),
		forwards: make(chan struct{}, cfg.maxForwards),
		conns:    make(chan struct{}, cfg.maxConns),
		open:     make(map[net.Conn]struct{}),
	}
	s.wg.Add(2)
	go s.readUDP()
	go s.acceptTCP()
	return s, nil
}

// listen binds addr over UDP and TCP. With port 0, the TCP socket takes
// the port the UDP one got, and a port already taken over TCP is given
// back and another one tried.
func listen(addr netip.AddrPort) (net.PacketConn, net.Listener, error) {
	lc := net.ListenConfig{Control: reusePort}
	ctx := context.Background()
	for try := 0; ; try++ {
		udp, err := lc.ListenPacket(ctx, "udp", addr.String())
		if err != nil {
			return nil, nil, fmt.Errorf("dns: listen on udp %v: %w", addr, unwrapOp(err))
		}
		at := netip.AddrPortFrom(addr.Addr(), uint16(udp.LocalAddr().(*net.UDPAddr).Port))
		tcp, err := lc.Listen(ctx, "tcp", at.String())
		if err == nil {
			return udp, tcp, nil
		}
		udp.Close()
		if addr.Port() != 0 || try == 10 {
			return nil, nil, fmt.Errorf("dns: listen on tcp %v: %w", at, unwrapOp(err))
		}
	}
}

// unwrapOp drops the net.OpError's own text ("listen udp 1.2.3.4:53:"),
// which would say the address a second time.
func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// Addr is the address the server listens on, UDP and TCP.
func (s *Server) Addr() netip.AddrPort { return s.addr }

// Close stops reading queries, waits for the answers in flight (a
// forwarded query waits at most for its upstreams' timeouts), then closes
// both sockets. Queries the kernel had queued on this server's UDP socket
// are lost; clients ask again and reach the other owners' sockets.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		for c := range s.open {
			// An idle connection stops at once; one answering a query
			// finishes it first.
			c.SetReadDeadline(time.Now())
		}
		s.mu.Unlock()
		s.udp.SetReadDeadline(time.Now())
		err = s.tcp.Close()
		s.wg.Wait()
		if uerr := s.udp.Close(); err == nil {
			err = uerr
		}
	})
	return err
}

// idleWait sets c's deadline for the next query, or says the server is
// closing. Under the lock, so that Close's own deadline is not undone.
func (s *Server) idleWait(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	c.SetReadDeadline(time.Now().Add(tcpIdle))
	return true
}

func (s *Server) stopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// readUDP answers the network's own names on the spot and hands queries
// to forward to goroutines, as many as there are free slots.
func (s *Server) readUDP() {
	defer s.wg.Done()
	buf := make([]byte, maxMsgSize)
	for {
		n, from, err := s.udp.ReadFrom(buf)
		if err != nil {
			if s.stopping() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // a transient error (ICMP noise): keep serving
		}
		client := from.(*net.UDPAddr).AddrPort().Addr().Unmap()
		q, reply := s.handle(buf[:n])
		if q == nil {
			continue
		}
		if reply == nil {
			select {
			case s.forwards <- struct{}{}:
			default:
				reply = failure(q, dnsmessage.RCodeServerFailure)
			}
		}
		if reply != nil {
			s.writeUDP(pack(reply, q, false), from)
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.forwards }()
			s.writeUDP(s.forward(q, client, false), from)
		}()
	}
}

func (s *Server) writeUDP(b []byte, to net.Addr) {
	if b != nil {
		s.udp.WriteTo(b, to)
	}
}

// acceptTCP serves each connection in a goroutine, up to maxConns at once;
// a connection beyond that is closed unanswered.
func (s *Server) acceptTCP() {
	defer s.wg.Done()
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			if s.stopping() || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		select {
		case s.conns <- struct{}{}:
		default:
			c.Close()
			continue
		}
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			c.Close()
			<-s.conns
			return
		}
		s.open[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() { <-s.conns }()
			defer func() {
				s.mu.Lock()
				delete(s.open, c)
				s.mu.Unlock()
				c.Close()
			}()
			s.serveConn(c)
		}()
	}
}

// serveConn answers the queries of one TCP connection in turn until the
// client closes it, stays idle too long, sends garbage or Close is called.
func (s *Server) serveConn(c net.Conn) {
	client := netip.Addr{}
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		client = ta.AddrPort().Addr().Unmap()
	}
	for s.idleWait(c) {
		b, err := readMsg(c)
		if err != nil {
			return
		}
		q, reply := s.handle(b)
		if q == nil {
			return
		}
		var out []byte
		if reply != nil {
			out = pack(reply, q, true)
		} else {
			out = s.forward(q, client, true)
		}
		if out == nil {
			return
		}
		c.SetWriteDeadline(time.Now().Add(tcpIdle))
		if writeMsg(c, out) != nil {
			return
		}
	}
}
