package vm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseQEMUVersion(t *testing.T) {
	for out, want := range map[string]Version{
		"QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)\nCopyright (c) 2003-2022 Fabrice Bellard\n": {7, 2},
		"QEMU emulator version 9.2.0\n":  {9, 2},
		"QEMU emulator version 10.1.2\n": {10, 1},
	} {
		if got, err := parseQEMUVersion(out); err != nil || got != want {
			t.Errorf("parse %q = %v, %v; want %v", out, got, err, want)
		}
	}
	if _, err := parseQEMUVersion("qemu-kvm 1.0\n"); err == nil || strings.Contains(err.Error(), "\n") {
		t.Errorf("parse of an unknown line: %v; want one line", err)
	}
}

// Each release gets the spelling it accepts for the chroot and the user.
func TestConfineArgsByVersion(t *testing.T) {
	cfg := Config{Dir: "/d"}
	for v, want := range map[Version]string{
		{}:      "-sandbox " + sandboxOptions + " -runas 65534:65534 -chroot /d/qemu-root",
		{7, 2}:  "-sandbox " + sandboxOptions + " -runas 65534:65534 -chroot /d/qemu-root",
		{8, 1}:  "-sandbox " + sandboxOptions + " -runas 65534:65534 -run-with chroot=/d/qemu-root",
		{9, 0}:  "-sandbox " + sandboxOptions + " -runas 65534:65534 -run-with chroot=/d/qemu-root",
		{9, 1}:  "-sandbox " + sandboxOptions + " -run-with chroot=/d/qemu-root,user=65534:65534",
		{10, 0}: "-sandbox " + sandboxOptions + " -run-with chroot=/d/qemu-root,user=65534:65534",
	} {
		cfg.QEMUVersion = v
		if got := strings.Join(confineArgs(cfg), " "); got != want {
			t.Errorf("QEMU %v: %s; want %s", v, got, want)
		}
	}
}

// The version is asked once per binary and kept; a changed binary is
// asked again.
func TestQEMUVersionCached(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "qemu")
	calls := filepath.Join(dir, "calls")
	write := func(version string) {
		script := "#!/bin/sh\necho x >> " + calls + "\necho 'QEMU emulator version " + version + "'\n"
		if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	count := func() int {
		b, _ := os.ReadFile(calls)
		return strings.Count(string(b), "x")
	}
	write("8.2.2")
	cache := filepath.Join(dir, "cache")
	for range 3 {
		if v, err := qemuVersion(bin, cache); err != nil || v != (Version{8, 2}) {
			t.Fatalf("qemuVersion = %v, %v; want 8.2", v, err)
		}
	}
	if n := count(); n != 1 {
		t.Errorf("QEMU asked %d times for three look-ups; want once", n)
	}
	write("9.1.0 (a longer line, so the size changes)")
	if v, err := qemuVersion(bin, cache); err != nil || v != (Version{9, 1}) {
		t.Fatalf("after an upgrade: %v, %v; want 9.1", v, err)
	}
	if n := count(); n != 2 {
		t.Errorf("QEMU asked %d times after an upgrade; want twice", n)
	}
}
