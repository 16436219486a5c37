//go:build linux

package firewall

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/nftables"

	"github.com/berth-dev/berth/internal/errdefs"
)

func backend(addr string, port uint16) Backend {
	return Backend{Addr: netip.MustParseAddr(addr), Port: port}
}

// tally connects from ns to addr n times and counts the answers by the
// name of the server that gave them.
func tally(t *testing.T, ns, addr string, n int) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for range n {
		got, err := reach(ns, addr)
		if err != nil {
			t.Fatal(err)
		}
		name, _, _ := strings.Cut(got, " ")
		seen[name]++
	}
	return seen
}

func TestServiceTraffic(t *testing.T) {
	needRoot(t)
	const br = "bfw0"
	host, r1, out := topology(t, br)
	r2, r3 := newNS(t, "c"), newNS(t, "c")
	attach(t, host, br, r2, 3)
	attach(t, host, br, r3, 4)
	for i, ns := range []string{r1, r2, r3} {
		server(t, ns, fmt.Sprintf("10.231.0.%d:80", i+2), fmt.Sprintf("r%d", i+1))
	}
	f := firewallIn(t, host)
	n := Network{Bridge: br, Subnet: netip.MustParsePrefix("10.231.0.0/24")}
	if err := f.EnsureNetwork(n); err != nil {
		t.Fatalf("EnsureNetwork: %v", err)
	}
	before := ruleset(t, f)

	web := Service{Name: "shop_web", Proto: "tcp", HostPort: 8080}
	all := []Backend{backend("10.231.0.2", 80), backend("10.231.0.3", 80), backend("10.231.0.4", 80)}
	if err := f.SetService(web, all); err != nil {
		t.Fatalf("SetService: %v", err)
	}
	// numgen inc hands new connections to the backends in turn.
	if seen := tally(t, out, "203.0.113.1:8080", 9); !maps.Equal(seen, map[string]int{"r1": 3, "r2": 3, "r3": 3}) {
		t.Errorf("9 connections from outside reached %v, want 3 on each backend", seen)
	}
	for _, c := range []struct{ what, from, want string }{
		{"from outside (client address kept)", out, "203.0.113.2"},
		{"from the host itself (output)", host, "203.0.113.1"},
		{"from a replica through the host's address (hairpin)", r1, "10.231.0.1"},
	} {
		seen := map[string]bool{}
		for range 3 {
			got, err := reach(c.from, "203.0.113.1:8080")
			name, from, _ := strings.Cut(got, " ")
			if err != nil || from != c.want {
				t.Fatalf("%s: got %q, %v; want an answer to %s", c.what, got, err, c.want)
			}
			seen[name] = true
		}
		if len(seen) != 3 {
			t.Errorf("%s: 3 connections reached %v, want all three backends", c.what, slices.Sorted(maps.Keys(seen)))
		}
	}

	// A connection keeps its backend when the set changes without it.
	cmd := helper(out, "hold", "203.0.113.1:8080", "")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := bufio.NewReader(stdout)
	first, err := lines.ReadString('\n')
	if err != nil {
		t.Fatalf("held connection: %v", err)
	}
	held, _, _ := strings.Cut(first, " ")

	two := slices.DeleteFunc(slices.Clone(all), func(b Backend) bool { return fmt.Sprintf("r%d", b.Addr.As4()[3]-1) == held })
	if err := f.SetService(web, two); err != nil {
		t.Fatalf("SetService with two backends: %v", err)
	}
	io.WriteString(stdin, "still there\n")
	if echo, err := lines.ReadString('\n'); echo != "still there\n" {
		t.Errorf("the connection held on %s through the change: %q, %v", held, echo, err)
	}
	seen := tally(t, out, "203.0.113.1:8080", 6)
	if len(seen) != 2 || seen[held] != 0 {
		t.Errorf("with %v left, 6 connections reached %v", two, seen)
	}
	got, err := f.ListServices()
	if err != nil || !maps.EqualFunc(got, map[Service][]Backend{{"shop_web", "tcp", netip.IPv4Unspecified(), 8080}: two}, slices.Equal) {
		t.Errorf("ListServices = %v, %v; want %v", got, err, two)
	}

	if err := f.SetService(web, nil); err != nil {
		t.Fatalf("SetService with no backend: %v", err)
	}
	if got, err := reach(out, "203.0.113.1:8080"); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("a service with no backend: got %q, %v; want the connection refused", got, err)
	}
	got, err = f.ListServices()
	if err != nil || len(got) != 1 || len(got[Service{"shop_web", "tcp", netip.IPv4Unspecified(), 8080}]) != 0 {
		t.Errorf("ListServices with no backend = %v, %v", got, err)
	}

	// Back to one, bound to the outside address.
	if err := f.RemoveService(web); err != nil {
		t.Fatalf("RemoveService: %v", err)
	}
	bound := Service{Name: "shop_web", Proto: "tcp", HostIP: netip.MustParseAddr("203.0.113.1"), HostPort: 8080}
	if err := f.SetService(bound, all[2:]); err != nil {
		t.Fatalf("SetService on one address: %v", err)
	}
	if seen := tally(t, out, "203.0.113.1:8080", 2); !maps.Equal(seen, map[string]int{"r3": 2}) {
		t.Errorf("the address-bound service reached %v, want r3 twice", seen)
	}
	if err := f.RemoveService(bound); err != nil {
		t.Fatalf("RemoveService: %v", err)
	}
	if _, err := reach(out, "203.0.113.1:8080"); err == nil {
		t.Error("a removed service still answers")
	}
	if after := ruleset(t, f); after != before {
		t.Errorf("ruleset after RemoveService:\n%s\nwant\n%s", after, before)
	}
	if err := f.RemoveNetwork(n); err != nil {
		t.Fatal(err)
	}
}

