package caps

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/testutil"
)

// helperEnv carries, as JSON, the capability set a re-executed test binary
// applies to itself (see TestMain).
const helperEnv = "BERTH_CAPS_TEST_HELPER"

// result is what the helper process reports on stdout.
type result struct {
	Err                     string
	Eff, Prm, Inh, Bnd, Amb uint64
}

// TestMain runs the helper when helperEnv is set: it applies the set to its
// locked thread and prints that thread's sets, so Apply never touches the
// test process itself.
func TestMain(m *testing.M) {
	if spec := os.Getenv(helperEnv); spec != "" {
		runtime.LockOSThread()
		var c specs.LinuxCapabilities
		var r result
		if err := json.Unmarshal([]byte(spec), &c); err != nil {
			r.Err = err.Error()
		} else if err := Apply(&c); err != nil {
			r.Err = err.Error()
		}
		var err error
		if r.Eff, r.Prm, r.Inh, r.Bnd, r.Amb, err = Current(); err != nil {
			r.Err += err.Error()
		}
		_ = json.NewEncoder(os.Stdout).Encode(r)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// applyInChild runs Apply(c) in a fresh copy of the test binary.
func applyInChild(t *testing.T, c specs.LinuxCapabilities) result {
	t.Helper()
	spec, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+string(spec))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v", err)
	}
	var r result
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("helper said %q: %v", out, err)
	}
	return r
}

// mask is the bit mask of names, which must parse.
func mask(t *testing.T, names ...string) uint64 {
	t.Helper()
	var m uint64
	for _, n := range names {
		c, err := Parse(n)
		if err != nil {
			t.Fatal(err)
		}
		m |= 1 << uint(c)
	}
	return m
}

func TestNames(t *testing.T) {
	kernel := map[string]int{
		"CAP_CHOWN": unix.CAP_CHOWN, "CAP_DAC_READ_SEARCH": unix.CAP_DAC_READ_SEARCH,
		"CAP_SETPCAP": unix.CAP_SETPCAP, "CAP_NET_RAW": unix.CAP_NET_RAW,
		"CAP_SYS_ADMIN": unix.CAP_SYS_ADMIN, "CAP_MKNOD": unix.CAP_MKNOD,
		"CAP_AUDIT_WRITE": unix.CAP_AUDIT_WRITE, "CAP_SETFCAP": unix.CAP_SETFCAP,
		"CAP_SYSLOG": unix.CAP_SYSLOG, "CAP_AUDIT_READ": unix.CAP_AUDIT_READ,
		"CAP_PERFMON": unix.CAP_PERFMON, "CAP_BPF": unix.CAP_BPF,
		"CAP_CHECKPOINT_RESTORE": unix.CAP_CHECKPOINT_RESTORE,
	}
	for name, want := range kernel {
		for _, spelling := range []string{name, strings.TrimPrefix(name, "CAP_"), strings.ToLower(name), strings.ToLower(strings.TrimPrefix(name, "CAP_"))} {
			if got, err := Parse(spelling); got != want || err != nil {
				t.Errorf("Parse(%q) = %d, %v; want %d", spelling, got, err, want)
			}
		}
	}
	if MaxKnown != unix.CAP_CHECKPOINT_RESTORE {
		t.Errorf("MaxKnown = %d", MaxKnown)
	}
	for n := 0; n <= MaxKnown; n++ {
		if got, err := Parse(Name(n)); got != n || err != nil {
			t.Errorf("Parse(Name(%d)=%q) = %d, %v", n, Name(n), got, err)
		}
	}
	if Name(41) != "CAP_41" || Name(-1) != "CAP_-1" {
		t.Errorf("Name of unknown numbers: %q %q", Name(41), Name(-1))
	}
	for _, bad := range []string{"", "CAP_", "CAP_FOO", "SYS_ADMIN2", "CAP_41"} {
		if _, err := Parse(bad); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), strconv.Quote(bad)) {
			t.Errorf("Parse(%q) = %v, want ErrInvalid naming it", bad, err)
		}
	}
	def := Default()
	if len(def) != 14 {
		t.Errorf("Default has %d caps, want 14", len(def))
	}
	mask(t, def...)
	def[0] = "changed"
	if Default()[0] != "CAP_CHOWN" {
		t.Errorf("Default shares its slice with callers")
	}
}

