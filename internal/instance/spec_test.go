package instance

import (
	"errors"
	"math"
	"os"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/errdefs"
)

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{
		"64m": 64 << 20, "1g": 1 << 30, "1.5k": 1536, "100": 100, "2MB": 2 << 20,
	} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "12q", "0", "-1m", "0.5", "nan", "NaNm", "inf", "1e30", "m"} {
		if got, err := ParseBytes(in); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("ParseBytes(%q) = %d, %v; want an invalid-input error", in, got, err)
		}
	}
}

func TestValidateOptions(t *testing.T) {
	bad := map[string]RunOptions{
		"env without a name":  {Env: []string{"A=1", "=x"}},
		"empty env":           {Env: []string{""}},
		"hostname too long":   {Hostname: strings.Repeat("h", 65)},
		"relative workdir":    {Workdir: "relative"},
		"memory below 6m":     {Limits: Limits{Memory: 1024}},
		"negative memory":     {Limits: Limits{Memory: -1}},
		"cpus below 0.01":     {Limits: Limits{CPUs: 0.001}},
		"cpus NaN":            {Limits: Limits{CPUs: math.NaN()}},
		"cpus infinite":       {Limits: Limits{CPUs: math.Inf(1)}},
		"cpus beyond host":    {Limits: Limits{CPUs: 1e300}},
		"negative cpus":       {Limits: Limits{CPUs: -1}},
		"negative pids limit": {Limits: Limits{Pids: -3}},
	}
	for what, o := range bad {
		if err := o.Validate(); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%s: Validate = %v, want an invalid-input error", what, err)
		}
	}
	good := []RunOptions{
		{},
		{Env: []string{"A=1", "B=", "HOME"}, Hostname: strings.Repeat("h", 64), Workdir: "/srv"},
		{Limits: Limits{Memory: MinMemory, CPUs: 0.01, Pids: 1}},
		{Limits: Limits{CPUs: 1}},
	}
	for _, o := range good {
		if err := o.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", o, err)
		}
	}
}

// ApplyProcess is the one place run options become a process: a bad -e
// must not reach the workload's environment.
func TestApplyProcessRefusesBadEnv(t *testing.T) {
	p := &specs.Process{}
	noFiles := func(string, int64) ([]byte, error) { return nil, os.ErrNotExist }
	err := ApplyProcess(p, ocispec.ImageConfig{Cmd: []string{"true"}}, &RunOptions{Env: []string{"=x"}}, "h", noFiles)
	if !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("ApplyProcess with -e =x: %v (env %q)", err, p.Env)
	}
}

func TestMountsRefuseRootAndProc(t *testing.T) {
	dir := t.TempDir()
	for _, v := range []string{dir + ":/", dir + ":/proc", dir + ":/x/../proc/", dir + ":/..", "relative:/x", dir + ":relative", "/no/such/dir:/x", dir + ":/x:zz", dir} {
		if m, err := Mounts([]string{v}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("Mounts(%q) = %v, %v; want an invalid-input error", v, m, err)
		}
	}
	if m, err := Mounts([]string{dir + ":/srv:ro", dir + ":/proc2"}); err != nil || len(m) != 2 {
		t.Errorf("Mounts of good volumes: %v, %v", m, err)
	}
}

// A volume on a default mount's destination replaces it, and one on /dev
// replaces everything under /dev, as with Docker.
func TestWithVolumesReplacesDefaults(t *testing.T) {
	defaults := []specs.Mount{{Destination: "/proc"}, {Destination: "/dev"}, {Destination: "/dev/pts"}, {Destination: "/dev/shm"}, {Destination: "/sys"}}
	dests := func(ms []specs.Mount) string {
		var d []string
		for _, m := range ms {
			d = append(d, m.Destination+"/"+m.Type)
		}
		return strings.Join(d, " ")
	}
	for _, c := range []struct {
		vol  string
		want string
	}{
		{"/dev", "/proc/ /sys/ /dev/bind"},
		{"/dev/shm", "/proc/ /dev/ /dev/pts/ /sys/ /dev/shm/bind"},
		{"/srv", "/proc/ /dev/ /dev/pts/ /dev/shm/ /sys/ /srv/bind"},
		{"/devices", "/proc/ /dev/ /dev/pts/ /dev/shm/ /sys/ /devices/bind"},
	} {
		got := dests(WithVolumes(defaults, []specs.Mount{{Destination: c.vol, Type: "bind"}}))
		if got != c.want {
			t.Errorf("WithVolumes with a volume on %s: %s, want %s", c.vol, got, c.want)
		}
	}
}
