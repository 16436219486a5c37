package test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// templates lists the saved guests in the shared root.
func templates(t *testing.T) map[string]bool {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(berthRoot, "vm", "templates"))
	m := map[string]bool{}
	for _, e := range ents {
		if e.IsDir() {
			m[e.Name()] = true
		}
	}
	return m
}

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
	run := func(name string, env ...string) (guestTime int64, random string) {
		t.Helper()
		before := time.Now().Unix()
		r := berthEnvIn(t, env, nil, append([]string{"run", "--name", name}, args...)...)
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
	had := templates(t)
	run("tmpl-first")
	var made []string
	for k := range templates(t) {
		if !had[k] {
			made = append(made, k)
		}
	}
	if len(made) != 1 {
		t.Fatalf("the first run made templates %v, want one", made)
	}
	dir := filepath.Join(berthRoot, "vm", "templates", made[0])
	for _, f := range []string{"ram", "state", "scratch"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("template: %v", err)
		}
	}
	// The template's guest clock stopped when it was saved: a clone
	// made later must not show its time.
	time.Sleep(3 * time.Second)
	_, r1 := run("tmpl-clone1")
	_, r2 := run("tmpl-clone2")
	for _, name := range []string{"tmpl-clone1", "tmpl-clone2"} {
		if s := inspect(t, name)["vm_start"]; s != "template" {
			t.Errorf("%s: vm_start %v, want template", name, s)
		}
	}
	if r1 == r2 {
		t.Errorf("two clones read the same random bytes %s", r1)
	}

	// A damaged template: the VM still runs, cold, and the template goes.
	if err := os.Truncate(filepath.Join(dir, "state"), 100); err != nil {
		t.Fatal(err)
	}
	run("tmpl-damaged")
	if s := inspect(t, "tmpl-damaged")["vm_start"]; s != "boot" {
		t.Errorf("damaged template: vm_start %v, want boot", s)
	}
	if st, err := os.Stat(filepath.Join(dir, "state")); err == nil && st.Size() == 100 {
		t.Error("the damaged template stayed")
	}

	// Templates off: a cold boot, and no template made (the trace says
	// what berth did).
	r := berthEnvIn(t, []string{"BERTH_VM_TEMPLATE=off", "BERTH_TRACE=1"}, nil, "run", "--rm", "--vm", img, "echo", "cold")
	if r.code != 0 || r.stdout != "cold\n" || !strings.Contains(r.stderr, "vm: qemu started") || strings.Contains(r.stderr, "template") {
		t.Errorf("BERTH_VM_TEMPLATE=off: exit %d, stdout %q, stderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if tmp, _ := filepath.Glob(filepath.Join(berthRoot, "vm", "templates", ".tmp-*")); len(tmp) > 0 {
		t.Errorf("left behind: %v", tmp)
	}
}
