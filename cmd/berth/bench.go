package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/bench"
	"github.com/berth-dev/berth/internal/errdefs"
)

// printer is a scenario's result.
type printer interface{ Print(w io.Writer) }

func cmdBench(g *globals, args []string) error {
	fs := newFlags("bench")
	ref := fs.String("image", "demo", "image to run")
	n := fs.Int("n", 20, "runs of each subject")
	format := fs.String("format", "", "output format: json")
	replicas := fs.Int("replicas", 20, "scale: replicas of the container service")
	vmReplicas := fs.Int("vm-replicas", 5, "scale: replicas of the VM service")
	if err := parse(fs, args); err != nil {
		return err
	}
	scenarios := fs.Args()
	if len(scenarios) == 0 {
		scenarios = []string{"start", "memory"}
	}
	var results []printer
	for _, sc := range scenarios {
		var r printer
		var err error
		switch sc {
		case "start":
			r, err = benchStart(g, *ref, *n)
		case "memory":
			r, err = benchMemory(g, *ref)
		case "vm":
			r, err = benchVMStart(g, *ref, *n)
		case "compare":
			r, err = benchCompare(g, *ref, *n)
		case "ctr", "exec":
			r, err = benchRuntime(g, sc, *ref, *n)
		case "pull":
			r, err = benchPull(*n)
		case "network":
			r, err = benchNetwork(g, *ref, *n)
		case "scale":
			r, err = benchScale(g, *ref, *n, *replicas, *vmReplicas)
		default:
			return fmt.Errorf("unknown scenario %q: want start, memory, vm, compare, ctr, exec, pull, network or scale: %w", sc, errdefs.ErrInvalid)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", sc, err)
		}
		results = append(results, r)
		if *format != "json" {
			r.Print(os.Stdout)
		}
	}
	if *format == "json" {
		return printJSON(results)
	}
	return nil
}

// benchStart times `berth run --rm IMAGE /bin/true` against `runc run` of
// the same root file system.
func benchStart(g *globals, ref string, n int) (bench.Result, error) {
	runc, err := exec.LookPath("runc")
	if err != nil {
		return bench.Result{}, fmt.Errorf("runc is not installed: %w", errdefs.ErrUnavailable)
	}
	tmp, err := os.MkdirTemp("", "berth-bench-")
	if err != nil {
		return bench.Result{}, err
	}
	defer os.RemoveAll(tmp)
	bundle := filepath.Join(tmp, "bundle")
	err = imageBundle(g, runc, ref, bundle, func(proc map[string]any) {
		proc["terminal"] = false
		proc["args"] = []string{"/bin/true"}
	})
	if err != nil {
		return bench.Result{}, err
	}
	self, err := os.Executable()
	if err != nil {
		return bench.Result{}, err
	}
	r, err := bench.Compare("start: run --rm of /bin/true",
		bench.Subject{Name: "berth run --rm", Argv: []string{self, "--root", g.root, "run", "--rm", "--network", "none", ref, "/bin/true"}},
		bench.Subject{Name: "runc run", Argv: []string{runc, "--root", filepath.Join(tmp, "runc-state"), "run", "--bundle", bundle, "bench-true"}},
		n)
	r.Note = "same root file system; both create namespaces, cgroups and mounts; goal: ratio <= 0.6"
	return r, err
}

// imageBundle writes an OCI bundle at dir with `runc spec`'s config,
// changed by edit (given the config's "process" object), whose rootfs is
// a copy of the image's layers.
func imageBundle(g *globals, runc, ref, dir string, edit func(proc map[string]any)) error {
	images, err := g.imageStore()
	if err != nil {
		return err
	}
	img, err := images.Resolve(ref)
	if err != nil {
		return err
	}
	layers, err := images.Layers(context.Background(), img)
	if err != nil {
		return err
	}
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return err
	}
	for _, l := range layers {
		if out, err := exec.Command("cp", "-a", l+"/.", rootfs).CombinedOutput(); err != nil {
			return fmt.Errorf("copy layer for runc: %v: %s", err, out)
		}
	}
	if out, err := exec.Command(runc, "spec", "--bundle", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("runc spec: %v: %s", err, out)
	}
	path := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var spec map[string]any
	if err := json.Unmarshal(b, &spec); err != nil {
		return err
	}
	edit(spec["process"].(map[string]any))
	if b, err = json.Marshal(spec); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// memoryResult is the memory held per idle detached instance.
type memoryResult struct {
	Scenario   string `json:"scenario"`
	MonitorPSS int64  `json:"monitor_pss_kib"`
	MonitorRSS int64  `json:"monitor_rss_kib"`
	InitPSS    int64  `json:"init_pss_kib"`
	InitRSS    int64  `json:"init_rss_kib"`
}

func (m memoryResult) Print(w io.Writer) {
	fmt.Fprintf(w, "%s\n", m.Scenario)
	fmt.Fprintf(w, "  monitor   PSS %6d KiB   RSS %6d KiB\n", m.MonitorPSS, m.MonitorRSS)
	fmt.Fprintf(w, "  init      PSS %6d KiB   RSS %6d KiB\n", m.InitPSS, m.InitRSS)
}

// benchMemory starts a detached `sleep` and reads the PSS of its monitor
// and of berth's init inside the container.
func benchMemory(g *globals, ref string) (memoryResult, error) {
	self, err := os.Executable()
	if err != nil {
		return memoryResult{}, err
	}
	out, err := exec.Command(self, "--root", g.root, "run", "-d", "--network", "none", ref, "sleep", "1000").Output()
	if err != nil {
		return memoryResult{}, fmt.Errorf("run -d: %v", err)
	}
	id := strings.TrimSpace(string(out))
	defer exec.Command(self, "--root", g.root, "rm", "-f", id).Run()
	time.Sleep(500 * time.Millisecond) // let both settle after start-up
	_, in, err := lookupInstance(g, id)
	if err != nil {
		return memoryResult{}, err
	}
	m := memoryResult{Scenario: "memory: idle detached `sleep` instance (KiB)"}
	for _, f := range []struct {
		dst  *int64
		read func(int) (int64, error)
		pid  int
		what string
	}{
		{&m.MonitorPSS, bench.PSS, in.MonitorPid, "the monitor's PSS"},
		{&m.MonitorRSS, bench.RSS, in.MonitorPid, "the monitor's RSS"},
		{&m.InitPSS, bench.PSS, in.Pid, "the init's PSS"},
		{&m.InitRSS, bench.RSS, in.Pid, "the init's RSS"},
	} {
		if *f.dst, err = f.read(f.pid); err != nil {
			return memoryResult{}, fmt.Errorf("read %s (pid %d): %v", f.what, f.pid, err)
		}
	}
	return m, nil
}
