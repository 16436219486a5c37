package test

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/testutil"
)

// A VM of berth-runtime whose bundle names a network namespace (as
// dockerd's and containerd's CNI do) takes over that namespace's eth0:
// the guest has eth0's MAC and address, reaches the gateway's side, and
// answers there. The namespaces are the test's own: "pod" holds eth0
// (10.213.77.2/24), "outside" its veth peer (10.213.77.1/24) with a
// busybox httpd; no traffic leaves them.

// netnsAdd makes a named network namespace that the test's end removes.
func netnsAdd(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	name := "berth-vmnet-" + hex.EncodeToString(b)
	mustCmd(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return name
}

func TestRuntimeVMNetwork(t *testing.T) {
	t.Parallel()
	needRuntimeVM(t)
	testutil.NeedTool(t, "ip")
	testutil.NeedTool(t, "curl")
	bb := testutil.NeedTool(t, "busybox")
	rt := berthRuntime(t)
	root := runtimeRoot(t)
	pod, outside := netnsAdd(t), netnsAdd(t)
	mustCmd(t, "ip", "-n", outside, "link", "add", "vmpeer", "type", "veth", "peer", "name", "eth0", "netns", pod)
	mustCmd(t, "ip", "-n", outside, "addr", "add", "10.213.77.1/24", "dev", "vmpeer")
	mustCmd(t, "ip", "-n", outside, "link", "set", "vmpeer", "up")
	mustCmd(t, "ip", "-n", pod, "addr", "add", "10.213.77.2/24", "dev", "eth0")
	mustCmd(t, "ip", "-n", pod, "link", "set", "eth0", "up")
	mustCmd(t, "ip", "-n", pod, "route", "add", "default", "via", "10.213.77.1")
	var link []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(mustCmd(t, "ip", "-j", "-n", pod, "link", "show", "eth0")), &link); err != nil || len(link) != 1 {
		t.Fatalf("eth0's MAC: %v", err)
	}
	mac := link[0].Address

	www := t.TempDir()
	if err := os.WriteFile(filepath.Join(www, "index.html"), []byte("outside-ok"), 0o644); err != nil {
		t.Fatal(err)
	}
	httpd := exec.Command("nsenter", "--net=/run/netns/"+outside, bb, "httpd", "-f", "-p", "10.213.77.1:8080", "-h", www)
	if err := httpd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { httpd.Process.Kill(); httpd.Wait() })

	script := `mkdir -p /www; for i in 1 2 3 4 5; do got=$(wget -q -O - http://10.213.77.1:8080/) && break; sleep 1; done; ` +
		`echo "got: $got" > /www/index.html; exec httpd -f -p 80 -h /www`
	bundle := vmBundle(t, rt, func(spec map[string]any) {
		lin := spec["linux"].(map[string]any)
		nss := lin["namespaces"].([]any)
		for i, ns := range nss {
			if m := ns.(map[string]any); m["type"] == "network" {
				m["path"] = "/run/netns/" + pod
				nss[i] = m
			}
		}
	}, "sh", "-c", script)
	id := fmt.Sprintf("vmnet%d", os.Getpid())
	createQuiet(t, rt, root, bundle, id)
	defer runCmd(t, nil, rt, "--root", root, "delete", "--force", id)
	mustCmd(t, rt, "--root", root, "start", id)

	got := ""
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		out, err := exec.Command("nsenter", "--net=/run/netns/"+outside, "curl", "-s", "-m", "5", "http://10.213.77.2/").Output()
		if got = string(out); err == nil {
			break
		}
	}
	if got != "got: outside-ok\n" {
		t.Errorf("fetched %q from the guest, want the page it fetched from outside", got)
	}
	if out := mustCmd(t, rt, "--root", root, "exec", id, "cat", "/sys/class/net/eth0/address"); strings.TrimSpace(out) != mac {
		t.Errorf("the guest's eth0 has MAC %q, want the pod's eth0's %s", out, mac)
	}

	// QEMU runs in the pod's namespace, confined as ever.
	var q struct{ Pid int }
	b, err := os.ReadFile(filepath.Join(root, id, "qemu.json"))
	if err != nil || json.Unmarshal(b, &q) != nil || q.Pid == 0 {
		t.Fatalf("qemu.json: %q %v", b, err)
	}
	var podNS, qemuNS unix.Stat_t
	if unix.Stat("/run/netns/"+pod, &podNS) != nil || unix.Stat(fmt.Sprintf("/proc/%d/ns/net", q.Pid), &qemuNS) != nil || podNS.Ino != qemuNS.Ino {
		t.Errorf("QEMU is not in the pod's network namespace")
	}
	checkConfined(t, q.Pid, "/"+id)
	mustCmd(t, rt, "--root", root, "kill", id, "KILL")
	waitGone(t, q.Pid)
}

// TestVMFileBind: a file bind-mounted into a VM (as the network layer's
// /etc/hosts and /etc/resolv.conf will be) shows up in the guest, read
// only where asked, for berth run --vm as for berth-runtime's bundles.
func TestVMFileBind(t *testing.T) {
	img := busybox(t)
	needVM(t)
	t.Parallel()
	f := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(f, []byte("10.213.77.2 vmbox\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := must(t, "run", "--rm", "--vm", "-v", f+":/etc/hosts:ro", img, "sh", "-c", "cat /etc/hosts; echo x >> /etc/hosts || echo read-only")
	if out != "10.213.77.2 vmbox\nread-only\n" {
		t.Errorf("the guest's /etc/hosts: %q", out)
	}
}