func TestServiceConflicts(t *testing.T) {
	needRoot(t)
	f := firewallIn(t, newNS(t, "svc"))
	empty := ruleset(t, f)
	web := Service{Name: "shop_web", Proto: "tcp", HostIP: netip.MustParseAddr("203.0.113.1"), HostPort: 9090}
	bs := []Backend{backend("10.231.0.2", 80), backend("10.231.0.3", 80)}

	// A service alone makes the table, and takes it away with it.
	if err := f.SetService(web, bs); err != nil {
		t.Fatalf("SetService: %v", err)
	}
	if err := f.RemoveService(web); err != nil {
		t.Fatalf("RemoveService: %v", err)
	}
	if got := ruleset(t, f); got != empty {
		t.Fatalf("ruleset after the only service went:\n%s\nwant it empty:\n%s", got, empty)
	}

	inst := tcp("", 8080, "10.231.0.9", 80)
	if err := f.AddPorts([]Port{inst}); err != nil {
		t.Fatal(err)
	}
	before := ruleset(t, f)
	if err := f.SetService(web, bs); err != nil {
		t.Fatalf("SetService: %v", err)
	}
	if err := f.SetService(web, bs[:1]); err != nil {
		t.Fatalf("SetService again: %v", err)
	}
	mid := ruleset(t, f)
	refused := func(call string, err error, port uint16) {
		t.Helper()
		if !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("%s = %v, want a conflict", call, err)
		}
		if !strings.Contains(err.Error(), fmt.Sprint(port)) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %q does not name port %d on one line", call, err, port)
		}
		if got := ruleset(t, f); got != mid {
			t.Fatalf("a refused %s changed the ruleset:\n%s\nwas\n%s", call, got, mid)
		}
	}
	for _, s := range []Service{
		{Name: "shop_web", Proto: "tcp", HostPort: 8080},                  // an instance's every-address port
		{Name: "other", Proto: "tcp", HostIP: web.HostIP, HostPort: 8080}, // an address under it
		{Name: "other", Proto: "tcp", HostIP: web.HostIP, HostPort: 9090}, // another service's port
		{Name: "shop_web", Proto: "tcp", HostPort: 9090},                  // every address over its own bound one
	} {
		refused(fmt.Sprintf("SetService(%s)", s), f.SetService(s, bs), s.HostPort)
	}
	for _, p := range []Port{tcp("", 9090, "10.231.0.9", 80), tcp("203.0.113.1", 9090, "10.231.0.9", 80)} {
		err := f.AddPorts([]Port{p})
		refused(fmt.Sprintf("AddPorts(%s)", p), err, 9090)
		if !strings.Contains(err.Error(), "shop_web") {
			t.Errorf("AddPorts(%s): %q does not name the service", p, err)
		}
	}
	// Another protocol, or another address, is free.
	udp := Service{Name: "shop_dns", Proto: "udp", HostPort: 9090}
	if err := f.SetService(udp, nil); err != nil {
		t.Fatalf("SetService(%s): %v", udp, err)
	}
	other := tcp("203.0.113.7", 9090, "10.231.0.9", 80)
	if err := f.AddPorts([]Port{other}); err != nil {
		t.Fatalf("AddPorts(%s) beside the service: %v", other, err)
	}
	if err := f.RemovePorts([]Port{other}); err != nil {
		t.Fatal(err)
	}
	if err := f.RemoveService(udp); err != nil {
		t.Fatal(err)
	}

	for _, bad := range []struct {
		s  Service
		bs []Backend
	}{
		{Service{Name: "", Proto: "tcp", HostPort: 1}, nil},
		{Service{Name: "a/b", Proto: "tcp", HostPort: 1}, nil},
		{Service{Name: strings.Repeat("a", 201), Proto: "tcp", HostPort: 1}, nil},
		{Service{Name: "a", Proto: "sctp", HostPort: 1}, nil},
		{Service{Name: "a", Proto: "tcp", HostPort: 0}, nil},
		{Service{Name: "a", Proto: "tcp", HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 1}, nil},
		{Service{Name: "a", Proto: "tcp", HostPort: 1}, []Backend{backend("fd00::1", 80)}},
		{Service{Name: "a", Proto: "tcp", HostPort: 1}, []Backend{backend("10.231.0.2", 0)}},
		{Service{Name: "a", Proto: "tcp", HostPort: 1}, []Backend{backend("10.231.0.2", 80), backend("10.231.0.2", 80)}},
	} {
		if err := f.SetService(bad.s, bad.bs); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("SetService(%q, %v) = %v, want invalid", bad.s, bad.bs, err)
		}
	}

	// Removing what is not there, or someone else's, does nothing.
	for _, s := range []Service{{Name: "gone", Proto: "tcp", HostPort: 7}, {Name: "other", Proto: "tcp", HostIP: web.HostIP, HostPort: 9090}} {
		if err := f.RemoveService(s); err != nil {
			t.Fatalf("RemoveService(%s): %v", s, err)
		}
	}
	if got := ruleset(t, f); got != mid {
		t.Fatalf("ruleset changed by removing nothing:\n%s\nwas\n%s", got, mid)
	}
	if err := f.RemoveService(web); err != nil {
		t.Fatal(err)
	}
	if got := ruleset(t, f); got != before {
		t.Fatalf("ruleset after RemoveService:\n%s\nwant\n%s", got, before)
	}
	if err := f.RemovePorts([]Port{inst}); err != nil {
		t.Fatal(err)
	}
	if got := ruleset(t, f); got != empty {
		t.Fatalf("ruleset after the last port went:\n%s\nwant it empty:\n%s", got, empty)
	}
}

