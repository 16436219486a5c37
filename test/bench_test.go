package test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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

// bench pull times berth pull against skopeo copy, and ctr image pull
// when containerd is installed, from a registry it starts, and reports
// berth's peak RSS, which stays far under the image's 108 MiB: layers
// stream to disk.
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
	t.Logf("berth pull %.0f ms, skopeo copy %.0f ms, ctr image pull %.0f ms, ratio to skopeo %.2f, peak RSS %d KiB",
		p.Medians["berth pull"], p.Medians["skopeo copy"], p.Medians["ctr image pull"], p.Ratio, p.PeakRSS)
	want := 2
	if _, err := exec.LookPath("containerd"); err == nil {
		if _, err := exec.LookPath("ctr"); err == nil {
			want = 3
		}
	}
	if len(p.Subjects) != want || p.Ratio <= 0 || p.PeakRSS <= 0 || p.PeakRSS > 64<<10 {
		t.Fatalf("bench pull: %+v", p)
	}
}

// bench network runs end to end with one sample: the start figures, and
// a throughput and a round-trip time on every path of berth's own; a
// path of Docker's or a VM's has figures or says why not. Everything it
// made runs in a namespace of its own, and is gone when it returns:
// the shared root has no network or instance of the bench's left.
func TestBenchNetwork(t *testing.T) {
	img := busybox(t)
	testutil.NeedTool(t, "ip")
	r := berthLimit(t, 8*time.Minute, nil, nil, "bench", "--image", img, "-n", "1", "--format", "json", "network")
	if r.code != 0 {
		t.Fatalf("bench network: exit %d: %s", r.code, r.stderr)
	}
	var out []struct {
		Start struct {
			Subjects []string           `json:"subjects"`
			Medians  map[string]float64 `json:"median_ms"`
		} `json:"start"`
		DockerSkip string `json:"docker_unavailable"`
		Paths      []struct {
			Path        string `json:"path"`
			Unavailable string `json:"unavailable"`
			Throughput  struct {
				Min, Median float64
			} `json:"throughput_mib_s"`
			RTT struct {
				Min, Median float64
			} `json:"rtt_us"`
		} `json:"paths"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || len(out) != 1 {
		t.Fatalf("bench output: %v\n%s", err, r.stdout)
	}
	res := out[0]
	if want := 3; res.DockerSkip != "" {
		t.Logf("Docker skipped: %s", res.DockerSkip)
		if len(res.Start.Subjects) != want-1 {
			t.Errorf("start subjects without Docker: %v", res.Start.Subjects)
		}
	} else if len(res.Start.Subjects) != want {
		t.Errorf("start subjects: %v", res.Start.Subjects)
	}
	for _, s := range res.Start.Subjects {
		if res.Start.Medians[s] <= 0 {
			t.Errorf("start %s: median %v", s, res.Start.Medians[s])
		}
	}
	berthPaths := 0
	for _, p := range res.Paths {
		t.Logf("%-60s %8.0f MiB/s %10.1f us %s", p.Path, p.Throughput.Median, p.RTT.Median, p.Unavailable)
		optional := strings.Contains(p.Path, "docker") || strings.Contains(p.Path, "Docker") || strings.Contains(p.Path, "VM")
		if p.Unavailable != "" {
			if !optional {
				t.Errorf("%s: unavailable: %s", p.Path, p.Unavailable)
			}
			continue
		}
		if !optional {
			berthPaths++
		}
		if p.Throughput.Min <= 0 || p.RTT.Min <= 0 || p.Throughput.Median < p.Throughput.Min || p.RTT.Median < p.RTT.Min {
			t.Errorf("%s: throughput %+v, RTT %+v", p.Path, p.Throughput, p.RTT)
		}
	}
	if berthPaths != 5 {
		t.Errorf("%d of berth's 5 container paths measured", berthPaths)
	}
	if ls := berth(t, "network", "ls").stdout; regexp.MustCompile(`\sbnb[0-9]+\s`).MatchString(ls) {
		t.Errorf("the bench's user network is left:\n%s", ls)
	}
	if ps := berth(t, "ps", "-a").stdout; strings.Contains(ps, "bench-net-") {
		t.Errorf("the bench's instances are left:\n%s", ps)
	}
}

// bench scale runs end to end with tiny N (2 containers, 1 VM, one
// sample): every cycle it ran has a time, its halves add up to no more
// than it, each mode's idle replicas have a memory, the balanced port
// answered from both containers; Docker's and the VM's rows are there or
// say why not. Everything it made is gone when it returns: projects,
// instances, networks.
func TestBenchScale(t *testing.T) {
	img := busybox(t)
	testutil.NeedTool(t, "ip")
	r := berthLimit(t, 10*time.Minute, nil, nil, "bench", "--image", img, "-n", "1", "-replicas", "2", "-vm-replicas", "1", "--format", "json", "scale")
	if r.code != 0 {
		t.Fatalf("bench scale: exit %d: %s", r.code, r.stderr)
	}
	var out []struct {
		DockerSkip string `json:"docker_unavailable"`
		VMSkip     string `json:"vm_unavailable"`
		Cycle      struct {
			Subjects []string           `json:"subjects"`
			Medians  map[string]float64 `json:"median_ms"`
		} `json:"cycle"`
		Up     map[string]struct{ Median float64 } `json:"up_ms"`
		Down   map[string]struct{ Median float64 } `json:"down_ms"`
		Memory []struct {
			Mode     string  `json:"mode"`
			Replicas int     `json:"replicas"`
			PSS      []int64 `json:"pss_kib"`
		} `json:"memory"`
		Load []struct {
			Target   string                   `json:"target"`
			Replicas int                      `json:"replicas"`
			Distinct int                      `json:"distinct_answers"`
			RPS      struct{ Median float64 } `json:"req_per_s"`
		} `json:"load"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || len(out) != 1 {
		t.Fatalf("bench output: %v\n%s", err, r.stdout)
	}
	res := out[0]
	want := 1
	for _, skip := range []string{res.DockerSkip, res.VMSkip} {
		if skip != "" {
			t.Logf("skipped: %s", skip)
		} else {
			want++
		}
	}
	if len(res.Memory) != want || len(res.Cycle.Subjects) < 2 {
		t.Errorf("memory rows %d, want %d; cycles %v", len(res.Memory), want, res.Cycle.Subjects)
	}
	for _, s := range res.Cycle.Subjects {
		total, up, down := res.Cycle.Medians[s], res.Up[s].Median, res.Down[s].Median
		if up <= 0 || down <= 0 || up+down > total+1 {
			t.Errorf("%s: cycle %.1f ms, up %.1f, down %.1f", s, total, up, down)
		}
	}
	for _, m := range res.Memory {
		if m.Replicas == 0 || len(m.PSS) != m.Replicas {
			t.Errorf("%s: %d replicas, %v", m.Mode, m.Replicas, m.PSS)
		}
		for _, kib := range m.PSS {
			if kib <= 0 {
				t.Errorf("%s: idle PSS %d KiB", m.Mode, kib)
			}
		}
	}
	for _, l := range res.Load {
		if l.RPS.Median <= 0 || l.Distinct != l.Replicas {
			t.Errorf("%s: %.0f req/s, %d of %d replicas answered", l.Target, l.RPS.Median, l.Distinct, l.Replicas)
		}
	}
	if ps := berth(t, "ps", "-a").stdout; regexp.MustCompile(`bs[cvo][0-9]+-web-`).MatchString(ps) {
		t.Errorf("the bench's replicas are left:\n%s", ps)
	}
	if ls := berth(t, "network", "ls").stdout; regexp.MustCompile(`bs[cvo][0-9]+_default`).MatchString(ls) {
		t.Errorf("the bench's project networks are left:\n%s", ls)
	}
	if ents, _ := os.ReadDir(filepath.Join(berthRoot, "projects")); len(ents) > 0 {
		for _, e := range ents {
			if regexp.MustCompile(`^bs[cvo][0-9]+$`).MatchString(e.Name()) {
				t.Errorf("the bench's project %s is left", e.Name())
			}
		}
	}
}
