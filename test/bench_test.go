package test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testutil"
)

// bench vm compares a template start with plain QEMU's restore and a cold
// boot with a plain boot, and labels each berth sample with how its
// instance really started; compare reads every VM run's start from its
// record. Figures are not checked, only that they are there and labelled.
func TestBenchVMLabels(t *testing.T) {
	img := busybox(t)
	needVM(t)
	t.Parallel()
	r := berthLimit(t, 6*time.Minute, nil, nil, "bench", "--image", img, "-n", "1", "--format", "json", "vm", "compare")
	if r.code != 0 {
		t.Fatalf("bench: exit %d: %s", r.code, r.stderr)
	}
	var out []struct {
		Subjects []string                  `json:"subjects"`
		Labels   map[string]map[string]int `json:"labels"`
		Spreads  map[string]struct {
			Min float64 `json:"min"`
			Max float64 `json:"max"`
		} `json:"spread_ms"`
		Pairs [][2]string `json:"pairs"`
		Rows  []struct {
			Mode     string         `json:"mode"`
			Kernel   string         `json:"kernel"`
			VMStarts map[string]int `json:"vm_starts"`
			Memory   []int64        `json:"idle_pss_kib"`
		} `json:"modes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || len(out) != 2 {
		t.Fatalf("bench output: %v\n%s", err, r.stdout)
	}
	vm := out[0]
	if len(vm.Pairs) != 2 || len(vm.Subjects) != 4 {
		t.Fatalf("bench vm: pairs %v, subjects %v", vm.Pairs, vm.Subjects)
	}
	for name, want := range map[string]string{"berth run --vm (template)": "template, ", "berth run --vm (cold boot)": "boot, "} {
		for label, n := range vm.Labels[name] {
			if n != 1 || !strings.HasPrefix(label, want) || !strings.HasSuffix(label, ", tcg") && !strings.HasSuffix(label, ", kvm") {
				t.Errorf("%s: label %q x%d, want %q... with the accelerator", name, label, n, want)
			}
		}
		if len(vm.Labels[name]) != 1 {
			t.Errorf("%s: labels %v", name, vm.Labels[name])
		}
	}
	for _, s := range vm.Subjects {
		if sp := vm.Spreads[s]; sp.Min <= 0 || sp.Max < sp.Min {
			t.Errorf("%s: spread %+v", s, sp)
		}
	}
	cmp := out[1]
	if len(cmp.Rows) != 2 || cmp.Rows[1].Mode != "vm" || cmp.Rows[1].VMStarts["template"] != 1 || len(cmp.Rows[1].Memory) != 3 {
		t.Errorf("bench compare: %+v", cmp.Rows)
	}
	for _, row := range cmp.Rows {
		for _, kib := range row.Memory {
			if kib <= 0 {
				t.Errorf("%s: idle PSS %d KiB", row.Mode, kib)
			}
		}
	}
}

// bench pull times berth pull against skopeo copy from a registry it
// starts, and reports berth's peak RSS, which stays far under the image's
// 108 MiB: layers stream to disk.
func TestBenchPull(t *testing.T) {
	testutil.NeedTool(t, "skopeo")
	r := berthLimit(t, 4*time.Minute, nil, nil, "bench", "-n", "1", "--format", "json", "pull")
	if r.code != 0 {
		t.Fatalf("bench pull: exit %d: %s", r.code, r.stderr)
	}
	var out []struct {
		Subjects []string           `json:"subjects"`
		Medians  map[string]float64 `json:"median_ms"`
		Ratio    float64            `json:"ratio"`
		PeakRSS  int64              `json:"berth_peak_rss_kib"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || len(out) != 1 {
		t.Fatalf("bench output: %v\n%s", err, r.stdout)
	}
	p := out[0]
	t.Logf("berth pull %.0f ms, skopeo copy %.0f ms, ratio %.2f, peak RSS %d KiB", p.Medians["berth pull"], p.Medians["skopeo copy"], p.Ratio, p.PeakRSS)
	if len(p.Subjects) != 2 || p.Ratio <= 0 || p.PeakRSS <= 0 || p.PeakRSS > 64<<10 {
		t.Fatalf("bench pull: %+v", p)
	}
}
