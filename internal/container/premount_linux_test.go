package container

import (
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"
)

// TestPremountFits: a premounted init is taken only by a container of
// the same root, propagation, cgroup and devices whose mounts begin with
// the premounted ones and add none under /dev.
func TestPremountFits(t *testing.T) {
	base := DefaultSpec("")
	pre := &initConfig{Spec: &specs.Spec{Mounts: base.Mounts, Linux: &specs.Linux{Devices: base.Linux.Devices}},
		RootPath: "/r", CgroupPath: "/berth", NewNet: true}
	cfgOf := func(edit func(c *initConfig)) *initConfig {
		s := *DefaultSpec("h")
		lin := *s.Linux
		s.Linux = &lin
		c := &initConfig{Spec: &s, RootPath: "/r", CgroupPath: "/berth", NewNet: true}
		if edit != nil {
			edit(c)
		}
		return c
	}
	bind := specs.Mount{Destination: "/etc/hosts", Type: "bind", Source: "/f", Options: []string{"rbind"}}
	for _, tc := range []struct {
		name string
		edit func(c *initConfig)
		fits bool
	}{
		{"same", nil, true},
		{"a bind after", func(c *initConfig) {
			c.Spec.Mounts = append(c.Spec.Mounts[:len(c.Spec.Mounts):len(c.Spec.Mounts)], bind)
		}, true},
		{"other root", func(c *initConfig) { c.RootPath = "/other" }, false},
		{"layers", func(c *initConfig) { c.Layers = []string{"/l"} }, false},
		{"other cgroup", func(c *initConfig) { c.CgroupPath = "/x" }, false},
		{"host network", func(c *initConfig) { c.NewNet = false }, false},
		{"slave", func(c *initConfig) { c.Spec.Linux.RootfsPropagation = "rslave" }, false},
		{"fewer mounts", func(c *initConfig) { c.Spec.Mounts = c.Spec.Mounts[:2] }, false},
		{"other shm", func(c *initConfig) {
			c.Spec.Mounts = append([]specs.Mount(nil), c.Spec.Mounts...)
			c.Spec.Mounts[len(c.Spec.Mounts)-1].Options = []string{"size=1k"}
		}, false},
		{"a device", func(c *initConfig) {
			c.Spec.Linux.Devices = append(c.Spec.Linux.Devices, specs.LinuxDevice{Path: "/dev/fuse", Type: "c", Major: 10, Minor: 229})
		}, false},
		{"a mount under /dev", func(c *initConfig) {
			b := bind
			b.Destination = "/dev/x"
			c.Spec.Mounts = append(c.Spec.Mounts[:len(c.Spec.Mounts):len(c.Spec.Mounts)], b)
		}, false},
	} {
		err := premountFits(pre, cfgOf(tc.edit))
		if (err == nil) != tc.fits {
			t.Errorf("%s: fits %v (%v), want %v", tc.name, err == nil, err, tc.fits)
		}
	}
}
