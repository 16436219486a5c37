//go:build linux

package firewall

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
)

// The test binary doubles as the TCP server and client run inside the
// test's namespaces: BERTH_FW_HELPER=serve answers every connection with
// its name and the peer's address, then echoes what it reads; =dial
// prints what the server said; =hold prints the server's first line,
// then sends each line of its stdin and prints the echo.
func TestMain(m *testing.M) {
	switch os.Getenv("BERTH_FW_HELPER") {
	case "serve":
		serve(os.Getenv("BERTH_FW_ADDR"), os.Getenv("BERTH_FW_NAME"))
	case "dial":
		dial(os.Getenv("BERTH_FW_ADDR"))
	case "hold":
		hold(os.Getenv("BERTH_FW_ADDR"))
	}
	os.Exit(m.Run())
}

func serve(addr, name string) {
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("ready")
	for {
		c, err := l.Accept()
		if err != nil {
			os.Exit(1)
		}
		go func() {
			defer c.Close()
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			fmt.Fprintf(c, "%s %s\n", name, host)
			io.Copy(c, c)
		}()
	}
}

func dial(addr string) {
	// The deadline only bounds a failure; no assertion rests on it.
	c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Stdout.Write(b)
	os.Exit(0)
}

func hold(addr string) {
	c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	from := bufio.NewReader(c)
	in := bufio.NewScanner(os.Stdin)
	for {
		// The deadline only bounds a failure; no assertion rests on it.
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := from.ReadString('\n')
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Stdout.WriteString(line)
		if !in.Scan() {
			os.Exit(0)
		}
		fmt.Fprintln(c, in.Text())
	}
}

// needRoot skips unless the test can make network namespaces.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, nf_tables)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip binary (iproute2) to build network namespaces")
	}
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newNS makes a named network namespace with lo up, deleted at cleanup.
func newNS(t *testing.T, tag string) string {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	name := "berth-fw-test-" + tag + "-" + hex.EncodeToString(b)
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// firewallIn returns a Firewall bound to namespace ns, skipping the test
// when nf_tables cannot serve berth there.
func firewallIn(t *testing.T, ns string) *Firewall {
	t.Helper()
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		t.Fatal(err)
	}
	f, err := New(filepath.Join(t.TempDir(), "firewall.lock"))
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked, so it dies with the goroutine.
		t.Fatalf("back to the test's namespace: %v", err)
	}
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Check(); errors.Is(err, errdefs.ErrUnavailable) {
		t.Skipf("nf_tables cannot serve berth: %v", err)
	} else if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return f
}

