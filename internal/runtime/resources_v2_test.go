package runtime

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/errdefs"
)

// The v2 mapping, written into a directory laid out like a cgroup2 one
// (this host's unified hierarchy has no controllers to try it on).
func TestV2Resources(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	u16 := func(v uint16) *uint16 { return &v }
	r := &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Reservation: i64(32 << 20)},
		CPU:    &specs.LinuxCPU{Cpus: "0-1", Mems: "0"},
		BlockIO: &specs.LinuxBlockIO{
			Weight:                u16(500),
			ThrottleReadBpsDevice: []specs.LinuxThrottleDevice{{LinuxBlockIODevice: specs.LinuxBlockIODevice{Major: 8, Minor: 0}, Rate: 1048576}},
		},
		HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 1 << 30}},
	}
	w, err := v2Writes(r)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	dir := filepath.Join(root, "berth", "x")
	os.MkdirAll(dir, 0o755)
	for _, f := range []string{"memory.low", "cpuset.cpus", "cpuset.mems", "io.bfq.weight", "io.max", "hugetlb.2MB.max"} {
		os.WriteFile(filepath.Join(dir, f), nil, 0o644)
	}
	if err := applyV2(root, "/berth/x", w); err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]string{
		"memory.low": "33554432", "cpuset.cpus": "0-1", "cpuset.mems": "0",
		"io.bfq.weight": "default 4950", "io.max": "8:0 rbps=1048576", "hugetlb.2MB.max": "1073741824",
	} {
		if b, _ := os.ReadFile(filepath.Join(dir, f)); string(b) != want {
			t.Errorf("%s = %q, want %q", f, b, want)
		}
	}
	os.Remove(filepath.Join(dir, "io.max"))
	if err := applyV2(root, "/berth/x", w); !errors.Is(err, errdefs.ErrNotSupported) {
		t.Errorf("io.max missing (io controller not enabled): %v", err)
	}
	for name, bad := range map[string]*specs.LinuxResources{
		"swappiness": {Memory: &specs.LinuxMemory{Swappiness: new(uint64)}},
		"realtime":   {CPU: &specs.LinuxCPU{RealtimeRuntime: i64(1000)}},
		"leaf":       {BlockIO: &specs.LinuxBlockIO{LeafWeight: u16(100)}},
		"network":    {Network: &specs.LinuxNetwork{ClassID: new(uint32)}},
	} {
		if _, err := v2Writes(bad); !errors.Is(err, errdefs.ErrNotSupported) {
			t.Errorf("%s on v2: %v, want ErrNotSupported", name, err)
		}
	}
}
