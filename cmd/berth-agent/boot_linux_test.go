package main

import (
	"slices"
	"testing"

	"github.com/berth-dev/berth/internal/initramfs"
)

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
