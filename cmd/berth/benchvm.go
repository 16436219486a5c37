package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/bench"
	"github.com/berth-dev/berth/internal/vm"
)

// benchVMStart compares like with like, on the same kernel, machine type,
// accelerator, RAM and firmware: berth starting a VM from its template
// against plain QEMU restoring a saved busybox guest (-incoming), and
// berth's cold boot against plain QEMU booting that guest. Each berth
// sample is labelled with how its instance says it started.
func benchVMStart(g *globals, ref string, n int) (bench.Result, error) {
	guest, err := findGuest(g, "")
	if err != nil {
		return bench.Result{}, err
	}
	tmp, err := os.MkdirTemp("", "berth-bench-vm-")
	if err != nil {
		return bench.Result{}, err
	}
	defer os.RemoveAll(tmp)
	plain, err := newPlainGuest(guest, tmp)
	if err != nil {
		return bench.Result{}, err
	}
	self, err := os.Executable()
	if err != nil {
		return bench.Result{}, err
	}
	seq := 0
	berthRun := func(name, template string) bench.Subject {
		var instance string
		return bench.Subject{
			Name: name,
			Run: func() error {
				seq++
				instance = fmt.Sprintf("bench-vm-%d-%d", os.Getpid(), seq)
				cmd := exec.Command(self, "--root", g.root, "run", "--vm", "--network", "none", "--name", instance, ref, "/bin/true")
				cmd.Env = append(os.Environ(), "BERTH_VM_TEMPLATE="+template)
				if out, err := cmd.CombinedOutput(); err != nil {
					return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
				}
				return nil
			},
			Label: func() (string, error) {
				defer exec.Command(self, "--root", g.root, "rm", "-f", instance).Run()
				_, in, err := lookupInstance(g, instance)
				if err != nil {
					return "", err
				}
				return in.VMStart + ", " + in.Transport + ", " + in.Accel, nil
			},
		}
	}
	const (
		fromTemplate = "berth run --vm (template)"
		restore      = "plain QEMU restore (-incoming)"
		cold         = "berth run --vm (cold boot)"
		boot         = "plain QEMU boot"
	)
	subjects := []bench.Subject{
		berthRun(fromTemplate, "on"),
		{Name: restore, Run: plain.restore},
		berthRun(cold, "off"),
		{Name: boot, Run: plain.boot},
	}
	pairs := [][2]string{{fromTemplate, restore}, {cold, boot}}
	if !vm.TemplatesEnabled() {
		subjects = subjects[2:]
		pairs = pairs[1:]
	}
	r, err := bench.Compare("vm start: run --vm of /bin/true, against plain QEMU", subjects[0], subjects[1], n, subjects[2:]...)
	r.Pairs = pairs
	r.Ratio = r.RatioOf(pairs[0][0], pairs[0][1])
	firmware := "QEMU's default firmware"
	if fw := vm.DefaultFirmware(); fw != "" {
		firmware = "firmware " + filepath.Base(fw)
	}
	r.Note = fmt.Sprintf("accelerator %s; same kernel, q35, 256 MiB, %s; the plain guest is busybox as /init, "+
		"saved while it waits on a serial port and restored from a file; each berth sample says how it started "+
		"(its instance's vm_start, transport, accelerator); berth's run includes its agent, the image's disks and the workload",
		guest.Accel, firmware)
	return r, err
}

// compareResult is the main job's side-by-side view of one image run
// both ways.
type compareResult struct {
	Scenario string     `json:"scenario"`
	Runs     int        `json:"runs"`
	Rows     []modeInfo `json:"modes"`
	// FirstVMMs is the first VM run, which makes the image's template
	// when there is none; it is not among the VM's samples.
	FirstVMMs float64 `json:"first_vm_run_ms"`
}

type modeInfo struct {
	Mode   string       `json:"mode"`
	Output string       `json:"output"`
	Kernel string       `json:"kernel"`
	Run    bench.Spread `json:"run_ms"`
	// Memory is the idle PSS of each of memorySamples instances, KiB.
	MemoryKiB []int64 `json:"idle_pss_kib"`
	Accel     string  `json:"accel,omitempty"`
	// VMStarts counts how the VM runs really started (template or boot),
	// as each instance recorded it.
	VMStarts map[string]int `json:"vm_starts,omitempty"`
}

// memorySamples is how many idle instances of each mode are measured.
const memorySamples = 3

func (c compareResult) Print(w io.Writer) {
	fmt.Fprintf(w, "%s\n", c.Scenario)
	fmt.Fprintf(w, "  %-10s %-28s %-24s %22s %20s\n", "MODE", "OUTPUT", "KERNEL INSIDE", "RUN ms: MEDIAN (IQR)", "IDLE PSS MiB (range)")
	for _, r := range c.Rows {
		mode := r.Mode
		if r.Accel != "" {
			mode += " (" + r.Accel + ")"
		}
		lo, mid, hi := minMedMax(r.MemoryKiB)
		fmt.Fprintf(w, "  %-10s %-28s %-24s %8.0f (%5.0f-%5.0f) %8.1f (%.1f-%.1f)\n", mode, r.Output, r.Kernel,
			r.Run.Median, r.Run.P25, r.Run.P75, float64(mid)/1024, float64(lo)/1024, float64(hi)/1024)
	}
	for _, r := range c.Rows {
		if len(r.VMStarts) > 0 {
			fmt.Fprintf(w, "  %d runs each; the VM runs started %s; the first VM run took %.0f ms and is not among them (it makes the image's template if there is none; BERTH_VM_TEMPLATE=off boots cold)\n",
				c.Runs, describeStarts(r.VMStarts), c.FirstVMMs)
		}
	}
}

