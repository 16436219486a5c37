package vm

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/testutil"
)

// Tests of a VM's network card: they boot real guests (QEMU, the guest
// kernel, berth-agent) whose eth0 is a veth into a namespace the test
// made ("outside", the veth's peer with the gateway's address), and
// send traffic only between the two.

var (
	agentOnce sync.Once
	agentBin  string
	agentErr  error
)

// testAgent builds berth-agent once per test binary.
func testAgent(t *testing.T) string {
	t.Helper()
	agentOnce.Do(func() {
		dir, err := os.MkdirTemp("", "berth-vm-agent-")
		if err != nil {
			agentErr = err
			return
		}
		agentBin = filepath.Join(dir, "berth-agent")
		cmd := exec.Command("go", "build", "-o", agentBin, "../../cmd/berth-agent")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			agentErr = fmt.Errorf("build berth-agent: %v: %s", err, out)
		}
	})
	if agentErr != nil {
		t.Fatal(agentErr)
	}
	return agentBin
}

// needNet skips without root, QEMU, the guest kernel or mkfs.erofs.
func needNet(t *testing.T) Guest {
	t.Helper()
	testutil.NeedRoot(t, "network namespaces, veths and taps need root")
	k := testKernel(t)
	testutil.NeedTool(t, "mkfs.erofs")
	testutil.NeedTool(t, "ip")
	accel, _ := DetectAccel()
	return Guest{Kernel: k, Agent: testAgent(t), CacheDir: t.TempDir(), Accel: accel, Transport: TransportSerial}
}

// testNetNS makes a named network namespace (ip netns add) that the
// test's end removes, and returns its path.
func testNetNS(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	name := "berth-vmnet-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return "/run/netns/" + name
}

// nsHandle is a netlink handle in the namespace at path.
func nsHandle(t *testing.T, path string) *netlink.Handle {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// attachVeth is a network layer's Attach for tests: a veth whose end
// "eth0" goes into the instance's namespace with addr (and a default
// route through gw), its peer staying in outside with gw's address.
func attachVeth(t *testing.T, outside, addr, gw string) func(string) error {
	return func(inside string) error {
		out := nsHandle(t, outside)
		defer out.Close()
		peer := "vm" + hex.EncodeToString([]byte(addr))[len(addr)*2-6:]
		if err := out.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: peer}, PeerName: "eth0"}); err != nil {
			return err
		}
		eth, err := out.LinkByName("eth0")
		if err != nil {
			return err
		}
		ns, err := os.Open(inside)
		if err != nil {
			return err
		}
		defer ns.Close()
		if err := out.LinkSetNsFd(eth, int(ns.Fd())); err != nil {
			return err
		}
		p, _ := out.LinkByName(peer)
		if err := upWith(out, p, gw+"/24"); err != nil {
			return err
		}
		in := nsHandle(t, inside)
		defer in.Close()
		if eth, err = in.LinkByName("eth0"); err != nil {
			return err
		}
		if err := upWith(in, eth, addr+"/24"); err != nil {
			return err
		}
		return in.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: net.ParseIP(gw)})
	}
}

func upWith(h *netlink.Handle, l netlink.Link, cidr string) error {
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	if err := h.AddrAdd(l, a); err != nil {
		return err
	}
	return h.LinkSetUp(l)
}

// serveIn serves body over HTTP on addr:8080 in the namespace at path.
func serveIn(t *testing.T, path, addr, body string) {
	t.Helper()
	var l net.Listener
	err := inNS(path, func() (err error) {
		l, err = net.Listen("tcp", addr+":8080")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, body) })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

// inNS runs fn on a thread in the namespace at path (sockets it makes
// stay there); the thread ends with it.
func inNS(path string, fn func() error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return inNetNS(f, fn)
}

