package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testutil"
)

// Tests that berth-runtime's containers and VMs get the network their
// engine gives the pod: dockerd's bridge with published ports, and a
// network namespace wired by the CNI bridge plugin as containerd's CRI
// plugin wires it. Every daemon and plugin runs inside a lab's host
// namespace (newNetLab), so bridges, iptables rules and proxies never
// touch the machine's own network.

// netRow is one way of running the workload: as a container, or as a VM
// (the berth-runtime-vm name).
type netRow struct {
	name string
	vm   bool
}

var netRows = []netRow{{"container", false}, {"vm", true}}

// inRow is the lab with t as its test, for helpers called by a subtest.
func (l *netLab) inRow(t *testing.T) *netLab {
	c := *l
	c.t = t
	return &c
}

// wantOK fetches url from inside namespace ns and fails the test unless
// the answer is "ok NAME".
func (l *netLab) wantOK(ns, url, name string) {
	l.t.Helper()
	body, err := l.get(ns, url)
	if err != nil || body != "ok "+name+"\n" {
		l.t.Errorf("GET %s from namespace %s: %q, %v; want %q", url, ns, body, err, "ok "+name+"\n")
	}
}

// TestDockerBridgeNetwork: dockerd with its default bridge, iptables and
// userland proxy (all in the lab's host namespace) runs httpd with
// `-p PORT:80` on berth-runtime, as a container ("berth") and as a VM
// ("berth-vm", the berth-runtime-vm symlink): the published port answers
// from the outside namespace at the host's address (DNAT) and from the
// host's loopback (docker-proxy).
func TestDockerBridgeNetwork(t *testing.T) {
	testutil.NeedRoot(t, "dockerd and containers need root")
	dockerd := testutil.NeedTool(t, "dockerd")
	testutil.NeedTool(t, "iptables")     // dockerd's bridge driver
	testutil.NeedTool(t, "docker-proxy") // its userland proxy, for loopback
	docker := "/usr/bin/docker"
	if _, err := os.Stat(docker); err != nil {
		testutil.Missing(t, "needs docker.io's /usr/bin/docker")
	}
	rt := berthRuntime(t)
	vmrt := vmRuntime(t, rt)
	archive := rtArchive(t)
	l := newNetLab(t)
	runtimes := fmt.Sprintf(`{"runtimes": {"berth": {"path": %q}, "berth-vm": {"path": %q}}}`, rt, vmrt)
	dk, _ := startDockerd(t, dockerd, docker, "dkn-", runtimes, archive, l.host)

	for i, row := range netRows {
		t.Run(row.name, func(t *testing.T) {
			runtime := "berth"
			if row.vm {
				needRuntimeVM(t)
				runtime = "berth-vm"
			}
			port := 8080 + i
			name := fmt.Sprintf("dknet%d-%s", os.Getpid(), row.name)
			id := strings.TrimSpace(mustCmd(t, docker, dk(append([]string{"run", "-d", "--name", name, "--runtime", runtime,
				"-p", fmt.Sprintf("%d:80", port), rtImage}, httpdCmd(name)...)...)...))
			t.Cleanup(func() { runCmd(t, nil, docker, dk("rm", "-f", id)...) })
			// httpd answers inside before it is asked from outside.
			waitFor(t, name+"'s httpd", func() bool {
				return runCmd(t, nil, docker, dk("exec", id, "wget", "-qO-", "http://127.0.0.1/")...).stdout == "ok "+name+"\n"
			})
			rl := l.inRow(t)
			rl.wantOK(l.outside, fmt.Sprintf("http://%s:%d/", labHostIP, port), name)
			rl.wantOK(l.host, fmt.Sprintf("http://127.0.0.1:%d/", port), name)
			mustCmd(t, docker, dk("rm", "-f", id)...)
			if row.vm {
				checkNoVMLeftovers(t, id, "")
			}
		})
	}
}

// cniBridge is a network of the CNI bridge plugin (Debian's
// containernetworking-plugins) run by hand, as containerd's CRI plugin
// runs it, with the lab's host namespace as its own: the bridge and the
// host ends of the veths are made there.
type cniBridge struct {
	l       *netLab
	conf    []byte // the bridge's
	dataDir string // host-local's reservations
	dir     string // the plugins
}

// cniLoopback is the configuration of the loopback plugin, which the CRI
// plugin runs for every pod besides its network's.
const cniLoopback = `{"cniVersion": "1.0.0", "name": "cni-loopback", "type": "loopback"}`

const (
	cniBridgeName = "cni-bt0"
	cniSubnet     = "10.213.7.0/24"
)