func TestLast(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		t.Skipf("no /proc/sys/kernel/cap_last_cap: %v", err)
	}
	if want, _ := strconv.Atoi(strings.TrimSpace(string(b))); Last() != want {
		t.Errorf("Last() = %d, want %d", Last(), want)
	}
}

func TestCurrent(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	eff, perm, _, bnd, _, err := Current()
	if err != nil {
		t.Fatal(err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		t.Fatal(err)
	}
	if want := uint64(data[1].Effective)<<32 | uint64(data[0].Effective); eff != want {
		t.Errorf("Current eff = %#x, capget says %#x", eff, want)
	}
	if want := uint64(data[1].Permitted)<<32 | uint64(data[0].Permitted); perm != want {
		t.Errorf("Current perm = %#x, capget says %#x", perm, want)
	}
	if bnd == 0 {
		t.Errorf("Current bounding set is empty")
	}
}

func TestApply(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.Missing(t, "needs root: dropping from the bounding set takes CAP_SETPCAP")
	}
	_, _, _, rootBnd, _, err := Current()
	if err != nil {
		t.Fatal(err)
	}
	def := Default()
	few := []string{"CAP_KILL", "net_bind_service", "SETPCAP"}
	for _, tc := range []struct {
		name                    string
		caps                    specs.LinuxCapabilities
		eff, prm, inh, bnd, amb uint64
	}{
		{
			name: "docker default",
			caps: specs.LinuxCapabilities{Bounding: def, Effective: def, Permitted: def},
			eff:  mask(t, def...), prm: mask(t, def...), bnd: mask(t, def...),
		},
		{
			name: "ambient",
			caps: specs.LinuxCapabilities{Bounding: def, Effective: few, Permitted: few,
				Inheritable: []string{"CAP_NET_BIND_SERVICE"}, Ambient: []string{"NET_BIND_SERVICE"}},
			eff: mask(t, few...), prm: mask(t, few...), bnd: mask(t, def...),
			inh: mask(t, "CAP_NET_BIND_SERVICE"), amb: mask(t, "CAP_NET_BIND_SERVICE"),
		},
		{name: "none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := applyInChild(t, tc.caps)
			if r.Err != "" {
				t.Fatalf("Apply: %s", r.Err)
			}
			got := fmt.Sprintf("eff %#x prm %#x inh %#x bnd %#x amb %#x", r.Eff, r.Prm, r.Inh, r.Bnd, r.Amb)
			want := fmt.Sprintf("eff %#x prm %#x inh %#x bnd %#x amb %#x", tc.eff, tc.prm, tc.inh, tc.bnd, tc.amb)
			if got != want {
				t.Errorf("after Apply: %s\nwant:        %s", got, want)
			}
		})
	}

	// Refusals leave the sets as they were (an unknown name) or fail clearly
	// (ambient without inheritable).
	r := applyInChild(t, specs.LinuxCapabilities{Bounding: []string{"CAP_CHOWN", "CAP_NOPE"}})
	if !strings.Contains(r.Err, `"CAP_NOPE"`) || !strings.Contains(r.Err, "unknown") || r.Bnd != rootBnd {
		t.Errorf("unknown cap: err %q, bnd %#x; want an error naming it and bnd unchanged %#x", r.Err, r.Bnd, rootBnd)
	}
	r = applyInChild(t, specs.LinuxCapabilities{Bounding: def, Permitted: def, Effective: def, Ambient: []string{"CAP_KILL"}})
	if !strings.Contains(r.Err, "CAP_KILL") || !strings.Contains(r.Err, "ambient") {
		t.Errorf("ambient cap not inheritable: err %q, want one naming CAP_KILL", r.Err)
	}
}