// fetchFrom gets http://addr/ from the namespace at path, retrying
// until the guest's server answers.
func fetchFrom(t *testing.T, path, addr string) string {
	t.Helper()
	var last string
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		out, err := exec.Command("nsenter", "--net="+path, "curl", "-s", "-m", "5", "http://"+addr+"/").CombinedOutput()
		if err == nil {
			return string(out)
		}
		last = fmt.Sprintf("%v: %s", err, out)
	}
	t.Fatalf("fetch http://%s/ from %s: %s", addr, path, last)
	return ""
}

// syncBuffer collects a workload's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// netWorkload fetches from the outside's server, prints what it got and
// its eth0's MAC, then serves "hello from NAME" on port 80.
func netWorkload(name, gw string) []string {
	script := fmt.Sprintf(`echo "got: $(wget -q -O - http://%s:8080/)"; echo "mac: $(cat /sys/class/net/eth0/address)"; `+
		`mkdir -p /www && echo "hello from %s" > /www/index.html && echo serving && exec httpd -f -p 80 -h /www`, gw, name)
	return []string{"/bin/sh", "-c", script}
}

// bootNet boots a guest of the busybox image running args with network.
func bootNet(t *testing.T, g Guest, id string, args []string, network *Network, out io.Writer) *Machine {
	t.Helper()
	spec := container.DefaultSpec(id)
	spec.Process.Args = args
	rootfs := testutil.BusyboxRootfs(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	m, err := Boot(ctx, RunConfig{ID: id, Dir: dir, Spec: spec, Guest: g, Network: network,
		Layers: []Layer{{Snapshot: rootfs, Digest: "sha256:" + strings.Repeat("ab", 32)}}},
		agent.Stdio{Stdout: out, Stderr: out})
	if err != nil {
		t.Fatalf("boot %s: %v", id, err)
	}
	t.Cleanup(func() {
		m.Kill()
		m.Wait()
		m.Destroy()
	})
	return m
}

// waitOutput waits until out shows want.
func waitOutput(t *testing.T, m *Machine, out *syncBuffer, want string) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); !strings.Contains(out.String(), want); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the workload did not print %q; it printed:\n%s\nconsole:\n%s", want, out.String(), m.vm.ConsoleTail(30))
		}
	}
}

// macOf is the MAC of eth0 in the namespace of pid.
func macOf(t *testing.T, pid int) string {
	t.Helper()
	h := nsHandle(t, fmt.Sprintf("/proc/%d/ns/net", pid))
	defer h.Close()
	l, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().HardwareAddr.String()
}

// checkQEMUConfined checks that QEMU runs in its own network namespace
// and still confined: no uid 0, no capability, seccomp, no_new_privs.
func checkQEMUConfined(t *testing.T, pid int) {
	t.Helper()
	var self, q unix.Stat_t
	if unix.Stat("/proc/thread-self/ns/net", &self) != nil || unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &q) != nil {
		t.Fatal("cannot read the network namespaces")
	}
	if self.Ino == q.Ino {
		a, _ := os.Readlink("/proc/thread-self/ns/net")
		b, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		t.Errorf("QEMU runs in the test's network namespace (%s, %s), want the VM's own", a, b)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	st := string(b)
	for _, want := range []string{"Uid:\t65534\t65534\t65534\t65534", "CapEff:\t0000000000000000", "NoNewPrivs:\t1", "Seccomp:\t2"} {
		if !strings.Contains(st, want) {
			t.Errorf("QEMU's status lacks %q:\n%s", want, st)
		}
	}
}