func newCNIBridge(t *testing.T, l *netLab) *cniBridge {
	t.Helper()
	dir := "/usr/lib/cni"
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			testutil.Missing(t, "needs the CNI plugin %s in %s (Debian's containernetworking-plugins)", p, dir)
		}
	}
	c := &cniBridge{l: l, dataDir: t.TempDir(), dir: dir}
	conf, err := json.Marshal(map[string]any{
		"cniVersion": "1.0.0",
		"name":       "berthtest",
		"type":       "bridge",
		"bridge":     cniBridgeName,
		"isGateway":  true,
		"ipMasq":     false,
		"ipam": map[string]any{
			"type":    "host-local",
			"ranges":  [][]map[string]string{{{"subnet": cniSubnet}}},
			"dataDir": c.dataDir,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	c.conf = conf
	return c
}

// exec runs a plugin's command (with its configuration conf) on
// interface ifname of the pod namespace pod.
func (c *cniBridge) exec(plugin string, conf []byte, command, pod, ifname, id string) ([]byte, error) {
	cmd := exec.Command("nsenter", "--net=/run/netns/"+c.l.host, filepath.Join(c.dir, plugin))
	cmd.Env = []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + id, "CNI_NETNS=/run/netns/" + pod,
		"CNI_IFNAME=" + ifname, "CNI_PATH=" + c.dir, "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Stdin = bytes.NewReader(conf)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("CNI %s %s: %v: %s%s", plugin, command, err, out, errb.Bytes())
	}
	return out, nil
}

// addPod makes a pod network namespace for container id, brings its
// loopback up and attaches it to the bridge (CNI ADD of both plugins);
// it returns the namespace's name and the pod's address. When the test
// ends the pod is detached (CNI DEL) and its namespace removed.
func (c *cniBridge) addPod(t *testing.T, id string) (pod string, ip netip.Addr) {
	t.Helper()
	pod = fmt.Sprintf("btp%d-%s", os.Getpid(), id)
	ipCmd(t, "netns", "add", pod)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", pod).Run() })
	if _, err := c.exec("loopback", []byte(cniLoopback), "ADD", pod, "lo", id); err != nil {
		t.Fatal(err)
	}
	out, err := c.exec("bridge", c.conf, "ADD", pod, "eth0", id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := c.exec("bridge", c.conf, "DEL", pod, "eth0", id); err != nil {
			t.Error(err)
		}
	})
	var res struct {
		IPs []struct{ Address string }
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.IPs) != 1 {
		t.Fatalf("CNI ADD result %s: %v", out, err)
	}
	p, err := netip.ParsePrefix(res.IPs[0].Address)
	if err != nil {
		t.Fatalf("CNI ADD result %s: %v", out, err)
	}
	return pod, p.Addr()
}

// leftovers lists what the bridge network still holds: host-local's
// reservations and veths on the bridge.
func (c *cniBridge) leftovers() []string {
	var left []string
	files, _ := filepath.Glob(filepath.Join(c.dataDir, "berthtest", "*"))
	for _, f := range files {
		if _, err := netip.ParseAddr(filepath.Base(f)); err == nil {
			left = append(left, "reservation "+f)
		}
	}
	out, _ := c.l.sh(c.l.host, "ip", "-o", "link", "show", "master", cniBridgeName)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line != "" {
			left = append(left, "port "+line)
		}
	}
	return left
}

// TestContainerdCNIBridgeNetwork: containerd runs httpd on berth-runtime
// (ctr run --runc-binary, joining a pod namespace with --with-ns) as a
// container and as a VM (the berth-runtime-vm symlink), each in a pod
// namespace the CNI bridge plugin attached to its bridge in the lab's
// host namespace: each answers at its pod address from the host
// namespace. Once the pods are detached (CNI DEL), nothing of them is
// left on the bridge or in host-local's reservations.
func TestContainerdCNIBridgeNetwork(t *testing.T) {
	testutil.NeedRoot(t, "containerd and containers need root")
	containerd := testutil.NeedTool(t, "containerd")
	ctr := testutil.NeedTool(t, "ctr")
	rt := berthRuntime(t)
	vmrt := vmRuntime(t, rt)
	archive := rtArchive(t)
	l := newNetLab(t)
	cni := newCNIBridge(t, l)
	ns := "berthnet"
	c, dir := startContainerd(t, containerd, ctr, "ctn-", ns, archive)

	for _, row := range netRows {
		t.Run(row.name, func(t *testing.T) {
			bin := rt
			if row.vm {
				needRuntimeVM(t)
				bin = vmrt
			}
			id := fmt.Sprintf("ctnet%d-%s", os.Getpid(), row.name)
			pod, ip := cni.addPod(t, id)
			mustCmd(t, ctr, c(append([]string{"run", "-d", "--with-ns", "network:/run/netns/" + pod, "--runc-binary", bin, rtImage, id}, httpdCmd(id)...)...)...)
			t.Cleanup(func() {
				runCmd(t, nil, ctr, c("task", "kill", "-s", "KILL", id)...)
				runCmd(t, nil, ctr, c("task", "rm", "-f", id)...)
				runCmd(t, nil, ctr, c("container", "rm", id)...)
			})
			waitFor(t, id+"'s httpd", func() bool {
				return runCmd(t, nil, ctr, c("task", "exec", "--exec-id", "ready", id, "wget", "-qO-", "http://127.0.0.1/")...).stdout == "ok "+id+"\n"
			})
			l.inRow(t).wantOK(l.host, "http://"+netip.AddrPortFrom(ip, 80).String()+"/", id)
			mustCmd(t, ctr, c("task", "kill", "-s", "KILL", id)...)
			waitFor(t, id+" to stop", func() bool {
				out, _ := exec.Command(ctr, c("task", "ls")...).Output()
				return !strings.Contains(string(out), "RUNNING")
			})
			mustCmd(t, ctr, c("task", "rm", id)...)
			mustCmd(t, ctr, c("container", "rm", id)...)
			if row.vm {
				checkNoVMLeftovers(t, id, "")
			}
		})
	}
	if left := cni.leftovers(); len(left) != 0 {
		t.Errorf("left by the pods: %v", left)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "state", "io.containerd.runtime.v2.task", ns)); len(ents) != 0 {
		t.Errorf("tasks left: %v", ents)
	}
}
