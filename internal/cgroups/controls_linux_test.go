package cgroups

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/errdefs"
)

// writeControls on directories laid out like a cgroup's: a file is
// written, never made; of Alts the first present is; a missing file or
// controller is ErrNotSupported in one line naming it.
func TestWriteControls(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"memory.low", "io.bfq.weight"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	in := func(c Control) (string, string) {
		if c.Controller == "net_cls" {
			return "", "is not mounted"
		}
		return dir, "has no such control"
	}
	cs := []Control{
		{Controller: "memory", File: "memory.low", Value: "33554432"},
		{Controller: "io", Value: "default 4950", Alts: []string{"io.weight", "io.bfq.weight"}},
	}
	if err := writeControls("/berth/x", cs, in); err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]string{"memory.low": "33554432", "io.bfq.weight": "default 4950"} {
		if b, _ := os.ReadFile(filepath.Join(dir, f)); string(b) != want {
			t.Errorf("%s = %q, want %q", f, b, want)
		}
	}
	for _, c := range []struct {
		c    Control
		says string
	}{
		{Control{Controller: "io", File: "io.max", Value: "8:0 rbps=1"}, "io.max 8:0 rbps=1: the io cgroup controller has no such control"},
		{Control{Controller: "blkio", Value: "500", Alts: []string{"blkio.weight", "blkio.bfq.weight"}}, "blkio.weight 500: the blkio cgroup controller has no such control"},
		{Control{Controller: "net_cls", File: "net_cls.classid", Value: "1"}, "net_cls.classid 1: the net_cls cgroup controller is not mounted"},
	} {
		err := writeControls("/berth/x", []Control{c.c}, in)
		if !errors.Is(err, errdefs.ErrNotSupported) || !strings.Contains(err.Error(), c.says) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%+v: %v, want ErrNotSupported saying %q", c.c, err, c.says)
		}
		if _, serr := os.Stat(filepath.Join(dir, c.c.name())); serr == nil {
			t.Errorf("%s was created", c.c.name())
		}
	}
	if err := WriteControls("../x", cs); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("a relative cgroup path: %v", err)
	}
	if err := WriteControls("/berth/x", nil); err != nil {
		t.Errorf("nothing to write: %v", err)
	}
}
