package container

import (
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"
)

// The device setup leaves alone what a bind mount provides: the mount on
// top at a path is the last of the spec's at it or above it.
func TestOnBind(t *testing.T) {
	mounts := []specs.Mount{
		{Destination: "/dev", Type: "tmpfs"},
		{Destination: "/dev/shm", Type: "tmpfs"},
		{Destination: "/dev/zero", Type: "bind"},
		{Destination: "/dev/snd", Options: []string{"rbind"}},
		{Destination: "/dev/snd/tmp", Type: "tmpfs"},
	}
	for p, want := range map[string]bool{
		"/dev/null": false, "/dev/zero": true, "/dev/zero2": false, "/dev/shm/x": false,
		"/dev/snd/pcm": true, "/dev/snd/tmp/x": false, "/dev/../dev/zero": true, "/etc": false,
	} {
		if got := onBind(mounts, p); got != want {
			t.Errorf("onBind(%s) = %v, want %v", p, got, want)
		}
	}
	// A bind on /dev after everything else covers all of it.
	mounts = append(mounts, specs.Mount{Destination: "/dev/", Type: "bind"})
	for _, p := range []string{"/dev/null", "/dev/shm/x", "/dev/snd/tmp/x", "/dev/console"} {
		if !onBind(mounts, p) {
			t.Errorf("onBind(%s) under a bind on /dev = false", p)
		}
	}
}
