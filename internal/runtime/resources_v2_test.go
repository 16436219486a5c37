package runtime

import (
	"errors"
	"reflect"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/errdefs"
)

// The v2 mapping: the files and values of each resource.
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
	want := []cgroups.Control{
		{Controller: "memory", File: "memory.low", Value: "33554432"},
		{Controller: "cpuset", File: "cpuset.cpus", Value: "0-1"},
		{Controller: "cpuset", File: "cpuset.mems", Value: "0"},
		{Controller: "io", Value: "default 4950", Alts: []string{"io.weight", "io.bfq.weight"}},
		{Controller: "io", File: "io.max", Value: "8:0 rbps=1048576"},
		{Controller: "hugetlb", File: "hugetlb.2MB.max", Value: "1073741824"},
	}
	if !reflect.DeepEqual(w, want) {
		t.Errorf("v2 writes:\n got %+v\nwant %+v", w, want)
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