// ruleset is the namespace's whole IPv4 nf_tables ruleset as text, read
// with the library so that no nft binary is needed.
func ruleset(t *testing.T, f *Firewall) string {
	t.Helper()
	c, err := f.conn()
	if err != nil {
		t.Fatal(err)
	}
	chains, err := c.ListChains()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, ch := range chains {
		fmt.Fprintf(&b, "chain %v %s %s\n", ch.Table.Family, ch.Table.Name, ch.Name)
		if ch.Policy != nil {
			fmt.Fprintf(&b, " policy %v\n", *ch.Policy)
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rules {
			fmt.Fprintf(&b, " rule %d %q", r.Handle, r.UserData)
			for _, e := range r.Exprs {
				fmt.Fprintf(&b, " %+v", e)
			}
			b.WriteString("\n")
		}
	}
	tables, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		sets, err := c.GetSets(tb)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "table %v %s\n", tb.Family, tb.Name)
		for _, s := range sets {
			elems, err := c.GetSetElements(s)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, " set %s", s.Name)
			for _, e := range elems {
				fmt.Fprintf(&b, " %x:%x", e.Key, e.Val)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

func tcp(host string, hostPort uint16, addr string, port uint16) Port {
	p := Port{Proto: "tcp", HostPort: hostPort, Addr: netip.MustParseAddr(addr), Port: port}
	if host != "" {
		p.HostIP = netip.MustParseAddr(host)
	}
	return p
}

func sorted(ports []Port) []Port {
	ports = slices.Clone(ports)
	slices.SortFunc(ports, func(a, b Port) int { return strings.Compare(a.String(), b.String()) })
	return ports
}

func TestPortsConflictAndRemove(t *testing.T) {
	needRoot(t)
	f := firewallIn(t, newNS(t, "ports"))
	before := ruleset(t, f)

	a := tcp("", 8080, "10.231.0.2", 80)
	b := tcp("203.0.113.1", 8081, "10.231.0.3", 81)
	u := Port{Proto: "udp", HostIP: netip.IPv4Unspecified(), HostPort: 8080, Addr: netip.MustParseAddr("10.231.0.4"), Port: 53}
	if err := f.AddPorts([]Port{a, b, u}); err != nil {
		t.Fatalf("AddPorts: %v", err)
	}
	// Publishing the same again is a no-op, not a conflict.
	if err := f.AddPorts([]Port{a}); err != nil {
		t.Fatalf("AddPorts again: %v", err)
	}
	want := []Port{tcp("0.0.0.0", 8080, "10.231.0.2", 80), b, u}
	mid := ruleset(t, f)
	for _, clash := range [][]Port{
		{tcp("", 8080, "10.231.0.9", 80)},                                             // same every-address port elsewhere
		{tcp("203.0.113.1", 8080, "10.231.0.9", 80)},                                  // an address under an every-address port
		{tcp("", 8081, "10.231.0.9", 80)},                                             // every address over an address-bound port
		{tcp("", 9000, "10.231.0.9", 80), tcp("203.0.113.1", 8081, "10.231.0.2", 80)}, // the batch's second
		{tcp("", 9001, "10.231.0.9", 80), tcp("", 9001, "10.231.0.8", 80)},            // within the batch
	} {
		err := f.AddPorts(clash)
		if !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("AddPorts(%v) = %v, want a conflict", clash, err)
		}
		if !strings.Contains(err.Error(), fmt.Sprint(clash[len(clash)-1].HostPort)) || strings.Contains(err.Error(), "\n") {
			t.Errorf("conflict error %q does not name the port on one line", err)
		}
		if got := ruleset(t, f); got != mid {
			t.Fatalf("a refused AddPorts changed the ruleset:\n%s\nwas\n%s", got, mid)
		}
	}
	for _, bad := range []Port{
		{Proto: "sctp", HostPort: 1, Addr: netip.MustParseAddr("10.231.0.2"), Port: 1},
		tcp("127.0.0.1", 8080, "10.231.0.2", 80),
		tcp("", 0, "10.231.0.2", 80),
		{Proto: "tcp", HostPort: 1, Addr: netip.MustParseAddr("fd00::1"), Port: 1},
	} {
		if err := f.AddPorts([]Port{bad}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("AddPorts(%v) = %v, want invalid", bad, err)
		}
	}
	got, err := f.ListPorts()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sorted(got), sorted(want)) {
		t.Fatalf("ListPorts = %v, want %v", got, want)
	}

	// A port published elsewhere, or not at all, is skipped.
	if err := f.RemovePorts([]Port{tcp("", 8080, "10.231.0.9", 80), tcp("", 7, "10.231.0.2", 7), b}); err != nil {
		t.Fatalf("RemovePorts: %v", err)
	}
	got, _ = f.ListPorts()
	if !slices.Equal(sorted(got), sorted([]Port{want[0], u})) {
		t.Fatalf("after RemovePorts: %v", got)
	}
	if err := f.RemovePorts([]Port{a, u}); err != nil {
		t.Fatal(err)
	}
	if after := ruleset(t, f); after != before {
		t.Fatalf("ruleset after removing every port:\n%s\nwant\n%s", after, before)
	}
	if err := f.RemovePorts([]Port{a}); err != nil {
		t.Fatalf("RemovePorts with no table: %v", err)
	}
}

