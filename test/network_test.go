package test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// httpdCmd serves "ok NAME" on port 80 from busybox httpd.
func httpdCmd(name string) []string {
	return []string{"sh", "-c", "mkdir -p /www && echo ok " + name + " > /www/index.html && exec httpd -f -p 80 -h /www"}
}

// labNet makes a user network in the lab, removed when the test ends.
func (l *netLab) labNet(args ...string) string {
	l.t.Helper()
	name := fmt.Sprintf("n%s", strings.ReplaceAll(l.host, "-", ""))
	l.must(append(append([]string{"network", "create"}, args...), name)...)
	l.t.Cleanup(func() { l.berth("network", "rm", name) })
	return name
}

// endpoint is an instance's recorded place on its network.
func (l *netLab) endpoint(ref string) (ip string, ports []map[string]any) {
	l.t.Helper()
	var out []struct {
		Endpoint *struct {
			IP    string           `json:"ip"`
			Ports []map[string]any `json:"ports"`
		} `json:"endpoint"`
	}
	if err := json.Unmarshal([]byte(l.must("inspect", ref)), &out); err != nil || len(out) != 1 || out[0].Endpoint == nil {
		l.t.Fatalf("inspect %s: no endpoint (%v)", ref, err)
	}
	return out[0].Endpoint.IP, out[0].Endpoint.Ports
}

