package engine

import (
	"errors"
	"slices"
	"testing"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
)

func TestFor(t *testing.T) {
	if got := Names(); !slices.Equal(got, []string{instance.IsolationContainer, instance.IsolationVM}) {
		t.Fatalf("engines %v", got)
	}
	for _, tc := range []struct {
		isolation, name, cgroup string
		traits                  Traits
	}{
		{"", "container", "/berth/x", Traits{LocalTerminal: true, RemoveWhileEnding: true}},
		{"container", "container", "/berth/x", Traits{LocalTerminal: true, RemoveWhileEnding: true}},
		{"vm", "vm", "/berth/x", Traits{OwnerWritesOutput: true}}, // QEMU's
	} {
		e, err := For(tc.isolation)
		if err != nil {
			t.Fatalf("For(%q): %v", tc.isolation, err)
		}
		if e.Name() != tc.name || e.Cgroup("x") != tc.cgroup || e.Traits() != tc.traits {
			t.Errorf("For(%q): %s, cgroup %q, traits %+v", tc.isolation, e.Name(), e.Cgroup("x"), e.Traits())
		}
	}
	if _, err := For("gvisor"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("For(gvisor): %v, want an invalid isolation", err)
	}
	// The VM engine begins nothing before it knows the image.
	if e, _ := For("vm"); e.Prepare(nil, Stdio{}) != nil {
		t.Error("the VM engine prepared something")
	}
}