func TestConcurrentPorts(t *testing.T) {
	needRoot(t)
	f := firewallIn(t, newNS(t, "conc"))
	const workers, each = 6, 12
	var wg sync.WaitGroup
	errs := make(chan error, workers*2)
	var mu sync.Mutex
	winners := 0
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []Port
			for i := range each {
				p := tcp("", uint16(20000+w*100+i), fmt.Sprintf("10.231.0.%d", w+2), uint16(80+i))
				mine = append(mine, p)
				if err := f.AddPorts([]Port{p}); err != nil {
					errs <- err
					return
				}
			}
			// Everyone races for one port; exactly one wins.
			err := f.AddPorts([]Port{tcp("", 30000, fmt.Sprintf("10.231.0.%d", w+2), 80)})
			switch {
			case err == nil:
				mu.Lock()
				winners++
				mu.Unlock()
			case !errors.Is(err, errdefs.ErrConflict):
				errs <- err
			}
			// Withdraw the odd ones.
			var odd []Port
			for i := 1; i < each; i += 2 {
				odd = append(odd, mine[i])
			}
			if err := f.RemovePorts(odd); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if winners != 1 {
		t.Errorf("%d workers published the contested port, want 1", winners)
	}
	var want []Port
	for w := range workers {
		for i := 0; i < each; i += 2 {
			want = append(want, tcp("0.0.0.0", uint16(20000+w*100+i), fmt.Sprintf("10.231.0.%d", w+2), uint16(80+i)))
		}
	}
	got, err := f.ListPorts()
	if err != nil {
		t.Fatal(err)
	}
	got = slices.DeleteFunc(got, func(p Port) bool { return p.HostPort == 30000 })
	if !slices.Equal(sorted(got), sorted(want)) {
		t.Fatalf("after concurrent changes: %d ports %v, want %d %v", len(got), got, len(want), want)
	}
}

// helper starts the test binary as a helper in namespace ns.
func helper(ns, mode, addr, name string) *exec.Cmd {
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0])
	cmd.Env = append(os.Environ(), "BERTH_FW_HELPER="+mode, "BERTH_FW_ADDR="+addr, "BERTH_FW_NAME="+name)
	return cmd
}

// server runs a TCP server named name on addr in ns until the test ends.
func server(t *testing.T, ns, addr, name string) {
	t.Helper()
	cmd := helper(ns, "serve", addr, name)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		t.Fatalf("server %s on %s in %s: %q %s", name, addr, ns, line, stderr.String())
	}
}

