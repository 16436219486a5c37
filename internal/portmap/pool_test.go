package portmap

import (
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

func addrs(ports ...uint16) []netip.AddrPort {
	var out []netip.AddrPort
	for _, p := range ports {
		out = append(out, netip.AddrPortFrom(lo, p))
	}
	return out
}

func TestPoolRoundRobin(t *testing.T) {
	var p Pool
	m := Mapping{Proto: "tcp", HostPort: 8080, Port: 80}
	if got := p.Next(m); got.IsValid() {
		t.Fatalf("the zero Pool gave %s, want none", got)
	}
	three := addrs(1, 2, 3)
	p.Set(three)
	three[0] = netip.AddrPortFrom(lo, 9) // Set keeps its own copy
	seen := map[netip.AddrPort]int{}
	for range 9 {
		seen[p.Next(m)]++
	}
	if want := map[netip.AddrPort]int{addrs(1)[0]: 3, addrs(2)[0]: 3, addrs(3)[0]: 3}; !maps.Equal(seen, want) {
		t.Errorf("9 turns over three backends: %v, want 3 each", seen)
	}
	p.Set(addrs(2, 3))
	seen = map[netip.AddrPort]int{}
	for range 4 {
		seen[p.Next(m)]++
	}
	if want := map[netip.AddrPort]int{addrs(2)[0]: 2, addrs(3)[0]: 2}; !maps.Equal(seen, want) {
		t.Errorf("4 turns over two backends: %v, want 2 each", seen)
	}
	p.Set(nil)
	if got := p.Next(m); got.IsValid() {
		t.Errorf("an emptied Pool gave %s, want none", got)
	}
}

func TestPoolConcurrent(t *testing.T) {
	var p Pool
	sets := [][]netip.AddrPort{addrs(1), addrs(1, 2), addrs(1, 2, 3), nil}
	member := addrs(1, 2, 3)
	var wg sync.WaitGroup
	bad := make(chan netip.AddrPort, 1)
	for w := range 4 {
		wg.Go(func() {
			for i := range 500 {
				if w == 0 {
					p.Set(sets[i%len(sets)])
					continue
				}
				if got := p.Next(Mapping{}); got.IsValid() && !slices.Contains(member, got) {
					select {
					case bad <- got:
					default:
					}
				}
			}
		})
	}
	wg.Wait()
	close(bad)
	for got := range bad {
		t.Errorf("Next gave %s, never in any set", got)
	}
}

// nameServer serves on 127.0.0.1: it answers each connection with name
// and closes it.
func nameServer(t *testing.T, name string) netip.AddrPort {
	return tcpServer(t, func(c net.Conn) { io.WriteString(c, name) })
}

// ask connects to port on 127.0.0.1 and returns all the server said.
func ask(t *testing.T, port uint16) string {
	t.Helper()
	c, err := net.DialTCP("tcp4", nil, net.TCPAddrFromAddrPort(netip.AddrPortFrom(lo, port)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second)) // a hang fails rather than blocks
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("through port %d: %v", port, err)
	}
	return string(b)
}

func TestPoolServe(t *testing.T) {
	var backends []netip.AddrPort
	for i := range 3 {
		backends = append(backends, nameServer(t, fmt.Sprintf("r%d", i+1)))
	}
	var pool Pool
	pool.Set(backends)
	p, ms := listen(t, Mapping{Proto: "tcp", HostIP: lo, Port: 80})
	p.Serve(pool.Next)
	port := ms[0].HostPort

	tally := func(n int) map[string]int {
		seen := map[string]int{}
		for range n {
			seen[ask(t, port)]++
		}
		return seen
	}
	if seen := tally(6); !maps.Equal(seen, map[string]int{"r1": 2, "r2": 2, "r3": 2}) {
		t.Errorf("6 connections reached %v, want 2 on each replica", seen)
	}
	pool.Set([]netip.AddrPort{backends[0], backends[2]})
	if seen := tally(4); !maps.Equal(seen, map[string]int{"r1": 2, "r3": 2}) {
		t.Errorf("with r2 gone, 4 connections reached %v, want 2 on r1 and r3", seen)
	}
	pool.Set(nil)
	if got := ask(t, port); got != "" {
		t.Errorf("with no replica the proxy relayed %q, want the client closed", got)
	}
}