func TestConcurrentServices(t *testing.T) {
	needRoot(t)
	f := firewallIn(t, newNS(t, "svcconc"))
	const workers, each = 6, 8
	// ListServices spells every address 0.0.0.0.
	shared := Service{Name: "shop_web", Proto: "tcp", HostIP: netip.IPv4Unspecified(), HostPort: 8080}
	// Worker w sets the shared service to backends .2 to .(2+w), and its
	// own service to as many.
	sets := make([][]Backend, workers)
	for w := range workers {
		for i := range w + 1 {
			sets[w] = append(sets[w], backend(fmt.Sprintf("10.231.0.%d", 2+i), uint16(80+w)))
		}
	}
	own := func(w int) Service {
		return Service{Name: fmt.Sprintf("svc%d", w), Proto: "udp", HostIP: netip.IPv4Unspecified(), HostPort: uint16(9000 + w)}
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers*each*2)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				if err := f.SetService(shared, sets[w][:i%len(sets[w])+1]); err != nil {
					errs <- err
				}
				if err := f.SetService(own(w), sets[w][:i%len(sets[w])+1]); err != nil {
					errs <- err
				}
			}
			if err := f.SetService(shared, sets[w]); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got, err := f.ListServices()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != workers+1 {
		t.Errorf("%d services listed, want %d: %v", len(got), workers+1, got)
	}
	if !slices.ContainsFunc(sets, func(bs []Backend) bool { return slices.Equal(got[shared], bs) }) {
		t.Errorf("the shared service ended with %v, not one worker's last set", got[shared])
	}
	for w := range workers {
		if want := sets[w][:(each-1)%len(sets[w])+1]; !slices.Equal(got[own(w)], want) {
			t.Errorf("%s ended with %v, want %v", own(w), got[own(w)], want)
		}
	}
	// One anonymous map per service: none left behind by the rewrites.
	c, err := f.conn()
	if err != nil {
		t.Fatal(err)
	}
	all, err := c.GetSets(table)
	if err != nil {
		t.Fatal(err)
	}
	if anon := slices.DeleteFunc(all, func(s *nftables.Set) bool { return !s.Anonymous }); len(anon) != workers+1 {
		t.Errorf("%d anonymous maps in berth's table, want one per service (%d)", len(anon), workers+1)
	}
	for s := range got {
		if err := f.RemoveService(s); err != nil {
			t.Fatal(err)
		}
	}
	if tables, err := c.ListTables(); err != nil || slices.ContainsFunc(tables, func(tb *nftables.Table) bool { return tb.Name == tableName }) {
		t.Errorf("berth's table is still there after every service went (%v)", err)
	}
}

