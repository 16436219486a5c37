package runtime

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
)

func TestCheckID(t *testing.T) {
	for _, id := range []string{"abc", "a.b-c_d+e", "0123456789abcdef"} {
		if err := CheckID(id); err != nil {
			t.Errorf("CheckID(%q): %v", id, err)
		}
	}
	for _, id := range []string{"", ".", "..", "a/b", "../x", "a b"} {
		if err := CheckID(id); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("CheckID(%q) = %v, want ErrInvalid", id, err)
		}
	}
}

func TestCgroupPath(t *testing.T) {
	for in, want := range map[string]string{"": "/berth-runtime/c1", "/default/c1": "/default/c1", "docker/x": "/docker/x", "/a/../b": "/b"} {
		got, err := cgroupPath("c1", in)
		if err != nil || got != want {
			t.Errorf("cgroupPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := cgroupPath("c1", "system.slice:docker:x"); !errors.Is(err, errdefs.ErrNotSupported) {
		t.Errorf("systemd path: %v", err)
	}
	if _, err := cgroupPath("c1", "/.."); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("root path: %v", err)
	}
}

func TestIsolationOf(t *testing.T) {
	vm := &specs.Spec{Annotations: map[string]string{IsolationAnnotation: "vm"}}
	plain := &specs.Spec{}
	cases := []struct {
		flag string
		spec *specs.Spec
		want string // "" for an error
	}{
		{"", plain, "container"},
		{"container", plain, "container"},
		{"container", vm, "container"}, // the flag wins over the annotation
		{"", vm, "vm"},
		{"vm", plain, "vm"},
		{"", &specs.Spec{Annotations: map[string]string{IsolationAnnotation: "gvisor"}}, ""},
		{"vm", &specs.Spec{Annotations: map[string]string{IsolationAnnotation: "container"}}, "vm"},
		{"kvm", plain, ""},
	}
	for _, c := range cases {
		got, err := isolationOf(c.flag, c.spec)
		if got != c.want || (c.want == "") != (err != nil) || (err != nil && !errors.Is(err, errdefs.ErrInvalid)) {
			t.Errorf("isolationOf(%q, %v) = %q, %v; want %q", c.flag, c.spec.Annotations, got, err, c.want)
		}
	}
}

func TestMergeResources(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	u64 := func(v uint64) *uint64 { return &v }
	cur := &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: i64(64 << 20)},
		CPU:    &specs.LinuxCPU{Shares: u64(512)},
	}
	got := mergeResources(cur, &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(50000)}, Pids: &specs.LinuxPids{Limit: i64(10)}})
	if *got.Memory.Limit != 64<<20 || *got.CPU.Shares != 512 || *got.CPU.Quota != 50000 || *got.Pids.Limit != 10 {
		t.Fatalf("merged: %+v %+v %+v", got.Memory, got.CPU, got.Pids)
	}
	if cur.CPU.Quota != nil {
		t.Fatal("the current resources were changed in place")
	}
}

func TestStoreStateRoundTrip(t *testing.T) {
	st, err := NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Load("nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Load of a missing container: %v", err)
	}
	if err := st.Delete("nope", true); err != nil {
		t.Fatalf("Delete --force of a missing container: %v", err)
	}
	if err := os.Mkdir(st.Dir("c1"), 0o700); err != nil {
		t.Fatal(err)
	}
	// A pid that is not alive with that start time: stopped.
	s := &State{ID: "c1", Bundle: "/b", Pid: os.Getpid(), PidStart: 1}
	if err := st.Save(s); err != nil {
		t.Fatal(err)
	}
	got, err := st.Load("c1")
	if err != nil || got.Bundle != "/b" {
		t.Fatalf("Load: %+v %v", got, err)
	}
	if oci := got.OCI(); oci.Status != specs.StateStopped || oci.Pid != 0 {
		t.Fatalf("OCI state of a dead pid: %+v", oci)
	}
	list, err := st.List()
	if err != nil || len(list) != 1 || list[0].ID != "c1" {
		t.Fatalf("List: %v %v", list, err)
	}
}

func TestMergeResourcesExtras(t *testing.T) {
	u64 := func(v uint64) *uint64 { return &v }
	i64 := func(v int64) *int64 { return &v }
	cur := &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Access: "rwm"}}}
	got := mergeResources(cur, &specs.LinuxResources{
		Memory:  &specs.LinuxMemory{Swappiness: u64(10)},
		CPU:     &specs.LinuxCPU{RealtimeRuntime: i64(1000)},
		Devices: []specs.LinuxDeviceCgroup{{Allow: true, Type: "c", Access: "r"}},
	})
	if *got.Memory.Swappiness != 10 || *got.CPU.RealtimeRuntime != 1000 || len(got.Devices) != 2 || !got.Devices[1].Allow {
		t.Fatalf("merged: %+v %+v %+v", got.Memory, got.CPU, got.Devices)
	}
	if len(cur.Devices) != 1 {
		t.Fatal("the current device rules were changed in place")
	}
}

// Huge page and network class limits become v1 writes; a host without
// the controller (this one has neither hugetlb nor net_cls) refuses them
// in one line naming it.
func TestHugepageAndNetworkLimits(t *testing.T) {
	classID := uint32(0x100001)
	r := &specs.LinuxResources{
		HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 1 << 30}},
		Network:        &specs.LinuxNetwork{ClassID: &classID, Priorities: []specs.LinuxInterfacePriority{{Name: "eth0", Priority: 5}}},
	}
	err := applyExtraResources("/berth-runtime-test/none", r)
	mountinfo, merr := os.ReadFile("/proc/self/mountinfo")
	if merr != nil {
		t.Skip(merr)
	}
	if cgroups.DetectMode() != cgroups.ModeV2 && !strings.Contains(string(mountinfo), "hugetlb") {
		if err == nil || !errors.Is(err, errdefs.ErrNotSupported) || !strings.Contains(err.Error(), "hugetlb.2MB.limit_in_bytes") || !strings.Contains(err.Error(), "hugetlb cgroup controller is not mounted") {
			t.Fatalf("without hugetlb: %v", err)
		}
	}
	bad := &specs.LinuxResources{HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "../x", Limit: 1}}}
	if err := applyExtraResources("/x", bad); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("page size with a slash: %v", err)
	}
}
