package portmap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
)

// Proxy holds the host ports of an instance's mappings and relays what
// reaches them to the instance. Listen claims the ports (FromFiles takes
// them over from another process), Serve starts relaying, Close ends
// everything and frees the ports:
//
//	p, ms, err := portmap.Listen(ms) // a taken port fails the start here
//	...
//	p.Serve(func(m portmap.Mapping) netip.AddrPort { return netip.AddrPortFrom(instanceIP, m.Port) })
//	defer p.Close()
type Proxy struct {
	socks []socket

	// udpIdle ends a UDP flow that has carried nothing either way for
	// that long; maxFlows bounds the UDP flows of each host port. Tests
	// change them.
	udpIdle  time.Duration
	maxFlows int

	ctx    context.Context // ends with Close, and dials with it
	cancel context.CancelFunc

	mu      sync.Mutex
	closed  bool
	serving bool
	live    map[io.Closer]struct{} // relayed connections, closed by Close
	wg      sync.WaitGroup         // every goroutine Serve started
}

// socket is one mapping's host socket: a TCP listener or a UDP socket.
type socket struct {
	m   Mapping
	ln  *net.TCPListener
	udp *net.UDPConn
}

// local is the address the socket is bound to.
func (s socket) local() netip.AddrPort {
	if s.ln != nil {
		return addrPort(s.ln.Addr())
	}
	return addrPort(s.udp.LocalAddr())
}

func (s socket) close() error {
	if s.ln != nil {
		return s.ln.Close()
	}
	return s.udp.Close()
}

const (
	// udpIdle is how long a UDP flow (one client address) lives with no
	// datagram either way: between Linux conntrack's 30 s for an
	// unreplied flow and its 120 s for an assured one, as Docker's proxy
	// is (90 s), so a request and its slow answer are not cut apart.
	udpIdle = 60 * time.Second
	// maxFlows bounds the UDP clients relayed at once on one host port,
	// since each holds a socket and a datagram buffer; a datagram that
	// would start one more is dropped.
	maxFlows = 1024
	// dialTimeout bounds connecting to the instance for one client.
	dialTimeout = 10 * time.Second
	// dialTries is how many targets a TCP client's relay tries, each
	// for dialTimeout/dialTries, before it lets the client go.
	dialTries = 3
)

func newProxy(socks []socket) *Proxy {
	ctx, cancel := context.WithCancel(context.Background())
	return &Proxy{
		socks:    socks,
		udpIdle:  udpIdle,
		maxFlows: maxFlows,
		ctx:      ctx,
		cancel:   cancel,
		live:     make(map[io.Closer]struct{}),
	}
}

// Listen claims every mapping's host port now: a TCP listener or a UDP
// socket on HostIP, or on 0.0.0.0 when HostIP is unset. HostPort 0 takes
// a port from the kernel's ephemeral range; a range takes its first free
// port. A port already in use is refused with an error wrapping
// errdefs.ErrConflict that names it ("host port 0.0.0.0:8080/tcp is
// already in use"), so `run` fails at start rather than later.
//
// It returns the mappings with their host ports resolved (HostPortEnd
// 0). On failure nothing is left bound.
//
// TCP listeners have SO_REUSEADDR (Go's net package sets it on every
// listener on Linux), so the same port binds again right after Close
// even while closed connections linger in TIME_WAIT.
func Listen(ms []Mapping) (*Proxy, []Mapping, error) {
	socks := make([]socket, 0, len(ms))
	done := make([]Mapping, 0, len(ms))
	for _, m := range ms {
		s, err := bind(m)
		if err != nil {
			for _, s := range socks {
				s.close()
			}
			return nil, nil, err
		}
		socks = append(socks, s)
		done = append(done, s.m)
	}
	return newProxy(socks), done, nil
}

// bind claims m's host port, trying each port of a range in turn.
func bind(m Mapping) (socket, error) {
	if err := check(m); err != nil {
		return socket{}, err
	}
	if m.HostPortEnd == 0 {
		return bindPort(m)
	}
	for p := int(m.HostPort); p <= int(m.HostPortEnd); p++ {
		one := m
		one.HostPort, one.HostPortEnd = uint16(p), 0
		s, err := bindPort(one)
		if errors.Is(err, errdefs.ErrConflict) {
			continue
		}
		return s, err
	}
	return socket{}, fmt.Errorf("host ports %s are all in use: %w", m.hostAddr(), errdefs.ErrConflict)
}

// bindPort claims m's one host port (or an ephemeral one for 0) and
// records the port it got.
func bindPort(m Mapping) (socket, error) {
	ip := m.bindIP()
	addr := netip.AddrPortFrom(ip, m.HostPort)
	s := socket{m: m}
	var err error
	if m.Proto == "tcp" {
		s.ln, err = net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(addr))
	} else {
		s.udp, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr))
	}
	var errno syscall.Errno
	switch {
	case err == nil:
		s.m.HostPort = s.local().Port()
		return s, nil
	case errors.Is(err, syscall.EADDRINUSE):
		return socket{}, fmt.Errorf("host port %s is already in use: %w", m.hostAddr(), errdefs.ErrConflict)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return socket{}, fmt.Errorf("host port %s: %s is not an address of this host: %w", m.hostAddr(), ip, errdefs.ErrInvalid)
	case errors.As(err, &errno):
		return socket{}, fmt.Errorf("host port %s: %w", m.hostAddr(), errno)
	default:
		return socket{}, fmt.Errorf("host port %s: %w", m.hostAddr(), err)
	}
}

