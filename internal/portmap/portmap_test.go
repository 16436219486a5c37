package portmap

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
)

var lo = netip.MustParseAddr("127.0.0.1")

func TestParse(t *testing.T) {
	tcp := func(hostPort, hostEnd, port uint16) Mapping {
		return Mapping{Proto: "tcp", HostPort: hostPort, HostPortEnd: hostEnd, Port: port}
	}
	onLo := func(m Mapping) Mapping { m.HostIP = lo; return m }
	udp := func(m Mapping) Mapping { m.Proto = "udp"; return m }
	for _, tc := range []struct {
		spec string
		want []Mapping
	}{
		{"80", []Mapping{tcp(0, 0, 80)}},
		{"80/tcp", []Mapping{tcp(0, 0, 80)}},
		{"80/", []Mapping{tcp(0, 0, 80)}},
		{"53/udp", []Mapping{udp(tcp(0, 0, 53))}},
		{"53/UDP", []Mapping{udp(tcp(0, 0, 53))}},
		{"65535", []Mapping{tcp(0, 0, 65535)}},
		{"8080:80", []Mapping{tcp(8080, 0, 80)}},
		{"0:80", []Mapping{tcp(0, 0, 80)}},
		{"127.0.0.1:8080:80/udp", []Mapping{onLo(udp(tcp(8080, 0, 80)))}},
		{"127.0.0.1::80", []Mapping{onLo(tcp(0, 0, 80))}},
		{"[127.0.0.1]::80", []Mapping{onLo(tcp(0, 0, 80))}},
		{"0.0.0.0:8080:80", []Mapping{{Proto: "tcp", HostIP: netip.IPv4Unspecified(), HostPort: 8080, Port: 80}}},
		{"80-82", []Mapping{tcp(0, 0, 80), tcp(0, 0, 81), tcp(0, 0, 82)}},
		{"8000-8002:80-82/udp", []Mapping{udp(tcp(8000, 0, 80)), udp(tcp(8001, 0, 81)), udp(tcp(8002, 0, 82))}},
		{"127.0.0.1:8000-8002:80", []Mapping{onLo(tcp(8000, 8002, 80))}},
		{"8000-8000:80", []Mapping{tcp(8000, 0, 80)}},
		{"80-80", []Mapping{tcp(0, 0, 80)}},
	} {
		got, err := Parse(tc.spec)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.spec, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Parse(%q) = %v, want %v", tc.spec, got, tc.want)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct {
		spec  string
		class error
		names string // the value the error must name
	}{
		{"", errdefs.ErrInvalid, "no container port"},
		{"/tcp", errdefs.ErrInvalid, "no container port"},
		{"8080:", errdefs.ErrInvalid, "no container port"},
		{"80/icmp", errdefs.ErrInvalid, `protocol "icmp"`},
		{"80/tcp/udp", errdefs.ErrInvalid, `protocol "tcp/udp"`},
		{"80/sctp", errdefs.ErrNotSupported, "sctp"},
		{"0", errdefs.ErrInvalid, `container port "0"`},
		{"65536", errdefs.ErrInvalid, `container port "65536"`},
		{"99999999999999999999", errdefs.ErrInvalid, `container port "99999999999999999999"`},
		{"http", errdefs.ErrInvalid, `container port "http"`},
		{"+80", errdefs.ErrInvalid, `container port "+80"`},
		{"80-", errdefs.ErrInvalid, `container port "80-"`},
		{"-80", errdefs.ErrInvalid, `container port "-80"`},
		{"80-81-82", errdefs.ErrInvalid, `container port "80-81-82"`},
		{"82-80", errdefs.ErrInvalid, `container port range "82-80"`},
		{"0-2", errdefs.ErrInvalid, `container port "0-2"`},
		{"x:80", errdefs.ErrInvalid, `host port "x"`},
		{"70000:80", errdefs.ErrInvalid, `host port "70000"`},
		{"0-2:80", errdefs.ErrInvalid, `host port "0-2"`},
		{"8002-8000:80", errdefs.ErrInvalid, `host port range "8002-8000"`},
		{"127.0.0.1:80", errdefs.ErrInvalid, `host port "127.0.0.1"`},
		{"8000:80-82", errdefs.ErrInvalid, "8000 and container ports 80-82"},
		{"8000-8001:80-82", errdefs.ErrInvalid, "8000-8001 and container ports 80-82"},
		{"300.1.1.1:8080:80", errdefs.ErrInvalid, `host IP "300.1.1.1"`},
		{"localhost:8080:80", errdefs.ErrInvalid, `host IP "localhost"`},
		{"[::1]:80", errdefs.ErrInvalid, `host IP "[:"`},
		{"[::1]:8080:80", errdefs.ErrNotSupported, "host IP [::1] is IPv6"},
		{"::1:8080:80", errdefs.ErrNotSupported, "host IP ::1 is IPv6"},
		{"[::ffff:127.0.0.1]::80", errdefs.ErrNotSupported, "host IP [::ffff:127.0.0.1] is IPv6"},
	} {
		ms, err := Parse(tc.spec)
		if err == nil {
			t.Errorf("Parse(%q) = %v, want an error", tc.spec, ms)
			continue
		}
		checkError(t, fmt.Sprintf("Parse(%q)", tc.spec), err, tc.class, fmt.Sprintf("publish %q", tc.spec), tc.names)
	}
}