// TestNetworkContainers: containers on a user network reach each other
// by name and alias, reach the outside through NAT, resolve outside
// names through the upstream they were given, and publish ports that
// answer from the outside and from the host's loopback.
func TestNetworkContainers(t *testing.T) {
	img := busybox(t)
	l := newNetLab(t)
	net1 := l.labNet()
	web := "web" + l.host
	l.run("--network", net1, "--name", web, "--network-alias", "www"+l.host, "-p", "8080:80", img, httpdCmd(web)[0], httpdCmd(web)[1], httpdCmd(web)[2])
	l.serveOutside(8000)
	seen := l.dnsOutside(map[string]string{"far.example.": "203.0.113.77"})

	for _, name := range []string{web, "www" + l.host, strings.ToUpper(web)} {
		r := l.berth("run", "--rm", "--network", net1, img, "wget", "-qO-", "http://"+name+"/")
		if r.code != 0 || !strings.Contains(r.stdout, "ok "+web) {
			t.Errorf("fetch http://%s/ from a container on the network: exit %d, %q %q", name, r.code, r.stdout, r.stderr)
		}
	}
	r := l.berth("run", "--rm", "--network", net1, img, "wget", "-qO-", "http://"+labOutsideIP+":8000/")
	if r.code != 0 || !strings.Contains(r.stdout, "from "+labHostIP+":") {
		t.Errorf("the outside sees the container as %q (exit %d, %s), want the host's address %s", r.stdout, r.code, r.stderr, labHostIP)
	}
	r = l.berth("run", "--rm", "--network", net1, "--dns", labOutsideIP, img, "nslookup", "far.example")
	if r.code != 0 || !strings.Contains(r.stdout, "203.0.113.77") {
		t.Errorf("an outside name through the given upstream: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	if _, ok := seen.Load(strings.ToLower(web) + "."); ok {
		t.Errorf("the upstream was asked for %s, a name of the network", web)
	}
	// Published: from the outside (DNAT) and from the host's loopback
	// (the proxy).
	for _, url := range []string{"http://" + labHostIP + ":8080/", "http://127.0.0.1:8080/"} {
		ns := l.outside
		if strings.Contains(url, "127.0.0.1") {
			ns = l.host
		}
		body, err := l.get(ns, url)
		if err != nil || !strings.Contains(body, "ok "+web) {
			t.Errorf("GET %s from %s: %q, %v", url, ns, body, err)
		}
	}
	if out := l.must("port", web); !strings.Contains(out, "80/tcp -> 0.0.0.0:8080") {
		t.Errorf("berth port: %q", out)
	}
	// Docker's files.
	r = l.berth("run", "--rm", "--network", net1, "--hostname", "box", "--add-host", "db:10.1.2.3", img, "cat", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname")
	if r.code != 0 || !strings.Contains(r.stdout, "10.1.2.3\tdb") || !strings.Contains(r.stdout, "\tbox\n") ||
		!strings.Contains(r.stdout, "nameserver 10.214.") || !strings.HasSuffix(r.stdout, "box\n") {
		t.Errorf("/etc/hosts, /etc/resolv.conf and /etc/hostname: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestNetworkDefaultBridge: without --network an instance is on the
// default network, with an address of berth0's subnet and a route out;
// --network none keeps loopback only.
func TestNetworkDefaultBridge(t *testing.T) {
	img := busybox(t)
	l := newNetLab(t)
	l.serveOutside(8001)
	r := l.berthEnv([]string{"BERTH_DEFAULT_NETWORK="}, "run", "--rm", img, "sh", "-c", "ip -4 addr show eth0; wget -qO- http://"+labOutsideIP+":8001/")
	if r.code != 0 || !strings.Contains(r.stdout, "inet 10.213.") || !strings.Contains(r.stdout, "from "+labHostIP) {
		t.Errorf("default network: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = l.berth("run", "--rm", "--network", "none", img, "sh", "-c", "cat /proc/net/dev | grep -c :")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "1" {
		t.Errorf("--network none: want loopback only, got %q (exit %d, %s)", r.stdout, r.code, r.stderr)
	}
}

// labState is what berth may leave in the lab's host namespace and
// root: links, the firewall's elements, address claims and names.
func (l *netLab) state(net string) string {
	l.t.Helper()
	links, _ := l.sh(l.host, "ip", "-br", "link")
	var ls []string
	for _, line := range strings.Split(links, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			ls = append(ls, strings.SplitN(f[0], "@", 2)[0])
		}
	}
	rules, _ := l.sh(l.host, "nft", "list", "map", "ip", "berth", "ports")
	var elems []string
	for _, line := range strings.Split(rules, "\n") {
		if strings.Contains(line, ":") && !strings.Contains(line, "type") {
			elems = append(elems, strings.TrimSpace(line))
		}
	}
	claims, _ := filepath.Glob(filepath.Join(berthRoot, "networks", net, "ips", "*"))
	names, _ := filepath.Glob(filepath.Join(berthRoot, "networks", net, "names", "*"))
	return fmt.Sprintf("links %v; published %v; claims %v; names %v", ls, elems, claims, names)
}

// TestNetworkNothingLeft: after rm, rm -f, a kill -9 of the owner and a
// start that fails half way, the host holds no veth, DNAT element,
// address claim or name of the instance; many starts at once never share
// an address.
func TestNetworkNothingLeft(t *testing.T) {
	img := busybox(t)
	l := newNetLab(t)
	net1 := l.labNet()
	// A first instance makes the bridge and the rules.
	l.must("run", "--rm", "--network", net1, img, "true")
	before := l.state(net1)
	t.Logf("before: %s", before)

	id := l.run("--network", net1, "-p", "8090:80", img, "sleep", "1000")
	l.must("rm", "-f", id)
	id = l.run("--network", net1, "-p", "8091:80", img, "sleep", "1000")
	l.must("stop", "-t", "0", id)
	l.must("rm", id)
	// The owner (the monitor) dies: the next look reconciles.
	id = l.run("--network", net1, "-p", "8092:80", "-p", "53/udp", img, "sleep", "1000")
	var rec []struct {
		MonitorPid int `json:"monitor_pid"`
	}
	if err := json.Unmarshal([]byte(l.must("inspect", id)), &rec); err != nil || len(rec) != 1 || rec[0].MonitorPid == 0 {
		t.Fatalf("inspect: %v", err)
	}
	if p, err := os.FindProcess(rec[0].MonitorPid); err == nil {
		p.Kill()
	}
	waitFor(t, "the lost instance to be reconciled", func() bool {
		var st []struct {
			Status string `json:"status"`
		}
		return json.Unmarshal([]byte(l.must("inspect", id)), &st) == nil && len(st) == 1 && st[0].Status == "stopped"
	})
	l.must("rm", id)
	// A start that fails half way (its command is missing).
	if r := l.berth("run", "--rm", "--network", net1, "-p", "8093:80", img, "/no/such/command"); r.code == 0 {
		t.Errorf("a missing command started")
	}
	// A port already taken on the host is refused, named, and nothing changes.
	l.listen(l.host, "0.0.0.0:8094")
	r := l.berth("run", "--rm", "--network", net1, "-p", "8094:80", img, "true")
	if r.code != 125 || !strings.Contains(r.stderr, "8094") || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
		t.Errorf("a taken host port: exit %d, %q; want 125 and one line naming the port", r.code, r.stderr)
	}
	if after := l.state(net1); after != before {
		t.Errorf("left behind:\nbefore %s\nafter  %s", before, after)
	}

	// 200 create/remove cycles, four at once: while an instance holds an
	// address, no other gets it.
	var mu sync.Mutex
	held := map[string]string{}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				r := l.berth("run", "-d", "--network", net1, img, "sleep", "1000")
				if r.code != 0 {
					t.Errorf("run: %s", r.stderr)
					return
				}
				id := strings.TrimSpace(r.stdout)
				ip, _ := l.endpoint(id)
				mu.Lock()
				if other, ok := held[ip]; ok {
					t.Errorf("%s given to %s while %s holds it", ip, id[:12], other[:12])
				}
				held[ip] = id
				mu.Unlock()
				if r := l.berth("rm", "-f", id); r.code != 0 {
					t.Errorf("rm -f: %s", r.stderr)
				}
				mu.Lock()
				delete(held, ip)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if after := l.state(net1); after != before {
		t.Errorf("left behind after 200 cycles:\nbefore %s\nafter  %s", before, after)
	}
}

// TestNetworkForwardDrop: a host whose FORWARD policy is DROP (Docker
// sets it) still lets berth's instances out and its ports in.
func TestNetworkForwardDrop(t *testing.T) {
	img := busybox(t)
	l := newNetLab(t)
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("needs iptables (Debian's iptables) to set a FORWARD DROP policy")
	}
	if out, err := l.sh(l.host, "iptables", "-P", "FORWARD", "DROP"); err != nil {
		t.Fatalf("iptables -P FORWARD DROP: %v: %s", err, out)
	}
	net1 := l.labNet()
	l.serveOutside(8002)
	r := l.berth("run", "--rm", "--network", net1, img, "wget", "-qO-", "http://"+labOutsideIP+":8002/")
	if r.code != 0 || !strings.Contains(r.stdout, "from "+labHostIP) {
		t.Errorf("out through FORWARD DROP: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	web := "fw" + l.host
	l.run("--network", net1, "--name", web, "-p", "8081:80", img, httpdCmd(web)[0], httpdCmd(web)[1], httpdCmd(web)[2])
	if body, err := l.get(l.outside, "http://"+labHostIP+":8081/"); err != nil || !strings.Contains(body, "ok "+web) {
		t.Errorf("in through FORWARD DROP: %q, %v", body, err)
	}
}

// TestNetworkBadInput: each bad network request is one line, exit 125,
// and changes nothing.
func TestNetworkBadInput(t *testing.T) {
	img := busybox(t)
	l := newNetLab(t)
	net1 := l.labNet("--subnet", "10.77.0.0/24")
	if out, err := l.sh(l.host, "ip", "link", "add", "dummy9", "type", "veth", "peer", "name", "dummy9p"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	l.sh(l.host, "ip", "addr", "add", "10.78.0.1/24", "dev", "dummy9")
	l.sh(l.host, "ip", "link", "set", "dummy9", "up")
	id := l.run("--network", net1, img, "sleep", "1000")
	before := l.must("network", "ls")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"network", "create", "--subnet", "10.77.0.128/25", "x1" + l.host}, "overlaps network"},
		{[]string{"network", "create", "--subnet", "10.78.0.0/16", "x2" + l.host}, "overlaps the host's route"},
		{[]string{"network", "create", "--subnet", "10.79.0.0/24", "--gateway", "10.80.0.1", "x3" + l.host}, "outside subnet"},
		{[]string{"network", "create", "bad/name"}, "network name"},
		{[]string{"network", "create", "none"}, "reserved"},
		{[]string{"network", "create", "--subnet", "nonsense", "x4" + l.host}, "--subnet"},
		{[]string{"network", "create", net1}, "exists"},
		{[]string{"network", "rm", net1}, "in use"},
		{[]string{"network", "rm", "bridge"}, "default network"},
		{[]string{"network", "rm", "no-such-net"}, "not found"},
		{[]string{"run", "--rm", "--network", "no-such-net", img, "true"}, "no-such-net"},
		{[]string{"run", "--rm", "--network", net1, "-p", "70000:80", img, "true"}, "70000"},
		{[]string{"run", "--rm", "--network", net1, "-p", "80:0", img, "true"}, "80:0"},
		{[]string{"run", "--rm", "--network", net1, "-p", "8080:80/sctpx", img, "true"}, "sctpx"},
		{[]string{"run", "--rm", "--network", "none", "-p", "80", img, "true"}, "-p"},
		{[]string{"run", "--rm", "--network", net1, "--ip", "10.99.0.5", img, "true"}, "10.99.0.5"},
		{[]string{"run", "--rm", "--network", net1, "--ip", "10.77.0.1", img, "true"}, "gateway"},
		{[]string{"run", "--rm", "--network", "bridge", "--ip", "10.213.0.9", img, "true"}, "user network"},
		{[]string{"run", "--rm", "--network", net1, "--mac-address", "zz", img, "true"}, "zz"},
		{[]string{"run", "--rm", "--network", net1, "--dns", "nine", img, "true"}, "nine"},
		{[]string{"run", "--rm", "--network", net1, "--add-host", "nohost", img, "true"}, "nohost"},
	} {
		r := l.berth(c.args...)
		msg := strings.TrimSpace(r.stderr)
		if r.code != 125 || !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
			t.Errorf("berth %s: exit %d, %q; want 125 and one line with %q", strings.Join(c.args, " "), r.code, msg, c.want)
		}
	}
	if after := l.must("network", "ls"); after != before {
		t.Errorf("networks changed:\n%s\n%s", before, after)
	}
	ip, _ := l.endpoint(id)
	r := l.berth("run", "--rm", "--network", net1, "--ip", ip, img, "true")
	if r.code != 125 || !strings.Contains(r.stderr, "in use") {
		t.Errorf("an address in use: exit %d, %q", r.code, r.stderr)
	}
}

// TestNetworkVM: a VM and a container on one user network fetch a page
// from each other by name, the VM reaches the outside through NAT, and
// its published port answers from the outside and from the host's
// loopback, as a container's does.
func TestNetworkVM(t *testing.T) {
	needVM(t)
	img := busybox(t)
	l := newNetLab(t)
	net1 := l.labNet()
	ctr, vmName := "c"+l.host, "v"+l.host
	l.run("--network", net1, "--name", ctr, img, httpdCmd(ctr)[0], httpdCmd(ctr)[1], httpdCmd(ctr)[2])
	l.run("--vm", "--network", net1, "--name", vmName, "--network-alias", "vm-alias"+l.host, "-p", "8180:80", img,
		httpdCmd(vmName)[0], httpdCmd(vmName)[1], httpdCmd(vmName)[2])
	l.serveOutside(8003)

	// The container fetches from the VM by name and by alias.
	for _, name := range []string{vmName, "vm-alias" + l.host} {
		var r result
		for i := 0; i < 100; i++ { // until the guest's httpd listens
			if r = l.berth("run", "--rm", "--network", net1, img, "wget", "-qO-", "http://"+name+"/"); r.code == 0 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if r.code != 0 || !strings.Contains(r.stdout, "ok "+vmName) {
			t.Errorf("container -> VM %s: exit %d, %q %q", name, r.code, r.stdout, r.stderr)
		}
	}
	// A VM fetches from the container by name, and from the outside.
	r := l.berth("run", "--rm", "--vm", "--network", net1, img, "sh", "-c",
		"wget -qO- http://"+ctr+"/ && wget -qO- http://"+labOutsideIP+":8003/")
	if r.code != 0 || !strings.Contains(r.stdout, "ok "+ctr) || !strings.Contains(r.stdout, "from "+labHostIP+":") {
		t.Errorf("VM -> container and outside: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	for _, c := range []struct{ ns, url string }{{l.outside, "http://" + labHostIP + ":8180/"}, {l.host, "http://127.0.0.1:8180/"}} {
		if body, err := l.get(c.ns, c.url); err != nil || !strings.Contains(body, "ok "+vmName) {
			t.Errorf("GET %s from %s: %q, %v", c.url, c.ns, body, err)
		}
	}
}

// TestNetworkVMNothingLeft: a VM removed with rm -f, and one whose QEMU
// is killed, leave no veth, DNAT element, claim or name.
func TestNetworkVMNothingLeft(t *testing.T) {
	needVM(t)
	img := busybox(t)
	l := newNetLab(t)
	net1 := l.labNet()
	l.must("run", "--rm", "--network", net1, img, "true")
	before := l.state(net1)
	id := l.run("--vm", "--network", net1, "-p", "8190:80", img, "sleep", "1000")
	l.must("rm", "-f", id)
	id = l.run("--vm", "--network", net1, "-p", "8191:80", img, "sleep", "1000")
	var rec []struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(l.must("inspect", id)), &rec); err != nil || len(rec) != 1 || rec[0].Pid == 0 {
		t.Fatalf("inspect: %v", err)
	}
	if p, err := os.FindProcess(rec[0].Pid); err == nil {
		p.Kill() // QEMU crashes
	}
	waitFor(t, "the VM's end to be recorded", func() bool {
		var st []struct {
			Status string `json:"status"`
		}
		return json.Unmarshal([]byte(l.must("inspect", id)), &st) == nil && len(st) == 1 && st[0].Status == "stopped"
	})
	l.must("rm", id)
	if after := l.state(net1); after != before {
		t.Errorf("left behind:\nbefore %s\nafter  %s", before, after)
	}
}

// TestNetworkRmStaleClaim: an address claim whose instance is gone (its
// berth was killed before it could give the address back) does not keep
// its network from being removed.
func TestNetworkRmStaleClaim(t *testing.T) {
	l := newNetLab(t)
	name := "stale" + strings.ReplaceAll(l.host, "-", "")
	l.must("network", "create", "--subnet", "10.76.0.0/24", name)
	claim := filepath.Join(berthRoot, "networks", name, "ips", "10.76.0.9")
	if err := os.WriteFile(claim, []byte(strings.Repeat("ab", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := l.berth("network", "rm", name); r.code != 0 {
		t.Errorf("network rm with a stale claim: exit %d, %s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(berthRoot, "networks", name+".json")); !os.IsNotExist(err) {
		t.Errorf("the network's record is still there: %v", err)
	}
}
