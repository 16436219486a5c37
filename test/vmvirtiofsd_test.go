package test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// virtiofsd, which serves a VM's -v shares, is confined for both front
// ends: no_new_privs from its start, an empty bounding set once its
// sandbox is up, in the instance's host cgroup; the process that serves
// the guest has its seccomp filter, sees only the shared directory as its
// root, and keeps only the capabilities a file server acting as any
// owner needs (a read-only share's, only CAP_DAC_READ_SEARCH).

// Capability masks (linux/capability.h) of virtiofsd's serving process.
const (
	// chown, dac_override, fowner, fsetid, setgid, setuid, mknod, setfcap
	virtiofsdCapsRW = "00000000880000db"
	virtiofsdCapsRO = "0000000000000004" // dac_read_search
)

// virtiofsdProc is one virtiofsd process as /proc shows it.
type virtiofsdProc struct {
	pid, ppid int
	status    map[string]string
	cgroups   []string // its cgroup in each hierarchy with controllers
	source    string   // its -o source=
}

// virtiofsdsIn lists the virtiofsd processes whose cgroup paths contain
// cg.
func virtiofsdsIn(t *testing.T, cg string) []virtiofsdProc {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	var out []virtiofsdProc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		args := strings.Split(string(cmd), "\x00")
		if err != nil || filepath.Base(args[0]) != "virtiofsd" {
			continue
		}
		cgb, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if !strings.Contains(string(cgb), cg) {
			continue
		}
		p := virtiofsdProc{pid: pid, status: map[string]string{}}
		for _, a := range args {
			if v, ok := strings.CutPrefix(a, "source="); ok {
				p.source = v
			}
		}
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		for _, l := range strings.Split(string(st), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok {
				p.status[k] = strings.TrimSpace(v)
			}
		}
		p.ppid, _ = strconv.Atoi(p.status["PPid"])
		// The controllers' hierarchies: v1's where there are any (on a
		// hybrid host the unified one has none, and berth uses it not),
		// else v2's.
		var unified string
		for _, l := range strings.Split(strings.TrimSpace(string(cgb)), "\n") {
			parts := strings.SplitN(l, ":", 3)
			switch {
			case len(parts) != 3 || strings.HasPrefix(parts[1], "name="):
			case parts[0] == "0":
				unified = parts[2]
			default:
				p.cgroups = append(p.cgroups, parts[2])
			}
		}
		if len(p.cgroups) == 0 {
			p.cgroups = []string{unified}
		}
		out = append(out, p)
	}
	return out
}

// checkVirtiofsd checks the virtiofsd processes in cgroup cg (see above):
// one serving process per share in shares (source: read-only), each
// with its parent. It returns their pids.
func checkVirtiofsd(t *testing.T, cg string, shares map[string]bool) []int {
	t.Helper()
	procs := virtiofsdsIn(t, cg)
	var pids []int
	serving := map[string]bool{}
	for _, p := range procs {
		pids = append(pids, p.pid)
		for _, c := range p.cgroups {
			if !strings.HasSuffix(c, cg) {
				t.Errorf("virtiofsd %d: in cgroup %s, want the instance's (%s)", p.pid, c, cg)
			}
		}
		if p.status["NoNewPrivs"] != "1" || p.status["CapBnd"] != "0000000000000000" || p.status["CapInh"] != "0000000000000000" {
			t.Errorf("virtiofsd %d: NoNewPrivs %s, CapBnd %s, CapInh %s; want 1 and none", p.pid, p.status["NoNewPrivs"], p.status["CapBnd"], p.status["CapInh"])
		}
		ro, ok := shares[p.source]
		if !ok {
			t.Errorf("virtiofsd %d serves %q, not a share of the instance", p.pid, p.source)
			continue
		}
		if !slices.ContainsFunc(procs, func(q virtiofsdProc) bool { return q.pid == p.ppid }) {
			// The parent, which only waits for its child: no capability.
			if p.status["CapEff"] != "0000000000000000" || p.status["CapPrm"] != "0000000000000000" {
				t.Errorf("virtiofsd %d (the waiting parent): CapEff %s CapPrm %s, want none", p.pid, p.status["CapEff"], p.status["CapPrm"])
			}
			continue
		}
		serving[p.source] = true
		want := virtiofsdCapsRW
		if ro {
			want = virtiofsdCapsRO
		}
		if p.status["CapEff"] != want || p.status["CapPrm"] != want || p.status["Seccomp"] != "2" {
			t.Errorf("virtiofsd %d (serving %s, read-only %v): CapEff %s CapPrm %s Seccomp %s, want %s, %s and 2",
				p.pid, p.source, ro, p.status["CapEff"], p.status["CapPrm"], p.status["Seccomp"], want, want)
		}
		// Its root is the shared directory: it holds the share's
		// file, and none of the host's.
		root := fmt.Sprintf("/proc/%d/root", p.pid)
		if _, err := os.Stat(filepath.Join(root, "shared")); err != nil {
			t.Errorf("virtiofsd %d's root is not the share: %v", p.pid, err)
		}
		if _, err := os.Stat(filepath.Join(root, "etc", "shadow")); !os.IsNotExist(err) {
			t.Errorf("virtiofsd %d sees the host's /etc/shadow: %v", p.pid, err)
		}
	}
	for src := range shares {
		if !serving[src] {
			t.Errorf("no virtiofsd serves %s in cgroup %s (found %d virtiofsd processes)", src, cg, len(procs))
		}
	}
	return pids
}