// checkError asserts err is of class, on one line, and names each of
// names.
func checkError(t *testing.T, call string, err, class error, names ...string) {
	t.Helper()
	if !errors.Is(err, class) {
		t.Errorf("%s: %v, not of class %v", call, err, class)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("%s: error on more than one line: %q", call, err)
	}
	for _, n := range names {
		if !strings.Contains(err.Error(), n) {
			t.Errorf("%s: %q does not name %s", call, err, n)
		}
	}
}

func TestParseExposed(t *testing.T) {
	got, err := ParseExposed(map[string]struct{}{
		"8000-8001/tcp": {}, "53/udp": {}, "80/tcp": {}, "53/tcp": {}, "80": {}, "8001/TCP": {},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []Mapping{
		{Proto: "tcp", Port: 53}, {Proto: "udp", Port: 53}, {Proto: "tcp", Port: 80},
		{Proto: "tcp", Port: 8000}, {Proto: "tcp", Port: 8001},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseExposed = %v, want %v", got, want)
	}
	if got, err := ParseExposed(nil); err != nil || len(got) != 0 {
		t.Errorf("ParseExposed(nil) = %v, %v", got, err)
	}
	for _, tc := range []struct {
		key   string
		class error
		names string
	}{
		{"0/tcp", errdefs.ErrInvalid, `port "0"`},
		{"http/tcp", errdefs.ErrInvalid, `port "http"`},
		{"90-80/tcp", errdefs.ErrInvalid, `"90-80"`},
		{"/tcp", errdefs.ErrInvalid, "no port"},
		{"80/icmp", errdefs.ErrInvalid, `"icmp"`},
		{"80/sctp", errdefs.ErrNotSupported, "sctp"},
	} {
		ms, err := ParseExposed(map[string]struct{}{tc.key: {}, "80/tcp": {}})
		if err == nil {
			t.Errorf("ParseExposed(%q) = %v, want an error", tc.key, ms)
			continue
		}
		checkError(t, fmt.Sprintf("ParseExposed(%q)", tc.key), err, tc.class, fmt.Sprintf("exposed port %q", tc.key), tc.names)
	}
}

func TestMappingString(t *testing.T) {
	for _, tc := range []struct {
		m    Mapping
		want string
	}{
		{Mapping{Proto: "tcp", HostPort: 32768, Port: 80}, "80/tcp -> 0.0.0.0:32768"},
		{Mapping{Proto: "udp", HostIP: lo, HostPort: 5353, Port: 53}, "53/udp -> 127.0.0.1:5353"},
		{Mapping{Proto: "tcp", HostPort: 8000, HostPortEnd: 8002, Port: 80}, "80/tcp -> 0.0.0.0:8000-8002"},
	} {
		if got := tc.m.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}

// tcpEcho serves on 127.0.0.1: it echoes what it reads, and at the end
// of the client's stream answers "bye" and closes.
func tcpEcho(t *testing.T) netip.AddrPort {
	return tcpServer(t, func(c net.Conn) {
		if _, err := io.Copy(c, c); err == nil {
			c.Write([]byte("bye"))
		}
	})
}

// tcpServer serves on 127.0.0.1 until the test ends, each connection in a
// goroutine of its own with handle, which need not close it.
func tcpServer(t *testing.T, handle func(net.Conn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// udpEcho answers each datagram on 127.0.0.1 with "echo:" and the
// datagram, and counts the datagrams and their sources.
type udpEcho struct {
	addr    netip.AddrPort
	mu      sync.Mutex
	count   int
	sources map[netip.AddrPort]bool
}

func newUDPEcho(t *testing.T) *udpEcho {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(lo, 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	e := &udpEcho{addr: c.LocalAddr().(*net.UDPAddr).AddrPort(), sources: map[netip.AddrPort]bool{}}
	go func() {
		buf := make([]byte, maxDatagram)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			e.mu.Lock()
			e.count++
			e.sources[from] = true
			e.mu.Unlock()
			c.WriteToUDPAddrPort(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	return e
}

// seen is how many datagrams and distinct sources e has had.
func (e *udpEcho) seen() (count, sources int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.count, len(e.sources)
}

// to is a Serve target that sends every mapping to addr.
func to(addr netip.AddrPort) func(Mapping) netip.AddrPort {
	return func(Mapping) netip.AddrPort { return addr }
}

// freePort is a port of 127.0.0.1 nothing held a moment ago.
func freePort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// listen is Listen that fails the test on error and closes at its end.
func listen(t *testing.T, ms ...Mapping) (*Proxy, []Mapping) {
	t.Helper()
	p, got, err := Listen(ms)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, got
}

// talkTCP checks a relayed connection to port on 127.0.0.1 carries data
// both ways, and that the client's half-close reaches the server, which
// still answers.
func talkTCP(t *testing.T, port uint16) {
	t.Helper()
	c, err := net.DialTCP("tcp4", nil, net.TCPAddrFromAddrPort(netip.AddrPortFrom(lo, port)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second)) // a hang fails rather than blocks
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo through port %d: %q, %v", port, buf, err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(c)
	if err != nil || string(rest) != "bye" {
		t.Fatalf("after half-close through port %d: %q, %v; want the server's \"bye\"", port, rest, err)
	}
}

// talkUDP sends msg from c and returns the answer.
func talkUDP(t *testing.T, c *net.UDPConn, msg string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second)) // a lost datagram fails rather than blocks
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("answer to %q: %v", msg, err)
	}
	return string(buf[:n])
}

// udpClient is a socket on 127.0.0.1 connected to port.
func udpClient(t *testing.T, port uint16) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(lo, port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestProxyTCP(t *testing.T) {
	fixed := freePort(t)
	p, got := listen(t, Mapping{Proto: "tcp", HostIP: lo, Port: 80}, Mapping{Proto: "tcp", HostIP: lo, HostPort: fixed, Port: 81})
	if got[0].HostPort == 0 || got[1].HostPort != fixed || got[0].Port != 80 || got[1].Port != 81 {
		t.Fatalf("resolved mappings %v, want a picked port and %d", got, fixed)
	}
	var mu sync.Mutex
	var asked []Mapping
	echo := tcpEcho(t)
	p.Serve(func(m Mapping) netip.AddrPort {
		mu.Lock()
		asked = append(asked, m)
		mu.Unlock()
		return echo
	})
	for _, m := range got {
		talkTCP(t, m.HostPort)
	}
	talkTCP(t, got[0].HostPort) // a second connection on the same port
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if len(asked) != 3 || asked[0] != got[0] || asked[1] != got[1] {
		t.Errorf("target asked for %v, want each resolved mapping per connection", asked)
	}
}

// udpProxy serves a UDP host port on 127.0.0.1, tuned by tune, to a
// UDP echo server, and gives two clients of that port.
func udpProxy(t *testing.T, tune func(*Proxy)) (p *Proxy, echo *udpEcho, a, b *net.UDPConn) {
	t.Helper()
	echo = newUDPEcho(t)
	p, got := listen(t, Mapping{Proto: "udp", HostIP: lo, Port: 53})
	tune(p)
	p.Serve(to(echo.addr))
	return p, echo, udpClient(t, got[0].HostPort), udpClient(t, got[0].HostPort)
}

func TestProxyUDP(t *testing.T) {
	_, echo, a, b := udpProxy(t, func(*Proxy) {})
	for _, step := range []struct {
		c   *net.UDPConn
		msg string
	}{{a, "a1"}, {b, "b1"}, {a, "a2"}, {b, "b2"}} {
		if answer := talkUDP(t, step.c, step.msg); answer != "echo:"+step.msg {
			t.Errorf("sent %q, got %q back", step.msg, answer)
		}
	}
	if count, sources := echo.seen(); count != 4 || sources != 2 {
		t.Errorf("server saw %d datagrams from %d sources, want 4 from 2 (a flow per client)", count, sources)
	}
}

func TestUDPFlowsBounded(t *testing.T) {
	_, echo, a, b := udpProxy(t, func(p *Proxy) { p.maxFlows = 1 })
	talkUDP(t, a, "a1")
	if _, err := b.Write([]byte("b1")); err != nil {
		t.Fatal(err)
	}
	// The relay reads the host socket in order: once a2 is answered, b1
	// has been dealt with.
	talkUDP(t, a, "a2")
	if count, sources := echo.seen(); count != 2 || sources != 1 {
		t.Errorf("server saw %d datagrams from %d sources, want 2 from 1 (b's flow over the bound)", count, sources)
	}
}

func TestUDPIdleFlowEnds(t *testing.T) {
	p, _, a, b := udpProxy(t, func(p *Proxy) { p.maxFlows, p.udpIdle = 1, 20*time.Millisecond })
	talkUDP(t, a, "a1")
	for deadline := time.Now().Add(5 * time.Second); p.liveCount() > 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("an idle UDP flow was never ended")
		}
	}
	if answer := talkUDP(t, b, "b1"); answer != "echo:b1" {
		t.Errorf("after a's flow ended, b got %q", answer)
	}
}

// liveCount is how many relayed connections and flow sockets p holds.
func (p *Proxy) liveCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.live)
}

func TestListenConflict(t *testing.T) {
	for _, proto := range []string{"tcp", "udp"} {
		t.Run(proto, func(t *testing.T) {
			taken := occupy(t, proto)
			free := freePort(t)
			p, ms, err := Listen([]Mapping{
				{Proto: proto, HostIP: lo, HostPort: free, Port: 80},
				{Proto: proto, HostIP: lo, HostPort: taken, Port: 81},
			})
			if err == nil {
				p.Close()
				t.Fatalf("Listen on a taken port = %v", ms)
			}
			want := fmt.Sprintf("host port 127.0.0.1:%d/%s is already in use", taken, proto)
			checkError(t, "Listen", err, errdefs.ErrConflict, want)
			rebind(t, proto, free) // the first mapping's port was let go
		})
	}
}

// occupy holds a port of 127.0.0.1 for proto until the test ends.
func occupy(t *testing.T, proto string) uint16 {
	t.Helper()
	if proto == "tcp" {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return uint16(ln.Addr().(*net.TCPAddr).Port)
	}
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return uint16(c.LocalAddr().(*net.UDPAddr).Port)
}

// rebind checks port on 127.0.0.1 can be bound for proto now.
func rebind(t *testing.T, proto string, port uint16) {
	t.Helper()
	p, _, err := Listen([]Mapping{{Proto: proto, HostIP: lo, HostPort: port, Port: 80}})
	if err != nil {
		t.Fatalf("port %d/%s still held: %v", port, proto, err)
	}
	p.Close()
}

func TestListenRange(t *testing.T) {
	// Find a taken port whose next one is free.
	var taken net.Listener
	for range 20 {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		if next, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port+1)); err == nil && port < 65535 {
			next.Close()
			taken = ln
			break
		}
		ln.Close()
	}
	if taken == nil {
		t.Skip("found no ephemeral port with a free next one")
	}
	defer taken.Close()
	port := uint16(taken.Addr().(*net.TCPAddr).Port)

	_, got := listen(t, Mapping{Proto: "tcp", HostIP: lo, HostPort: port, HostPortEnd: port + 1, Port: 80})
	if want := (Mapping{Proto: "tcp", HostIP: lo, HostPort: port + 1, Port: 80}); got[0] != want {
		t.Errorf("range %d-%d with %d taken resolved to %v, want %v", port, port+1, port, got[0], want)
	}
	_, _, err := Listen([]Mapping{{Proto: "tcp", HostIP: lo, HostPort: port, HostPortEnd: port + 1, Port: 80}})
	want := fmt.Sprintf("host ports 127.0.0.1:%d-%d/tcp are all in use", port, port+1)
	checkError(t, "Listen on a full range", err, errdefs.ErrConflict, want)
}

