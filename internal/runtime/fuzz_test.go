package runtime

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/seccomp"
)

// FuzzBundleConfig: whatever a bundle's config.json holds, berth-runtime's
// reading and checking of it (up to the point where it starts building
// the container) never panics, and what it refuses, it refuses with one
// line. Seeds: the config.json files runc spec and ctr oci spec write
// (testdata/config), and berth's own default spec with its seccomp profile.
func FuzzBundleConfig(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/config/*.json")
	for _, path := range seeds {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	spec := container.DefaultSpec("fuzz")
	spec.Root.Path = "rootfs"
	spec.Annotations = map[string]string{IsolationAnnotation: "container"}
	b, err := json.Marshal(spec)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"process":{"args":["sh"],"capabilities":{"bounding":["CAP_NOPE"]}},"root":{"path":"r"},"linux":{}}`))
	f.Add([]byte(`{"linux":{"cgroupsPath":"system.slice:docker:x","seccomp":{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":40,"op":"SCMP_CMP_NE"},{"index":0,"value":38,"op":"SCMP_CMP_NE"}]}]}}}`))

	f.Fuzz(func(t *testing.T, data []byte) {
		spec, err := parseSpec(data)
		if err != nil {
			oneLine(t, err)
			return
		}
		if _, err := isolationOf("", spec); err != nil {
			oneLine(t, err)
		}
		for _, point := range []string{HookPrestart, HookCreateRuntime, HookCreateContainer, HookStartContainer, HookPoststart, HookPoststop} {
			hooksOf(spec, point)
		}
		netNamespace(spec)
		if err := checkSpec(spec); err != nil {
			oneLine(t, err)
			return
		}
		if _, err := cgroupPath("fuzz", spec.Linux.CgroupsPath); err != nil {
			oneLine(t, err)
		}
		if r := spec.Linux.Resources; r != nil {
			if _, err := v2Writes(r); err != nil {
				oneLine(t, err)
			}
			if r.BlockIO != nil {
				blkioWrites(r.BlockIO)
			}
			container.ResourcesOf(r, spec.Linux.Devices)
			mergeResources(r, r)
		}
		if p := spec.Linux.Seccomp; p != nil {
			seccomp.UnknownSyscalls(p)
			if _, err := seccomp.Compile(p); err != nil {
				oneLine(t, err)
			}
		}
	})
}

// oneLine fails t unless err is one line.
func oneLine(t *testing.T, err error) {
	t.Helper()
	if msg := err.Error(); strings.ContainsAny(msg, "\n\r") {
		t.Errorf("error of more than one line: %q", msg)
	}
}
