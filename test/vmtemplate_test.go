package test

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A VM starts from a saved guest of its configuration once there is one:
// same output, its own clock, its own randomness; a damaged template is
// dropped and the VM boots cold; BERTH_VM_TEMPLATE=off boots cold.
func TestVMTemplate(t *testing.T) {
	img := busybox(t)
	needVM(t)
	t.Parallel()
	// A memory size no other test uses (guest RAM is the limit plus
	// 128 MiB, at least 256 MiB): this test's own template.
	args := []string{"--vm", "--memory", "201m", img, "sh", "-c",
		"echo out; echo err >&2; date +%s; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' '; exit 3"}
	run := func(name string, flags ...string) (guestTime int64, random string) {
		t.Helper()
		before := time.Now().Unix()
		r := berth(t, append(append([]string{"run", "--name", name}, flags...), args...)...)
		after := time.Now().Unix()
		t.Cleanup(func() { berth(t, "rm", "-f", name) })
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if r.code != 3 || r.stderr != "err\n" || len(lines) != 3 || lines[0] != "out" {
			t.Fatalf("%s: exit %d, stdout %q, stderr %q", name, r.code, r.stdout, r.stderr)
		}
		guestTime, _ = strconv.ParseInt(lines[1], 10, 64)
		if guestTime < before-1 || guestTime > after+1 {
			t.Errorf("%s: guest clock %d, host clock %d..%d", name, guestTime, before, after)
		}
		return guestTime, lines[2]
	}
	// The template a VM came from, as inspect names it.
	templateOf := func(name string) string {
		t.Helper()
		in := inspect(t, name)
		key, _ := in["vm_template"].(string)
		if in["vm_start"] != "template" || key == "" {
			t.Fatalf("%s: vm_start %v, vm_template %v: not from a template", name, in["vm_start"], in["vm_template"])
		}
		dir := filepath.Join(berthRoot, "vm", "templates", key)
		for _, f := range []string{"ram", "state", "scratch"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Fatalf("%s: template: %v", name, err)
			}
		}
		return dir
	}
	cold := func(name, dir string) {
		t.Helper()
		if in := inspect(t, name); in["vm_start"] != "boot" || in["vm_template"] != nil {
			t.Errorf("%s: vm_start %v, vm_template %v, want a cold boot", name, in["vm_start"], in["vm_template"])
		}
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("%s: the damaged template %s stayed", name, dir)
		}
	}
	run("tmpl-first")
	dir := templateOf("tmpl-first")
	// The template's guest clock stopped when it was saved: a clone
	// made later must not show its time.
	time.Sleep(3 * time.Second)
	_, r1 := run("tmpl-clone1")
	_, r2 := run("tmpl-clone2")
	for _, name := range []string{"tmpl-clone1", "tmpl-clone2"} {
		if d := templateOf(name); d != dir {
			t.Errorf("%s: from template %s, want %s", name, d, dir)
		}
	}
	if r1 == r2 {
		t.Errorf("two clones read the same random bytes %s", r1)
	}

	// A template whose state does not load: the VM still runs, cold,
	// and the template goes.
	if err := os.Truncate(filepath.Join(dir, "state"), 100); err != nil {
		t.Fatal(err)
	}
	run("tmpl-bad-state")
	cold("tmpl-bad-state", dir)

	// A template whose guest hangs when restored (its RAM is noise):
	// the same, once the wait for its agent ends. The VM before it makes
	// a new template.
	run("tmpl-remade")
	dir = templateOf("tmpl-remade")
	noise := make([]byte, 64<<20)
	rand.Read(noise)
	f, err := os.OpenFile(filepath.Join(dir, "ram"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Write(noise) // the guest kernel's first 64 MiB; the size stays
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	// A boot timeout of at least the clone's own bound (30 s): a shorter
	// one running out says nothing of the template, which stays.
	run("tmpl-bad-ram", "--boot-timeout", "45s")
	cold("tmpl-bad-ram", dir)

	// Three first starts of a new configuration at once: one template,
	// made once (the traces of the three runs say how many were made), and
	// all three from it.
	args[2] = "203m"
	var wg sync.WaitGroup
	var made atomic.Int32
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func(name string) { // t.Fatal belongs to the test's goroutine: Errorf here
			defer wg.Done()
			r := berthEnvIn(t, []string{"BERTH_TRACE=1"}, nil, append([]string{"run", "--name", name}, args...)...)
			t.Cleanup(func() { berth(t, "rm", "-f", name) })
			made.Add(int32(strings.Count(r.stderr, "template made")))
			var errLines []string
			for _, l := range strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n") {
				if !strings.HasPrefix(l, "berth trace:") {
					errLines = append(errLines, l)
				}
			}
			if r.code != 3 || !strings.HasPrefix(r.stdout, "out\n") || strings.Join(errLines, "\n") != "err" {
				t.Errorf("%s: exit %d, stdout %q, stderr %q", name, r.code, r.stdout, r.stderr)
			}
		}("tmpl-together" + strconv.Itoa(i))
	}
	wg.Wait()
	if n := made.Load(); n != 1 {
		t.Errorf("three first starts of one configuration made %d templates, want 1", n)
	}
	first := templateOf("tmpl-together0")
	for i := 1; i < 3; i++ {
		if d := templateOf("tmpl-together" + strconv.Itoa(i)); d != first {
			t.Errorf("tmpl-together%d: from template %s, tmpl-together0 from %s", i, d, first)
		}
	}

	// Templates off: a cold boot, and no template made (the trace says
	// what berth did).
	r := berthEnvIn(t, []string{"BERTH_VM_TEMPLATE=off", "BERTH_TRACE=1"}, nil, "run", "--rm", "--vm", img, "echo", "cold")
	if r.code != 0 || r.stdout != "cold\n" || !strings.Contains(r.stderr, "vm: qemu started") || strings.Contains(r.stderr, "template") {
		t.Errorf("BERTH_VM_TEMPLATE=off: exit %d, stdout %q, stderr:\n%s", r.code, r.stdout, r.stderr)
	}
	// Other tests run VMs (and make their own templates) meanwhile: only
	// this configuration's build directory must be gone.
	tmp := filepath.Join(berthRoot, "vm", "templates", ".tmp-"+filepath.Base(first))
	if _, err := os.Lstat(tmp); err == nil {
		t.Errorf("left behind: %s", tmp)
	}
}
