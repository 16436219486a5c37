package container

import (
	"errors"
	"fmt"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/errdefs"
)

func TestDeviceRules(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	rules := []specs.LinuxDeviceCgroup{
		{Access: "rwm"},
		{Allow: true, Type: "c", Major: i64(10), Minor: i64(229), Access: "rwm"},
		{Allow: true, Type: "b", Major: i64(8)},
		{Type: "c", Major: i64(-1), Minor: i64(3), Access: "r"},
	}
	devices := []specs.LinuxDevice{
		{Path: "/dev/fuse", Type: "c", Major: 10, Minor: 229},
		{Path: "/dev/sda", Type: "b", Major: 8},
		{Path: "/dev/fifo", Type: "p"},
	}
	got := deviceRules(rules, devices)
	var lines []string
	for _, d := range got {
		if err := d.Check(); err != nil {
			t.Errorf("rule %v: %v", d, err)
		}
		verb := "deny"
		if d.Allow {
			verb = "allow"
		}
		lines = append(lines, verb+" "+d.String())
	}
	want := []string{"deny a *:* rwm", "allow c 10:229 rwm", "allow b 8:* rwm", "deny c *:3 r"}
	for _, d := range standardDevices {
		want = append(want, "allow "+d.String())
	}
	want = append(want, "allow c 10:229 rwm", "allow b 8:0 rwm")
	if fmt.Sprint(lines) != fmt.Sprint(want) {
		t.Fatalf("deviceRules:\n got %q\nwant %q", lines, want)
	}
	if deviceRules(nil, devices) != nil {
		t.Error("no rules in the spec must leave device access alone (nil)")
	}
	for _, bad := range []specs.LinuxDeviceCgroup{{Type: "x"}, {Type: "c", Access: "rwx"}, {Type: "cc"}} {
		r := deviceRules([]specs.LinuxDeviceCgroup{bad}, nil)
		if err := r[0].Check(); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("rule %+v: %v, want ErrInvalid", bad, err)
		}
	}
	if s := (cgroups.DeviceRule{Type: 'a', Major: -1, Minor: -1, Access: "rwm"}).String(); s != "a *:* rwm" {
		t.Errorf("all devices: %q", s)
	}
}
