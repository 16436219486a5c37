package rlimit

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestRoundTrip(t *testing.T) {
	if len(resources) != 16 {
		t.Fatalf("%d limits, Linux has 16", len(resources))
	}
	for name, res := range resources {
		if got, ok := Resource(name); !ok || got != res {
			t.Errorf("Resource(%s) = %d, %v", name, got, ok)
		}
		if got := Name(res); got != name {
			t.Errorf("Name(%d) = %s, want %s", res, got, name)
		}
	}
	if _, ok := Resource("RLIMIT_BOGUS"); ok {
		t.Error("RLIMIT_BOGUS is known")
	}
	if got := Name(99); got != "99" {
		t.Errorf("Name(99) = %s", got)
	}
	if res, _ := Resource("RLIMIT_NOFILE"); res != unix.RLIMIT_NOFILE {
		t.Errorf("RLIMIT_NOFILE = %d", res)
	}
}