func TestListenRefusesBadMappings(t *testing.T) {
	for _, tc := range []struct {
		m     Mapping
		class error
		names string
	}{
		{Mapping{Proto: "icmp", Port: 80}, errdefs.ErrInvalid, `"icmp"`},
		{Mapping{Proto: "tcp"}, errdefs.ErrInvalid, "container port 0"},
		{Mapping{Proto: "tcp", HostIP: netip.IPv6Loopback(), Port: 80}, errdefs.ErrNotSupported, "::1"},
		{Mapping{Proto: "tcp", HostPort: 9, HostPortEnd: 8, Port: 80}, errdefs.ErrInvalid, "9-8"},
	} {
		if p, _, err := Listen([]Mapping{tc.m}); err == nil {
			p.Close()
			t.Errorf("Listen(%v) succeeded", tc.m)
		} else {
			checkError(t, fmt.Sprintf("Listen(%v)", tc.m), err, tc.class, tc.names)
		}
	}
}

func TestCloseFreesPorts(t *testing.T) {
	echo := tcpEcho(t)
	p, got := listen(t, Mapping{Proto: "tcp", HostIP: lo, Port: 80}, Mapping{Proto: "udp", HostIP: lo, Port: 53})
	p.Serve(to(echo))
	// A connection still relayed at Close is closed from the proxy's
	// side first, so it lingers in TIME_WAIT on the host port.
	c, err := net.Dial("tcp4", netip.AddrPortFrom(lo, got[0].HostPort).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2)
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(buf); err == nil {
		t.Error("the relayed connection outlived Close")
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	rebind(t, "tcp", got[0].HostPort)
	rebind(t, "udp", got[1].HostPort)
}

func TestFilesHandOver(t *testing.T) {
	echo := tcpEcho(t)
	uecho := newUDPEcho(t)
	first, ms := listen(t, Mapping{Proto: "tcp", HostIP: lo, Port: 80}, Mapping{Proto: "udp", HostIP: lo, Port: 53})
	fs, err := first.Files()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, f := range fs {
			f.Close()
		}
	}()

	if _, err := FromFiles(ms[:1], fs); err == nil {
		t.Error("FromFiles took 1 mapping for 2 files")
	} else {
		checkError(t, "FromFiles", err, errdefs.ErrInvalid, "1 mappings but 2 socket files")
	}
	swapped := []Mapping{ms[1], ms[0]}
	if _, err := FromFiles(swapped, fs); err == nil {
		t.Error("FromFiles took a TCP listener for a UDP mapping")
	} else {
		checkError(t, "FromFiles", err, errdefs.ErrInvalid, ms[1].hostAddr())
	}
	wrongPort := []Mapping{ms[0], ms[1]}
	wrongPort[0].HostPort++
	if _, err := FromFiles(wrongPort, fs); err == nil {
		t.Error("FromFiles took a socket bound to another port")
	} else {
		checkError(t, "FromFiles", err, errdefs.ErrInvalid, "bound to "+netip.AddrPortFrom(lo, ms[0].HostPort).String())
	}

	// The binding process lets go; the sockets live on in the files.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second, err := FromFiles(ms, fs)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fs {
		f.Close()
	}
	fs = nil
	second.Serve(func(m Mapping) netip.AddrPort {
		if m.Proto == "udp" {
			return uecho.addr
		}
		return echo
	})
	talkTCP(t, ms[0].HostPort)
	if answer := talkUDP(t, udpClient(t, ms[1].HostPort), "x"); answer != "echo:x" {
		t.Errorf("UDP through the handed-over socket: %q", answer)
	}
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	rebind(t, "tcp", ms[0].HostPort)
	rebind(t, "udp", ms[1].HostPort)
}
