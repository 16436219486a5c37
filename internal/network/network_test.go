package network

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/errdefs"
)

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"app", "a.b-c_d", "N1"} {
		if err := CheckName(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-x", "a/b", "none", "host", strings.Repeat("x", 64), "a b"} {
		if err := CheckName(bad); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", bad, err)
		}
	}
}

func TestCheckSubnet(t *testing.T) {
	nets := []*Network{{Name: "a", Subnet: netip.MustParsePrefix("10.214.0.0/24"), Bridge: "berthA"}}
	routes := []route{{dst: netip.MustParsePrefix("192.168.1.0/24"), dev: "eth0"}, {dst: netip.MustParsePrefix("10.214.0.0/24"), dev: "berthA"}}
	for _, c := range []struct {
		p    string
		want error
	}{
		{"10.214.1.0/24", nil},
		{"10.214.0.128/25", errdefs.ErrConflict},
		{"192.168.0.0/16", errdefs.ErrConflict},
		{"127.0.0.0/24", errdefs.ErrInvalid},
		{"10.0.0.0/31", errdefs.ErrInvalid},
	} {
		err := checkSubnet(netip.MustParsePrefix(c.p), nets, routes)
		if (c.want == nil) != (err == nil) || (err != nil && !errors.Is(err, c.want)) {
			t.Errorf("%s: %v, want %v", c.p, err, c.want)
		}
	}
	// A route through one of berth's own bridges is its network's: the
	// network's record was checked, not the route.
	if p, err := pickSubnet("x", nets, routes); err != nil || p.String() != "10.214.1.0/24" {
		t.Errorf("pick: %v %v", p, err)
	}
	if p, err := pickSubnet(DefaultName, nets, []route{{dst: netip.MustParsePrefix("10.213.0.0/16"), dev: "eth1"}}); err != nil || p.String() != "10.215.0.0/16" {
		t.Errorf("default pick beside a host route: %v %v", p, err)
	}
}

func TestBroadcastAndGateway(t *testing.T) {
	p := netip.MustParsePrefix("10.1.2.0/23")
	if b := broadcast(p); b.String() != "10.1.3.255" {
		t.Errorf("broadcast %s", b)
	}
	if err := checkGateway(p, netip.MustParseAddr("10.1.2.0")); err == nil {
		t.Errorf("the network address as gateway accepted")
	}
	if err := checkGateway(p, netip.MustParseAddr("10.9.0.1")); err == nil {
		t.Errorf("a gateway outside the subnet accepted")
	}
}

// TestClaimConcurrent: claims from many goroutines never share an
// address, skip the gateway, and run out with ErrUnavailable; a release
// makes an address free again, after the others.
func TestClaimConcurrent(t *testing.T) {
	s := &Store{dir: t.TempDir()}
	n := &Network{Name: "t", Subnet: netip.MustParsePrefix("10.9.0.0/28"), Gateway: netip.MustParseAddr("10.9.0.1")}
	var mu sync.Mutex
	got := map[netip.Addr]string{}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id := fmt.Sprintf("%064d", i)
			a, err := s.Claim(n, id, netip.Addr{}, nil)
			if err != nil {
				if !errors.Is(err, errdefs.ErrUnavailable) {
					t.Errorf("claim: %v", err)
				}
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if other, ok := got[a]; ok {
				t.Errorf("%s given to %s and %s", a, other[60:], id[60:])
			}
			got[a] = id
		}(i)
	}
	wg.Wait()
	// /28: 16 addresses less network, broadcast and gateway.
	if len(got) != 13 {
		t.Errorf("%d addresses handed out, want 13", len(got))
	}
	if _, ok := got[n.Gateway]; ok {
		t.Errorf("the gateway was handed out")
	}
	a := netip.MustParseAddr("10.9.0.5")
	s.Release(n, a, got[a])
	if b, err := s.Claim(n, "x", netip.Addr{}, nil); err != nil || b != a {
		t.Errorf("after a release: %v %v, want %s", b, err, a)
	}
	// A stale holder's address is taken back; a live one's is not.
	want := netip.MustParseAddr("10.9.0.6")
	if _, err := s.Claim(n, "y", want, func(string) bool { return false }); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("a held --ip: %v", err)
	}
	if b, err := s.Claim(n, "y", want, func(string) bool { return true }); err != nil || b != want {
		t.Errorf("a stale holder's --ip: %v %v", b, err)
	}
}

func TestParseFlags(t *testing.T) {
	gw := netip.MustParseAddr("10.0.0.1")
	if h, err := ParseAddHosts([]string{"db:10.1.2.3", "gw:host-gateway"}, gw); err != nil || h[0] != [2]string{"db", "10.1.2.3"} || h[1][1] != "10.0.0.1" {
		t.Errorf("add-host: %v %v", h, err)
	}
	for _, bad := range []string{"nohost", ":1.2.3.4", "x:notanip"} {
		if _, err := ParseAddHosts([]string{bad}, gw); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("--add-host %q: %v", bad, err)
		}
	}
	if _, err := ParseDNS([]string{"nine"}); err == nil {
		t.Errorf("--dns nine accepted")
	}
	if _, err := ParseMAC("01:00:5e:00:00:01"); err == nil {
		t.Errorf("a multicast MAC accepted")
	}
	if m := MACFor(netip.MustParseAddr("10.213.0.2")).String(); m != "02:42:0a:d5:00:02" {
		t.Errorf("MAC %s", m)
	}
}

func TestNamesAndHosts(t *testing.T) {
	s := &Store{dir: t.TempDir()}
	n := &Network{Name: "t"}
	ip := netip.MustParseAddr("10.9.0.7")
	if err := s.AddEntry(n, Entry{ID: strings.Repeat("a", 64), IP: ip, Names: []string{"Web", "aaaaaaaaaaaa", "www"}, DNS: []string{"203.0.113.2"}}); err != nil {
		t.Fatal(err)
	}
	names := s.Names(n)
	if got := names.Lookup("web"); len(got) != 1 || got[0] != ip {
		t.Errorf("lookup web: %v", got)
	}
	if got := names.Lookup("db"); len(got) != 0 {
		t.Errorf("lookup db: %v", got)
	}
	if got := names.Reverse(ip); len(got) != 1 || got[0] != "web" {
		t.Errorf("reverse: %v", got)
	}
	if got := names.DNSOf(ip); len(got) != 1 {
		t.Errorf("dns of: %v", got)
	}
	s.RemoveEntry(n, strings.Repeat("a", 64))
	names = s.Names(n)
	if got := names.Lookup("web"); len(got) != 0 {
		t.Errorf("after removal: %v", got)
	}
	h := string(HostsFile(ip, "box", [][2]string{{"db", "10.1.2.3"}}))
	if !strings.HasPrefix(h, "127.0.0.1\tlocalhost\n") || !strings.Contains(h, "10.1.2.3\tdb\n") || !strings.HasSuffix(h, "10.9.0.7\tbox\n") {
		t.Errorf("hosts file:\n%s", h)
	}
}
