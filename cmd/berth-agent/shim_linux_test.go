package main

import (
	"os"
	"path/filepath"
	"testing"
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
	env := []string{"PATH=/nonexistent:" + dir}
	if p, _, err := lookPath("runme", env); err != nil || p != filepath.Join(dir, "runme") {
		t.Errorf("runme: %q %v", p, err)
	}
	if _, code, err := lookPath("adir", env); err == nil || code != 127 {
		t.Errorf("a directory is not a command: %d %v", code, err)
	}
	if _, code, err := lookPath("missing", env); err == nil || code != 127 {
		t.Errorf("missing: %d %v", code, err)
	}
	// Without any x bit even root may not execute it.
	if _, code, err := lookPath("noexec", env); err == nil || code != 126 {
		t.Errorf("noexec: %d %v", code, err)
	}
	if p, _, err := lookPath("./x/y", env); err != nil || p != "./x/y" {
		t.Errorf("a path is used as it is: %q %v", p, err)
	}
	if p, _, err := lookPath("sh", nil); err != nil || filepath.Base(p) != "sh" {
		t.Errorf("default PATH: %q %v", p, err)
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