// TestVMNetworkAttach boots a guest (cold) whose QEMU runs in a new
// namespace that Attach gave an eth0: the workload reaches a server
// outside and serves one the outside reaches, with eth0's MAC.
func TestVMNetworkAttach(t *testing.T) {
	g := needNet(t)
	g.NoTemplates = true
	outside := testNetNS(t)
	serveIn(t, outside, "10.213.77.1", "outside-ok")
	var out syncBuffer
	var nsPath string
	attach := attachVeth(t, outside, "10.213.77.2", "10.213.77.1")
	m := bootNet(t, g, "vmnet-attach", netWorkload("attach", "10.213.77.1"), &Network{Attach: func(p string) error {
		nsPath = p
		return attach(p)
	}}, &out)
	if !strings.HasPrefix(nsPath, "/proc/") {
		t.Errorf("Attach was given %q, want a path under /proc", nsPath)
	}
	waitOutput(t, m, &out, "serving")
	if !strings.Contains(out.String(), "got: outside-ok") {
		t.Errorf("the guest did not reach the outside's server:\n%s", out.String())
	}
	if want := "mac: " + macOf(t, m.Pid()); !strings.Contains(out.String(), want) {
		t.Errorf("the guest's eth0 has not the veth's MAC (%s):\n%s", want, out.String())
	}
	if got := fetchFrom(t, outside, "10.213.77.2"); got != "hello from attach\n" {
		t.Errorf("fetched %q from the guest, want its page", got)
	}
	checkQEMUConfined(t, m.Pid())
}

// TestVMNetworkNone: without Network the guest has no card and QEMU
// stays in the caller's namespace; a Network whose namespace has no
// eth0 gives none either, and is no error.
func TestVMNetworkNone(t *testing.T) {
	g := needNet(t)
	g.NoTemplates = true
	var out syncBuffer
	m := bootNet(t, g, "vmnet-none", []string{"/bin/sh", "-c", "ls /sys/class/net; echo done"}, &Network{Attach: func(string) error { return nil }}, &out)
	waitOutput(t, m, &out, "done")
	if got := strings.Fields(out.String()); len(got) != 2 || got[0] != "lo" {
		t.Errorf("the workload's links: %q, want lo alone", got)
	}
}

// TestVMNetworkTemplateClones runs two clones of one template at once,
// each in a namespace of its own: each has its own MAC and address, and
// both answer.
func TestVMNetworkTemplateClones(t *testing.T) {
	g := needNet(t)
	if !TemplatesEnabled() {
		t.Skip("BERTH_VM_TEMPLATE turns templates off")
	}
	type vmOut struct {
		m       *Machine
		out     *syncBuffer
		outside string
		addr    string
	}
	var vms []vmOut
	for i, net := range []string{"10.213.77", "10.213.78"} {
		outside := testNetNS(t)
		serveIn(t, outside, net+".1", "outside-"+net)
		v := vmOut{out: &syncBuffer{}, outside: outside, addr: net + ".2"}
		name := fmt.Sprintf("clone%d", i)
		v.m = bootNet(t, g, "vmnet-"+name, netWorkload(name, net+".1"), &Network{Attach: attachVeth(t, outside, v.addr, net+".1")}, v.out)
		vms = append(vms, v)
	}
	macs := map[string]bool{}
	for i, v := range vms {
		if v.m.Template() == "" {
			t.Errorf("VM %d booted cold, want a clone", i)
		}
		waitOutput(t, v.m, v.out, "serving")
		if want := "got: outside-" + strings.TrimSuffix(v.addr, ".2"); !strings.Contains(v.out.String(), want) {
			t.Errorf("VM %d did not reach its outside (%s):\n%s", i, want, v.out.String())
		}
		mac := macOf(t, v.m.Pid())
		if !strings.Contains(v.out.String(), "mac: "+mac) {
			t.Errorf("VM %d's eth0 has not its veth's MAC %s:\n%s", i, mac, v.out.String())
		}
		macs[mac] = true
		if got, want := fetchFrom(t, v.outside, v.addr), fmt.Sprintf("hello from clone%d\n", i); got != want {
			t.Errorf("fetched %q from VM %d, want %q", got, i, want)
		}
		checkQEMUConfined(t, v.m.Pid())
	}
	if len(macs) != 2 {
		t.Errorf("the clones share a MAC: %v", macs)
	}
	if vms[0].m.Template() != vms[1].m.Template() {
		t.Errorf("the clones come from two templates: %s, %s", vms[0].m.Template(), vms[1].m.Template())
	}
}