// describeStarts says how many VM runs started which way.
func describeStarts(starts map[string]int) string {
	names := map[string]string{"template": "from the template (a saved booted guest)", "boot": "with a kernel boot"}
	var parts []string
	for _, k := range []string{"template", "boot"} {
		if n := starts[k]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, names[k]))
		}
	}
	for k, n := range starts {
		if _, ok := names[k]; !ok {
			parts = append(parts, fmt.Sprintf("%d %q", n, k))
		}
	}
	return strings.Join(parts, ", ")
}

func minMedMax(v []int64) (lo, mid, hi int64) {
	if len(v) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[0], s[len(s)/2], s[len(s)-1]
}

// benchCompare runs the image n times as a container and n times as a
// VM, alternating, and reports output, kernel, run times and the host
// memory an idle instance holds (PSS of every host process that makes it
// up), each VM run labelled with how it really started.
func benchCompare(g *globals, ref string, n int) (compareResult, error) {
	self, err := os.Executable()
	if err != nil {
		return compareResult{}, err
	}
	res := compareResult{Scenario: "the same image both ways: `run IMAGE sh -c 'echo hello; uname -r'`, then an idle `sleep`", Runs: n}
	rows := map[string]*modeInfo{"container": {Mode: "container"}, "vm": {Mode: "vm", VMStarts: map[string]int{}}}
	times := map[string][]time.Duration{}
	seq := 0
	runOnce := func(mode string) (time.Duration, error) {
		seq++
		name := fmt.Sprintf("bench-compare-%d-%d", os.Getpid(), seq)
		args := []string{"--root", g.root, "run", "--network", "none", "--name", name}
		if mode == "vm" {
			args = append(args, "--vm")
		}
		start := time.Now()
		out, err := exec.Command(self, append(args, ref, "sh", "-c", "echo hello from $(hostname); uname -r")...).Output()
		d := time.Since(start)
		defer exec.Command(self, "--root", g.root, "rm", "-f", name).Run()
		if err != nil {
			return 0, fmt.Errorf("%s run: %v", mode, err)
		}
		row := rows[mode]
		lines := strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)
		row.Output = lines[0]
		if len(lines) == 2 {
			row.Kernel = lines[1]
		}
		_, in, err := lookupInstance(g, name)
		if err != nil {
			return 0, err
		}
		if mode == "vm" {
			row.VMStarts[in.VMStart]++
			row.Accel = in.Accel
		}
		return d, nil
	}
	// The first VM run may make the template: timed apart.
	d, err := runOnce("vm")
	if err != nil {
		return res, err
	}
	res.FirstVMMs = float64(d.Microseconds()) / 1000
	clear(rows["vm"].VMStarts)
	if _, err := runOnce("container"); err != nil { // warm-up
		return res, err
	}
	for i := 0; i < n; i++ {
		for _, mode := range [][2]string{{"container", "vm"}, {"vm", "container"}}[i%2] {
			d, err := runOnce(mode)
			if err != nil {
				return res, err
			}
			times[mode] = append(times[mode], d)
		}
	}
	for _, mode := range []string{"container", "vm"} {
		row := rows[mode]
		row.Run = bench.SpreadOf(times[mode])
		for i := 0; i < memorySamples; i++ {
			pss, err := idleFootprint(g, self, ref, mode == "vm")
			if err != nil {
				return res, err
			}
			row.MemoryKiB = append(row.MemoryKiB, pss)
		}
		res.Rows = append(res.Rows, *row)
	}
	return res, nil
}

// idleFootprint starts a detached idle instance and sums the PSS of its
// monitor, its init or QEMU, and their descendants (workload, virtiofsd).
// A PSS that cannot be read is an error, never a zero.
func idleFootprint(g *globals, self, ref string, asVM bool) (int64, error) {
	args := []string{"--root", g.root, "run", "-d", "--network", "none"}
	if asVM {
		args = append(args, "--vm")
	}
	out, err := exec.Command(self, append(args, ref, "sleep", "1000")...).Output()
	if err != nil {
		return 0, fmt.Errorf("run -d: %v", err)
	}
	id := strings.TrimSpace(string(out))
	defer exec.Command(self, "--root", g.root, "rm", "-f", id).Run()
	time.Sleep(time.Second) // let start-up settle
	_, in, err := lookupInstance(g, id)
	if err != nil {
		return 0, err
	}
	if !in.Status.Active() {
		return 0, fmt.Errorf("instance %s is %s", in.ShortID(), in.Status)
	}
	return sumPSS(append([]int{in.MonitorPid}, bench.Tree(in.Pid)...))
}

// sumPSS adds up the PSS of pids, failing on the first it cannot read.
func sumPSS(pids []int) (int64, error) {
	var total int64
	for _, pid := range pids {
		p, err := bench.PSS(pid)
		if err != nil {
			return 0, fmt.Errorf("read the PSS of pid %d: %v", pid, err)
		}
		total += p
	}
	return total, nil
}