// bindIP is the address m's host socket binds: HostIP, or 0.0.0.0.
func (m Mapping) bindIP() netip.Addr {
	if m.HostIP.IsValid() {
		return m.HostIP
	}
	return netip.IPv4Unspecified()
}

// check refuses a mapping Parse would not have made.
func check(m Mapping) error {
	switch {
	case m.Proto != "tcp" && m.Proto != "udp":
		return fmt.Errorf("mapping %s: protocol %q is not tcp or udp: %w", m, m.Proto, errdefs.ErrInvalid)
	case m.Port == 0:
		return fmt.Errorf("mapping %s: container port 0 is out of range 1-65535: %w", m, errdefs.ErrInvalid)
	case m.HostIP.IsValid() && !m.HostIP.Is4():
		return fmt.Errorf("mapping %s: host IP %s is IPv6; berth publishes on IPv4 only: %w", m, m.HostIP, errdefs.ErrNotSupported)
	case m.HostPortEnd != 0 && (m.HostPort == 0 || m.HostPortEnd < m.HostPort):
		return fmt.Errorf("mapping %s: host port range %d-%d is not a range: %w", m, m.HostPort, m.HostPortEnd, errdefs.ErrInvalid)
	}
	return nil
}

// Files returns duplicates of the host sockets, one per mapping in
// Listen's order, to hand to another process (berth's detached monitor)
// which rebuilds the proxy with FromFiles. The caller closes them; the
// Proxy keeps its own sockets until Close.
func (p *Proxy) Files() ([]*os.File, error) {
	fs := make([]*os.File, 0, len(p.socks))
	for _, s := range p.socks {
		var f *os.File
		var err error
		if s.ln != nil {
			f, err = s.ln.File()
		} else {
			f, err = s.udp.File()
		}
		if err != nil {
			for _, f := range fs {
				f.Close()
			}
			return nil, fmt.Errorf("host port %s: %w", s.m.hostAddr(), err)
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// FromFiles rebuilds a Proxy from sockets another process bound: ms are
// the mappings Listen returned (host ports resolved) and fs the files
// Files gave for them, in the same order. Each file must be a socket of
// its mapping's protocol bound to its host address, or FromFiles fails
// with errdefs.ErrInvalid. FromFiles duplicates the sockets: the caller
// still closes fs.
func FromFiles(ms []Mapping, fs []*os.File) (*Proxy, error) {
	if len(ms) != len(fs) {
		return nil, fmt.Errorf("%d mappings but %d socket files: %w", len(ms), len(fs), errdefs.ErrInvalid)
	}
	socks := make([]socket, 0, len(ms))
	fail := func(err error) (*Proxy, error) {
		for _, s := range socks {
			s.close()
		}
		return nil, err
	}
	for i, m := range ms {
		s, err := adopt(m, fs[i])
		if err != nil {
			return fail(err)
		}
		socks = append(socks, s)
	}
	return newProxy(socks), nil
}

// adopt makes m's socket from f, checking it is what m says.
func adopt(m Mapping, f *os.File) (socket, error) {
	if err := check(m); err != nil {
		return socket{}, err
	}
	if m.HostPort == 0 || m.HostPortEnd != 0 {
		return socket{}, fmt.Errorf("mapping %s: host port not resolved by Listen: %w", m, errdefs.ErrInvalid)
	}
	s := socket{m: m}
	if m.Proto == "tcp" {
		if ln, err := net.FileListener(f); err == nil {
			if s.ln, _ = ln.(*net.TCPListener); s.ln == nil {
				ln.Close()
			}
		}
	} else if pc, err := net.FilePacketConn(f); err == nil {
		if s.udp, _ = pc.(*net.UDPConn); s.udp == nil {
			pc.Close()
		}
	}
	if s.ln == nil && s.udp == nil {
		return socket{}, fmt.Errorf("host port %s: file %s is not a %s socket: %w", m.hostAddr(), f.Name(), m.Proto, errdefs.ErrInvalid)
	}
	if got := s.local(); got != netip.AddrPortFrom(m.bindIP(), m.HostPort) {
		s.close()
		return socket{}, fmt.Errorf("host port %s: file %s is bound to %s instead: %w", m.hostAddr(), f.Name(), got, errdefs.ErrInvalid)
	}
	return s, nil
}

// addrPort is a TCP or UDP address as an IPv4 netip.AddrPort when it is
// one.
func addrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Close stops listening, ends every relay, waits for Serve's goroutines
// and frees the host ports. Calling it again does nothing.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	live := p.live
	p.live = nil
	p.mu.Unlock()

	p.cancel()
	var first error
	for _, s := range p.socks {
		if err := s.close(); err != nil && first == nil {
			first = fmt.Errorf("host port %s: %w", s.m.hostAddr(), err)
		}
	}
	for c := range live {
		c.Close()
	}
	p.wg.Wait()
	return first
}

// hold registers c for Close to close; false (and c closed) when the
// proxy is closed already.
func (p *Proxy) hold(c io.Closer) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.live[c] = struct{}{}
	return true
}

// release closes c and forgets it.
func (p *Proxy) release(c io.Closer) {
	p.mu.Lock()
	delete(p.live, c)
	p.mu.Unlock()
	c.Close()
}

// spawn runs fn in a goroutine Close waits for; false when the proxy is
// closed already.
func (p *Proxy) spawn(fn func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		fn()
	}()
	return true
}
