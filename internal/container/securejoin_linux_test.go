package container

import (
	"os"
	"path/filepath"
	"testing"
)

func TestResolveInStaysInRoot(t *testing.T) {
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "a/b"), 0o755))
	must(os.Symlink("/etc", filepath.Join(root, "abs")))         // absolute: restarts at root
	must(os.Symlink("../../../..", filepath.Join(root, "a/up"))) // climbs past root
	must(os.Symlink("b", filepath.Join(root, "a/rel")))          // relative, inside
	must(os.Symlink("loop2", filepath.Join(root, "loop1")))      // a cycle
	must(os.Symlink("loop1", filepath.Join(root, "loop2")))
	for in, want := range map[string]string{
		"/abs/passwd":      "/etc/passwd",
		"/a/up/etc/shadow": "/etc/shadow",
		"/../../x":         "/x",
		"/a/rel/c":         "/a/b/c",
		"/new/dir/file":    "/new/dir/file",
		"/new/../a/./b":    "/a/b",
	} {
		got, err := resolveIn(root, in)
		if err != nil || got != filepath.Join(root, want) {
			t.Errorf("resolveIn(%q) = %q, %v; want %q", in, got, err, filepath.Join(root, want))
		}
	}
	if _, err := resolveIn(root, "/loop1/x"); err == nil {
		t.Error("symlink loop: no error")
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "tool"), []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "data"), []byte("x"), 0o644)
	if p, err := lookPath("tool", "/nonexistent:"+dir, "/"); err != nil || p != filepath.Join(dir, "tool") {
		t.Errorf("tool: %q %v", p, err)
	}
	for name, code := range map[string]int{"data": 126, "missing": 127, dir + "/missing": 127, dir: 126} {
		_, err := lookPath(name, dir, "/")
		if ee, ok := err.(*ExecError); !ok || ee.Code != code {
			t.Errorf("%s: got %v, want code %d", name, err, code)
		}
	}
}