// nft runs the nft binary in namespace ns with script on its stdin.
func nft(t *testing.T, ns, script string, args ...string) string {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, "nft"}, args...)...)
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nft %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// A table an older berth made has no service maps; and nft(8) writes a
// service's rule back its own way after a save and load. SetService and
// ListServices take both.
func TestServiceOldTableAndNftReload(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs the nft binary (Debian package nftables) to write a table as an older berth or an admin would")
	}
	ns := newNS(t, "svcnft")
	f := firewallIn(t, ns)
	nft(t, ns, `table ip berth {
	map ports { type inet_proto . inet_service : ipv4_addr . inet_service; elements = { tcp . 9000 : 10.231.0.9 . 80 } }
	map addrports { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @addrports
		fib daddr type local dnat ip to meta l4proto . th dport map @ports
	}
	chain output {
		type nat hook output priority -100; policy accept;
		ip daddr != 127.0.0.0/8 fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @addrports
		ip daddr != 127.0.0.0/8 fib daddr type local dnat ip to meta l4proto . th dport map @ports
	}
	chain postrouting { type nat hook postrouting priority srcnat; policy accept; }
	chain forward { type filter hook forward priority filter; policy accept; }
}
`, "-f", "-")
	web := Service{Name: "shop_web", Proto: "tcp", HostIP: netip.IPv4Unspecified(), HostPort: 8080}
	bs := []Backend{backend("10.231.0.2", 80), backend("10.231.0.3", 80), backend("10.231.0.4", 80)}
	if err := f.SetService(web, bs); err != nil {
		t.Fatalf("SetService in an older table: %v", err)
	}
	saved := nft(t, ns, "", "list", "ruleset")
	for _, want := range []string{"vmap @svcports", "numgen inc mod 3 map { 0 : 10.231.0.2 . 80, 1 : 10.231.0.3 . 80, 2 : 10.231.0.4 . 80 }"} {
		if !strings.Contains(saved, want) {
			t.Errorf("nft list ruleset lacks %q:\n%s", want, saved)
		}
	}
	nft(t, ns, "", "flush", "ruleset")
	nft(t, ns, saved, "-f", "-")
	got, err := f.ListServices()
	if err != nil || !slices.Equal(got[web], bs) {
		t.Fatalf("ListServices after nft saved and loaded the ruleset = %v, %v; want %v", got, err, bs)
	}
	if err := f.SetService(web, bs[1:]); err != nil {
		t.Fatalf("SetService after the reload: %v", err)
	}
	if got, err := f.ListServices(); err != nil || !slices.Equal(got[web], bs[1:]) {
		t.Fatalf("ListServices = %v, %v; want %v", got, err, bs[1:])
	}
}
