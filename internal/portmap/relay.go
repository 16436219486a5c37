package portmap

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// maxDatagram is the largest UDP payload relayed; bigger ones cannot be
// sent over IPv4.
const maxDatagram = 65535

// Serve starts relaying, in goroutines of its own, and returns at once:
// each TCP connection accepted on a mapping's host port is joined to a
// connection to target(m), copied both ways, and a half-close on either
// side (CloseWrite) passes to the other, so a client that shuts down its
// sending side still gets its answer. For UDP each client address is a
// flow with a socket of its own to target(m), whose answers go back to
// that client; a flow ends after 60 s with no datagram either way, and
// at most 1024 live at once on a host port (a datagram that would start
// another is dropped). target is called once per connection or
// flow, with the mapping's host port resolved, and an invalid address it
// returns refuses that client. Relaying lasts until Close; Serve called
// again, or after Close, does nothing.
func (p *Proxy) Serve(target func(m Mapping) netip.AddrPort) {
	p.mu.Lock()
	again := p.serving
	p.serving = true
	p.mu.Unlock()
	if again {
		return
	}
	for _, s := range p.socks {
		if s.ln != nil {
			p.spawn(func() { p.acceptTCP(s, target) })
		} else {
			r := &udpRelay{p: p, s: s, target: target, epoch: time.Now(), flows: make(map[netip.AddrPort]*flow)}
			p.spawn(r.run)
		}
	}
}

// pause waits after a failed accept or read that is not the socket's
// closing (out of descriptors, say) so the loop does not spin, doubling
// up to a second as net/http does; false when the proxy closes meanwhile.
func (p *Proxy) pause(d *time.Duration) bool {
	*d = min(max(2**d, 5*time.Millisecond), time.Second)
	t := time.NewTimer(*d)
	defer t.Stop()
	select {
	case <-p.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// acceptTCP relays every connection s's listener accepts until it closes.
func (p *Proxy) acceptTCP(s socket, target func(Mapping) netip.AddrPort) {
	var wait time.Duration
	for {
		c, err := s.ln.AcceptTCP()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			if !p.pause(&wait) {
				return
			}
			continue
		}
		wait = 0
		if !p.hold(c) || !p.spawn(func() { p.relayTCP(c, func() netip.AddrPort { return target(s.m) }) }) {
			return
		}
	}
}

// relayTCP joins client to a new connection to the instance next names,
// and returns when both directions are done. When the instance cannot be
// reached, next is asked again (a balanced service's next replica) a few
// times, each dial bounded, before the client is let go.
func (p *Proxy) relayTCP(client *net.TCPConn, next func() netip.AddrPort) {
	defer p.release(client)
	var c net.Conn
	for try := 0; try < dialTries && c == nil; try++ {
		to := next()
		if !to.IsValid() {
			return
		}
		d := net.Dialer{Timeout: dialTimeout / dialTries}
		conn, err := d.DialContext(p.ctx, "tcp", to.String())
		if err == nil {
			c = conn
		} else if p.ctx.Err() != nil {
			return
		}
	}
	if c == nil || !p.hold(c) {
		return
	}
	defer p.release(c)
	server := c.(*net.TCPConn)
	back := make(chan struct{})
	go func() {
		defer close(back)
		pipe(client, server)
	}()
	pipe(server, client)
	<-back
}

// pipe copies src to dst. At src's end of stream it shuts dst's sending
// side, so dst's peer sees the end too and may still answer; on an error
// (a reset, or Close) it closes both so the other direction ends as well.
func pipe(dst, src *net.TCPConn) {
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		src.Close()
		return
	}
	dst.CloseWrite()
}

// udpRelay relays one UDP host port: a flow per client address.
type udpRelay struct {
	p      *Proxy
	s      socket
	target func(Mapping) netip.AddrPort
	epoch  time.Time // flows' activity is counted from it, on the monotonic clock

	mu    sync.Mutex
	flows map[netip.AddrPort]*flow
}

// flow is one client's socket to the instance.
type flow struct {
	conn *net.UDPConn
	last atomic.Int64 // time since the relay's epoch of the last datagram either way
}

// run reads the host socket until it closes, sending each datagram on
// its client's flow.
func (r *udpRelay) run() {
	buf := make([]byte, maxDatagram)
	var wait time.Duration
	for {
		n, client, err := r.s.udp.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			if !r.p.pause(&wait) {
				return
			}
			continue
		}
		wait = 0
		r.mu.Lock()
		f, count := r.flows[client], len(r.flows)
		r.mu.Unlock()
		if f == nil {
			if count >= r.p.maxFlows {
				continue
			}
			if f = r.open(client); f == nil {
				continue
			}
		}
		f.last.Store(int64(time.Since(r.epoch)))
		f.conn.Write(buf[:n])
	}
}

// open starts client's flow; nil when the instance cannot be reached or
// the proxy is closing.
func (r *udpRelay) open(client netip.AddrPort) *flow {
	to := r.target(r.s.m)
	if !to.IsValid() {
		return nil
	}
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
	if err != nil || !r.p.hold(conn) {
		return nil
	}
	f := &flow{conn: conn}
	f.last.Store(int64(time.Since(r.epoch)))
	r.mu.Lock()
	r.flows[client] = f
	r.mu.Unlock()
	if !r.p.spawn(func() { r.answer(client, f) }) {
		r.end(client, f)
		return nil
	}
	return f
}

// answer sends the instance's datagrams on f back to client until the
// flow has been idle for udpIdle, or fails, or the proxy closes.
func (r *udpRelay) answer(client netip.AddrPort, f *flow) {
	defer r.end(client, f)
	buf := make([]byte, maxDatagram)
	for {
		idleAt := r.epoch.Add(time.Duration(f.last.Load()) + r.p.udpIdle)
		f.conn.SetReadDeadline(idleAt)
		n, err := f.conn.Read(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			if time.Since(r.epoch) < time.Duration(f.last.Load())+r.p.udpIdle {
				continue // a datagram went out meanwhile
			}
			return
		}
		if err != nil {
			return
		}
		f.last.Store(int64(time.Since(r.epoch)))
		r.s.udp.WriteToUDPAddrPort(buf[:n], client)
	}
}

// end forgets client's flow and closes its socket.
func (r *udpRelay) end(client netip.AddrPort, f *flow) {
	r.mu.Lock()
	if r.flows[client] == f {
		delete(r.flows, client)
	}
	r.mu.Unlock()
	r.p.release(f.conn)
}
