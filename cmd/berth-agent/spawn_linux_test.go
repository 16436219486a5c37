package main

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/initramfs"
)

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "runme"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "noexec"), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "owneronly"), []byte("#!/bin/sh\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	root := cred{}
	env := []string{"PATH=/nonexistent:" + dir}
	if p, _, err := lookPath("runme", env, "/", root); err != nil || p != filepath.Join(dir, "runme") {
		t.Errorf("runme: %q %v", p, err)
	}
	if _, code, err := lookPath("adir", env, "/", root); err == nil || code != 127 {
		t.Errorf("a directory is not a command: %d %v", code, err)
	}
	if _, code, err := lookPath("missing", env, "/", root); err == nil || code != 127 {
		t.Errorf("missing: %d %v", code, err)
	}
	// Without any x bit even root may not execute it.
	if _, code, err := lookPath("noexec", env, "/", root); err == nil || code != 126 {
		t.Errorf("noexec: %d %v", code, err)
	}
	// Checked as the process's user, not as the agent (root).
	if p, _, err := lookPath("owneronly", env, "/", root); err != nil || p != filepath.Join(dir, "owneronly") {
		t.Errorf("owneronly as root: %q %v", p, err)
	}
	if _, code, err := lookPath("owneronly", env, "/", cred{uid: 4242, gid: 4242}); err == nil || code != 126 {
		t.Errorf("owneronly as another user: %d %v", code, err)
	}
	// A relative PATH entry is relative to the process's directory.
	if p, _, err := lookPath("runme", []string{"PATH=."}, dir, root); err != nil || p != filepath.Join(dir, "runme") {
		t.Errorf("relative PATH entry: %q %v", p, err)
	}
	if p, _, err := lookPath("./x/y", env, "/", root); err != nil || p != "./x/y" {
		t.Errorf("a path is used as it is: %q %v", p, err)
	}
	if p, _, err := lookPath("sh", nil, "/", root); err != nil || filepath.Base(p) != "sh" {
		t.Errorf("default PATH: %q %v", p, err)
	}
}

func TestSearchable(t *testing.T) {
	dir, err := os.MkdirTemp("", "searchable-") // t.TempDir's parent is private
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	closed := filepath.Join(dir, "closed")
	if err := os.MkdirAll(filepath.Join(closed, "in"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	if ok, err := searchable(filepath.Join(closed, "in"), cred{}); !ok {
		t.Errorf("root: %v", err)
	}
	if ok, err := searchable(dir, cred{uid: 4242, gid: 4242}); !ok {
		t.Errorf("a user cannot search an open directory: %v", err)
	}
	if ok, _ := searchable(filepath.Join(closed, "in"), cred{uid: 4242, gid: 4242}); ok {
		t.Errorf("a user passed a directory it may not search")
	}
	if ok, _ := searchable(filepath.Join(dir, "missing"), cred{}); ok {
		t.Errorf("a missing directory is searchable")
	}
}

func TestLimits(t *testing.T) {
	res, lims, err := limits(nil)
	if err != nil || len(res) != 1 || res[0] != unix.RLIMIT_NOFILE || lims[0] != defaultNofile {
		t.Errorf("no rlimits: %v %v %v", res, lims, err)
	}
	res, lims, err = limits([]agent.Rlimit{{Type: "RLIMIT_NOFILE", Soft: 10, Hard: 20}, {Type: "RLIMIT_CORE"}})
	if err != nil || len(res) != 3 || lims[1] != (unix.Rlimit{Cur: 10, Max: 20}) || res[2] != unix.RLIMIT_CORE {
		t.Errorf("two rlimits: %v %v %v", res, lims, err)
	}
	var se *agent.StartError
	if _, _, err := limits([]agent.Rlimit{{Type: "RLIMIT_BOGUS"}}); !errors.As(err, &se) || se.Code != 125 {
		t.Errorf("unknown rlimit: %v", err)
	}
	if _, _, err := limits([]agent.Rlimit{{Type: "RLIMIT_CORE", Soft: 2, Hard: 1}}); !errors.As(err, &se) || se.Code != 125 {
		t.Errorf("soft above hard: %v", err)
	}
}

func TestModuleListPath(t *testing.T) {
	if moduleList != initramfs.ModulesList {
		t.Errorf("the agent reads %s, the initramfs has %s", moduleList, initramfs.ModulesList)
	}
}

func TestCmdlineValue(t *testing.T) {
	cl := "console=ttyS0 quiet berth.port=ctl panic=-1\n"
	if v := cmdlineValue(cl, "berth.port", "agent"); v != "ctl" {
		t.Errorf("got %q", v)
	}
	if v := cmdlineValue("console=ttyS0", "berth.port", "agent"); v != "agent" {
		t.Errorf("default: got %q", v)
	}
}

func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/mnt/a\040b\134c`); got != `/mnt/a b\c` {
		t.Errorf("got %q", got)
	}
}

func TestParseRoot(t *testing.T) {
	for _, tc := range []struct {
		in      string
		layers  []string
		scratch string
		bad     bool
	}{
		{in: ""},
		{in: "layer0", layers: []string{"layer0"}},
		{in: "layer0,layer1/scratch", layers: []string{"layer0", "layer1"}, scratch: "scratch"},
		{in: "/scratch", bad: true},
		{in: "layer0,,layer2", bad: true},
		{in: "layer0/", bad: true},
	} {
		r, err := parseRoot(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("parseRoot(%q) = %+v, want an error", tc.in, r)
			}
			continue
		}
		if err != nil || (tc.in == "") != (r == nil) {
			t.Errorf("parseRoot(%q) = %+v, %v", tc.in, r, err)
			continue
		}
		if r != nil && (!slices.Equal(r.Layers, tc.layers) || r.Scratch != tc.scratch) {
			t.Errorf("parseRoot(%q) = %+v", tc.in, r)
		}
	}
}