// shareDir is a directory to share, holding a file "shared" that only
// its owner (uid 1000) may read: virtiofsd reads it for the guest's root
// as that file's owner would.
func shareDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	f := filepath.Join(dir, "shared")
	if err := os.WriteFile(f, []byte("from host\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(f, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestVMConfinedVirtiofsd(t *testing.T) {
	img := busybox(t)
	needVM(t)
	t.Parallel()
	rw, ro := shareDir(t), shareDir(t)
	name := "confined-virtiofsd"
	must(t, "run", "-d", "--vm", "--name", name, "-v", rw+":/rw", "-v", ro+":/ro:ro", img, "sleep", "1000")
	t.Cleanup(func() { berth(t, "rm", "-f", name) })
	id, _ := inspect(t, name)["id"].(string)
	// Confined, it still serves files of any owner, and writes as the
	// guest's root where the share allows it.
	r := berth(t, "exec", name, "sh", "-c", "cat /rw/shared /ro/shared && echo new > /rw/new && ! touch /ro/new")
	if r.code != 0 || r.stdout != "from host\nfrom host\n" {
		t.Fatalf("shares: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if b, err := os.ReadFile(filepath.Join(rw, "new")); err != nil || string(b) != "new\n" {
		t.Errorf("write through the read-write share: %q %v", b, err)
	}
	pids := checkVirtiofsd(t, "/berth/"+id, map[string]bool{rw: false, ro: true})

	// Nothing of virtiofsd is left once the VM is removed.
	must(t, "rm", "-f", name)
	for _, pid := range pids {
		waitGone(t, pid)
	}
	if left := virtiofsdsIn(t, "/berth/"+id); len(left) > 0 {
		t.Errorf("%d virtiofsd processes left after rm -f", len(left))
	}
}

func TestRuntimeVMConfinedVirtiofsd(t *testing.T) {
	t.Parallel()
	needRuntimeVM(t)
	rt := berthRuntime(t)
	root := runtimeRoot(t)
	id := fmt.Sprintf("vmvfs%d", os.Getpid())
	share := shareDir(t)
	bundle := vmBundle(t, rt, func(spec map[string]any) {
		mounts, _ := spec["mounts"].([]any)
		spec["mounts"] = append(mounts, map[string]any{"destination": "/data", "type": "bind", "source": share, "options": []string{"rbind", "rw"}})
	}, "sh", "-c", "cat /data/shared > /data/copy; sleep 1000")
	createQuiet(t, rt, root, bundle, id)
	defer runCmd(t, nil, rt, "--root", root, "delete", "--force", id)
	mustCmd(t, rt, "--root", root, "start", id)
	waitFor(t, "the workload to copy the shared file", func() bool {
		b, _ := os.ReadFile(filepath.Join(share, "copy"))
		return string(b) == "from host\n"
	})
	// virtiofsd is in the cgroup the bundle asked for, with QEMU.
	pids := checkVirtiofsd(t, "/"+id, map[string]bool{share: false})
	mustCmd(t, rt, "--root", root, "kill", id, "KILL")
	for _, pid := range pids {
		waitGone(t, pid)
	}
	// virtiofsd may end before the owner has recorded the VM's end.
	waitFor(t, "the VM to stop", func() bool {
		return strings.Contains(mustCmd(t, rt, "--root", root, "state", id), `"stopped"`)
	})
	mustCmd(t, rt, "--root", root, "delete", id)
	checkNoVMLeftovers(t, id, filepath.Join(root, id))
}