// reach connects from ns to addr and returns what the server said, or
// the failure.
func reach(ns, addr string) (string, error) {
	out, err := helper(ns, "dial", addr, "").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s -> %s: %v: %s", ns, addr, err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// topology builds a "host" namespace with bridge br (10.231.0.1/24) and a
// veth (203.0.113.1/24) to an "outside" namespace (203.0.113.2), and a
// "container" namespace on the bridge (10.231.0.2, default route via the
// bridge). The outside has no route to 10.231.0.0/24.
func topology(t *testing.T, br string) (host, ctr, out string) {
	host, ctr, out = newNS(t, "h"), newNS(t, "c"), newNS(t, "o")
	for _, c := range [][]string{
		{"-n", host, "link", "add", br, "type", "bridge"},
		{"-n", host, "addr", "add", "10.231.0.1/24", "dev", br},
		{"-n", host, "link", "set", br, "up"},
		{"-n", host, "link", "add", "vo", "type", "veth", "peer", "name", "eth0", "netns", out},
		{"-n", host, "addr", "add", "203.0.113.1/24", "dev", "vo"},
		{"-n", host, "link", "set", "vo", "up"},
		{"-n", out, "addr", "add", "203.0.113.2/24", "dev", "eth0"},
		{"-n", out, "link", "set", "eth0", "up"},
	} {
		run(t, append([]string{"ip"}, c...)...)
	}
	attach(t, host, br, ctr, 2)
	return host, ctr, out
}

// attach joins namespace ns to bridge br of namespace host as 10.231.0.N,
// with a default route via the bridge, as an instance is.
func attach(t *testing.T, host, br, ns string, n int) {
	t.Helper()
	veth := fmt.Sprintf("vc%d", n)
	for _, c := range [][]string{
		{"-n", host, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"-n", host, "link", "set", veth, "master", br, "up"},
		// As Docker does: with br_netfilter, a hairpin DNAT back to the
		// sender's own port is bridged out of the port it came in by.
		{"-n", host, "link", "set", veth, "type", "bridge_slave", "hairpin", "on"},
		{"-n", ns, "addr", "add", fmt.Sprintf("10.231.0.%d/24", n), "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "route", "add", "default", "via", "10.231.0.1"},
	} {
		run(t, append([]string{"ip"}, c...)...)
	}
}

func TestTraffic(t *testing.T) {
	needRoot(t)
	for _, drop := range []bool{false, true} {
		t.Run(map[bool]string{false: "accept", true: "forward-drop"}[drop], func(t *testing.T) {
			if _, err := exec.LookPath("iptables"); drop && err != nil {
				t.Skip("needs iptables to set the filter FORWARD policy to drop as Docker does")
			}
			const br = "bfw0"
			host, ctr, out := topology(t, br)
			if drop {
				run(t, "ip", "netns", "exec", host, "iptables", "-P", "FORWARD", "DROP")
			}
			f := firewallIn(t, host)
			before := ruleset(t, f)
			server(t, ctr, "10.231.0.2:80", "ctr")
			server(t, out, "203.0.113.2:9000", "out")
			n := Network{Bridge: br, Subnet: netip.MustParsePrefix("10.231.0.0/24")}
			pub := []Port{tcp("", 8080, "10.231.0.2", 80)}
			if err := f.EnsureNetwork(n); err != nil {
				t.Fatalf("EnsureNetwork: %v", err)
			}
			if err := f.EnsureNetwork(n); err != nil {
				t.Fatalf("EnsureNetwork again: %v", err)
			}
			if err := f.AddPorts(pub); err != nil {
				t.Fatalf("AddPorts: %v", err)
			}
			for _, c := range []struct{ what, from, to, want string }{
				{"published port from outside (DNAT, client address kept)", out, "203.0.113.1:8080", "ctr 203.0.113.2"},
				{"outside from the container (masquerade)", ctr, "203.0.113.2:9000", "out 203.0.113.1"},
				{"own published port through the host's address (hairpin)", ctr, "203.0.113.1:8080", "ctr 10.231.0.1"},
				{"published port from the host itself (output)", host, "203.0.113.1:8080", "ctr 203.0.113.1"},
			} {
				got, err := reach(c.from, c.to)
				if err != nil || got != c.want {
					t.Errorf("%s: got %q, %v; want %q", c.what, got, err, c.want)
				}
			}
			if drop {
				rules := run(t, "ip", "netns", "exec", host, "iptables", "-S", "FORWARD")
				if !strings.Contains(rules, "-i "+br+" -m comment --comment \"berth:"+br+"\" -j ACCEPT") {
					t.Errorf("iptables cannot read berth's FORWARD rules back:\n%s", rules)
				}
			}
			if err := f.RemovePorts(pub); err != nil {
				t.Fatalf("RemovePorts: %v", err)
			}
			if got, err := reach(out, "203.0.113.1:8080"); err == nil {
				t.Errorf("withdrawn port still reaches %q", got)
			}
			if err := f.RemoveNetwork(n); err != nil {
				t.Fatalf("RemoveNetwork: %v", err)
			}
			if after := ruleset(t, f); after != before {
				t.Errorf("ruleset after RemovePorts and RemoveNetwork:\n%s\nwant\n%s", after, before)
			}
			if err := f.RemoveNetwork(n); err != nil {
				t.Errorf("RemoveNetwork again: %v", err)
			}
		})
	}
}
