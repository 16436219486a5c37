package main

// `berth bench scale`: the seed's scaling claim, measured. A web service
// (busybox httpd answering with its replica's hostname) is scaled from 0
// to N replicas, until N distinct hostnames have answered, and back to
// 0: berth's containers and VMs behind one balanced port, against
// Debian's docker-compose 1.29 on a dockerd the bench starts. Then the
// host memory each idle replica holds, and the requests per second a
// balanced port serves against a single replica. Everything runs in the
// network namespace of `bench network` (benchnetenv.go), and what the
// bench made is removed when it returns, also on failure or a signal.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/bench"
	"github.com/berth-dev/berth/internal/project"
)

const (
	// The published ports in the bench's namespace: berth's balanced
	// container service, its single-replica service, its VM service,
	// and the first of the range docker-compose's replicas take theirs
	// from.
	scalePort       = 8180
	scaleOnePort    = 8181
	scaleVMPort     = 8182
	scaleDockerPort = 8200
	// scaleWait bounds one wait for every replica's answer.
	scaleWait = 5 * time.Minute
	// One load sample: so many GETs from so many concurrent clients.
	scaleRequests = 1000
	scaleClients  = 4
)

// scaleWeb is the service's command: a page with the replica's hostname.
const scaleWeb = `["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]`

// scaleResult is the scale scenario's outcome.
type scaleResult struct {
	Scenario   string `json:"scenario"`
	Containers int    `json:"containers"`
	VMs        int    `json:"vms"`
	Accel      string `json:"accel,omitempty"`
	DockerSkip string `json:"docker_unavailable,omitempty"`
	VMSkip     string `json:"vm_unavailable,omitempty"`
	// Cycle times whole cycles, 0 to N answering to 0; Up and Down are
	// its two halves.
	Cycle bench.Result            `json:"cycle"`
	Up    map[string]bench.Spread `json:"up_ms"`
	Down  map[string]bench.Spread `json:"down_ms"`
	// Memory is the PSS of each idle replica, KiB.
	Memory []scaleMemory `json:"memory"`
	Load   []scaleLoad   `json:"load"`
	// Ratios names the load figures compared: (target, its peer).
	Ratios [][2]string `json:"load_pairs"`
	How    []string    `json:"how"`
}

// scaleMemory is one mode's idle replicas.
type scaleMemory struct {
	Mode     string  `json:"mode"`
	Replicas int     `json:"replicas"`
	PSS      []int64 `json:"pss_kib"`
	Counts   string  `json:"counts"`
}

// scaleLoad is one load target's request rates.
type scaleLoad struct {
	Target   string      `json:"target"`
	Replicas int         `json:"replicas"`
	Distinct int         `json:"distinct_answers"` // over its last sample
	RPS      floatSpread `json:"req_per_s"`
}

func (r scaleResult) Print(w io.Writer) {
	r.Cycle.Print(w)
	for _, s := range r.Cycle.Subjects {
		up, down := r.Up[s], r.Down[s]
		fmt.Fprintf(w, "    %-36s up %8.1f ms (IQR %.1f-%.1f)   down %8.1f ms (IQR %.1f-%.1f)\n", s, float64(up.Median), up.P25, up.P75, float64(down.Median), down.P25, down.P75)
	}
	for _, skip := range []struct{ what, why string }{{"Docker rows", r.DockerSkip}, {"VM rows", r.VMSkip}} {
		if skip.why != "" {
			fmt.Fprintf(w, "  %s skipped: %s\n", skip.what, skip.why)
		}
	}
	fmt.Fprintf(w, "memory: PSS per idle replica, KiB (accelerator for VMs: %s)\n", r.Accel)
	for _, m := range r.Memory {
		lo, mid, hi := minMedMax(m.PSS)
		fmt.Fprintf(w, "  %-44s %2d replicas  median %7d  (min %d, max %d)  %s\n", m.Mode, m.Replicas, mid, lo, hi, m.Counts)
	}
	fmt.Fprintf(w, "load: %d GETs per sample, %d concurrent clients, a new connection each (%d alternating samples)\n", scaleRequests, scaleClients, r.Cycle.Runs)
	byName := map[string]scaleLoad{}
	for _, l := range r.Load {
		byName[l.Target] = l
		fmt.Fprintf(w, "  %-52s req/s median %7.0f  (IQR %.0f-%.0f, min %.0f, max %.0f)  %d replicas answered\n", l.Target, l.RPS.Median, l.RPS.P25, l.RPS.P75, l.RPS.Min, l.RPS.Max, l.Distinct)
	}
	for _, p := range r.Ratios {
		a, b := byName[p[0]], byName[p[1]]
		if a.RPS.Median > 0 && b.RPS.Median > 0 {
			fmt.Fprintf(w, "  req/s %s / %s = %.2f\n", p[0], p[1], a.RPS.Median/b.RPS.Median)
		}
	}
	for _, h := range r.How {
		fmt.Fprintf(w, "  %s\n", h)
	}
}

// scaleEnv is what the scenario's subjects share.
type scaleEnv struct {
	ctx  context.Context
	ns   *benchNetns
	self string
	root string
}

func (e *scaleEnv) berth(args ...string) []string {
	return append([]string{e.self, "--root", e.root}, args...)
}

// waitAnswers waits until n distinct replicas have answered GETs of
// ports on the bench's host address, from a process in the namespace.
func (e *scaleEnv) waitAnswers(n int, ports ...int) error {
	argv := []string{e.self, netprobeVerb, "http-wait", strconv.Itoa(n), scaleWait.String()}
	for _, p := range ports {
		argv = append(argv, fmt.Sprintf("http://%s:%d/", benchHostIP, p))
	}
	return e.ns.run(e.ctx, argv...)
}

// phases keeps each subject's up and down halves, past its warm-up.
type phases struct {
	up, down map[string][]time.Duration
	warm     map[string]bool
}

// cycle is a Run that scales up with up(n) until n replicas answer on
// ports, then down with down(), recording both halves under name.
func (p *phases) cycle(e *scaleEnv, name string, n int, up func(int) []string, down []string, ports ...int) bench.Subject {
	return bench.Subject{Name: name, Run: func() error {
		if err := e.ctx.Err(); err != nil {
			return err
		}
		t0 := time.Now()
		if err := e.ns.run(e.ctx, up(n)...); err != nil {
			return err
		}
		if err := e.waitAnswers(n, ports...); err != nil {
			return err
		}
		t1 := time.Now()
		if err := e.ns.run(e.ctx, down...); err != nil {
			return err
		}
		if p.warm[name] {
			p.up[name] = append(p.up[name], t1.Sub(t0))
			p.down[name] = append(p.down[name], time.Since(t1))
		}
		p.warm[name] = true
		return nil
	}}
}

// benchScale runs the scale scenario: n alternating cycles of each
// subject, containers replicas of the container service, vms of the VM
// service.
func benchScale(g *globals, ref string, n, containers, vms int) (_ scaleResult, err error) {
	if containers < 1 || vms < 1 || n < 1 {
		return scaleResult{}, fmt.Errorf("want at least one run and one replica of each kind")
	}
	ctx, done := interruptible()
	defer done(&err)
	self, err := os.Executable()
	if err != nil {
		return scaleResult{}, err
	}
	tmp, err := os.MkdirTemp("", "bbs-") // short: dockerd's sockets live under it
	if err != nil {
		return scaleResult{}, err
	}
	defer os.RemoveAll(tmp)
	ns, err := newBenchNetns()
	if err != nil {
		return scaleResult{}, err
	}
	defer ns.close()
	e := &scaleEnv{ctx: ctx, ns: ns, self: self, root: g.root}
	res := scaleResult{Scenario: "scale: a web service from 0 to N answering replicas and back to 0", Containers: containers, VMs: vms}

	// What the bench made, undone last first, after a signal too.
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()
	cleanup := func(argv []string) {
		if err := ns.run(context.Background(), argv...); err != nil {
			fmt.Fprintf(os.Stderr, "berth bench scale: clean-up: %v\n", err)
		}
	}

	// berth's projects: each has one service, web, at 0 replicas.
	tag := strconv.Itoa(os.Getpid())
	up := func(proj, runtime string, port, replicas int) (string, error) {
		body := fmt.Sprintf("services:\n  web:\n    image: %s\n    command: %s\n    ports: [\"%d:80\"]\n%s    deploy:\n      replicas: %d\n",
			ref, scaleWeb, port, runtime, replicas)
		file, err := writeComposeFile(tmp, proj, body)
		if err != nil {
			return "", err
		}
		if err := ns.run(ctx, e.berth("up", "-d", "-p", proj, "-f", file)...); err != nil {
			return "", err
		}
		cleanups = append(cleanups, func() { cleanup(e.berth("down", "-p", proj)) })
		return file, nil
	}
	scale := func(proj string) func(int) []string {
		return func(n int) []string { return e.berth("scale", "-p", proj, "web="+strconv.Itoa(n)) }
	}
	ctrProj, vmProj, oneProj := "bsc"+tag, "bsv"+tag, "bso"+tag
	if _, err := up(ctrProj, "", scalePort, 0); err != nil {
		return res, err
	}
	if _, err := findGuest(g, ""); err != nil {
		res.VMSkip = err.Error()
	} else if _, err := up(vmProj, "    runtime: berth-vm\n", scaleVMPort, 0); err != nil {
		return res, err
	}

	// Docker: its own dockerd, the image loaded from a docker archive,
	// and docker-compose's project at 0 replicas.
	const dockerImg = "localhost/berth-bench:scale"
	dkProj := "bsd" + tag
	var compose func(args ...string) []string
	var dk *benchDockerd
	var why string
	if _, err := exec.LookPath("docker-compose"); err != nil {
		why = "docker-compose is not installed (Debian's docker-compose package)"
	} else if dk, why, err = startBenchDocker(ctx, g, ns, ref, tmp, dockerImg); err != nil {
		return res, err
	}
	switch {
	case dk == nil:
		res.DockerSkip = why
	default:
		cleanups = append(cleanups, func() { dk.stop(ns) })
		body := fmt.Sprintf("services:\n  web:\n    image: %s\n    command: %s\n    ports: [\"%d-%d:80\"]\n",
			dockerImg, scaleWeb, scaleDockerPort, scaleDockerPort+containers-1)
		file, err := writeComposeFile(tmp, dkProj, body)
		if err != nil {
			return res, err
		}
		dc, _ := exec.LookPath("docker-compose")
		compose = func(args ...string) []string {
			return append([]string{"env", "DOCKER_HOST=unix://" + filepath.Join(dk.dir, "d.sock"), "DOCKER_CONFIG=" + filepath.Join(dk.dir, "cli"),
				"COMPOSE_HTTP_TIMEOUT=600", dc, "--no-ansi", "-p", dkProj, "-f", file}, args...)
		}
		if err := ns.run(ctx, compose("up", "-d", "--scale", "web=0")...); err != nil {
			return res, err
		}
		cleanups = append(cleanups, func() { cleanup(compose("down", "-t", "1")) })
	}

	// 1. The cycles, alternating.
	ph := &phases{up: map[string][]time.Duration{}, down: map[string][]time.Duration{}, warm: map[string]bool{}}
	ctrName := fmt.Sprintf("berth scale, %d containers", containers)
	dkName := fmt.Sprintf("docker-compose --scale, %d containers", containers)
	vmName := fmt.Sprintf("berth scale, %d VMs", vms)
	subjects := []bench.Subject{ph.cycle(e, ctrName, containers, scale(ctrProj), scale(ctrProj)(0), scalePort)}
	if compose != nil {
		var ports []int
		for i := 0; i < containers; i++ {
			ports = append(ports, scaleDockerPort+i)
		}
		subjects = append(subjects, ph.cycle(e, dkName, containers,
			func(n int) []string { return compose("up", "-d", "--scale", "web="+strconv.Itoa(n)) },
			compose("up", "-d", "-t", "1", "--scale", "web=0"), ports...))
	}
	if res.VMSkip == "" {
		subjects = append(subjects, ph.cycle(e, vmName, vms, scale(vmProj), scale(vmProj)(0), scaleVMPort))
	}
	if len(subjects) == 1 {
		// Compare wants two subjects: without Docker and VMs, the
		// containers' cycle beside a cycle of one container.
		subjects = append(subjects, ph.cycle(e, "berth scale, 1 container", 1, scale(ctrProj), scale(ctrProj)(0), scalePort))
	}
	res.Cycle, err = bench.Compare("scale: 0 -> N replicas answering -> 0", subjects[0], subjects[1], n, subjects[2:]...)
	if err != nil {
		return res, err
	}
	res.Cycle.Pairs = nil
	if compose != nil {
		res.Cycle.Pairs = [][2]string{{ctrName, dkName}}
		res.Cycle.Ratio = res.Cycle.RatioOf(ctrName, dkName)
		res.Cycle.Note = "goal for containers: berth / docker-compose <= 0.3"
	}
	res.Up, res.Down = map[string]bench.Spread{}, map[string]bench.Spread{}
	for _, s := range res.Cycle.Subjects {
		res.Up[s], res.Down[s] = bench.SpreadOf(ph.up[s]), bench.SpreadOf(ph.down[s])
	}

	// 2. Idle replicas: both projects at N, one more with one replica.
	if _, err := up(oneProj, "", scaleOnePort, 1); err != nil {
		return res, err
	}
	if err := e.scaleTo(scale(ctrProj)(containers), containers, scalePort); err != nil {
		return res, err
	}
	if res.VMSkip == "" {
		if err := e.scaleTo(scale(vmProj)(vms), vms, scaleVMPort); err != nil {
			return res, err
		}
	}
	if compose != nil {
		if err := e.scaleTo(compose("up", "-d", "--scale", "web="+strconv.Itoa(containers)), 1, scaleDockerPort); err != nil {
			return res, err
		}
	}
	time.Sleep(2 * time.Second) // let the replicas settle after start-up
	m, err := replicaMemory(g, ctrProj, "berth container (monitor, init, httpd)")
	if err != nil {
		return res, err
	}
	res.Memory = append(res.Memory, m)
	if res.VMSkip == "" {
		m, err := replicaMemory(g, vmProj, "berth VM (monitor, QEMU and its children)")
		if err != nil {
			return res, err
		}
		res.Memory = append(res.Memory, m)
		res.Accel = m.Counts
	} else {
		res.Accel = "none (no VM ran)"
	}
	if compose != nil {
		m, err := e.dockerMemory(dk, compose)
		if err != nil {
			return res, err
		}
		res.Memory = append(res.Memory, m)
	}

	// 3. Load, alternating between the targets.
	targets := []scaleLoad{
		{Target: fmt.Sprintf("berth balanced port, %d containers", containers), Replicas: containers},
		{Target: "berth port, 1 container", Replicas: 1},
	}
	ports := []int{scalePort, scaleOnePort}
	res.Ratios = [][2]string{{targets[0].Target, targets[1].Target}}
	if res.VMSkip == "" {
		targets = append(targets, scaleLoad{Target: fmt.Sprintf("berth balanced port, %d VMs", vms), Replicas: vms})
		ports = append(ports, scaleVMPort)
	}
	if compose != nil {
		targets = append(targets, scaleLoad{Target: "docker published port, 1 container of " + strconv.Itoa(containers), Replicas: 1})
		ports = append(ports, scaleDockerPort)
		res.Ratios = append(res.Ratios, [2]string{targets[1].Target, targets[len(targets)-1].Target})
	}
	if err := e.load(targets, ports, n); err != nil {
		return res, err
	}
	res.Load = targets
	res.How = []string{
		"a cycle: `berth scale web=N` (or `docker-compose up -d --scale web=N`), then GETs over new connections until N distinct hostnames answered, then scale to 0 (which returns once the replicas are removed)",
		fmt.Sprintf("berth's replicas share one published port, %s:%d, balanced by the kernel's DNAT; docker-compose cannot publish one host port for N replicas, so each of its replicas takes one port of %d-%d, and the wait GETs each port in turn",
			benchHostIP, scalePort, scaleDockerPort, scaleDockerPort+containers-1),
		"memory: the PSS of each replica's processes (berth: monitor and the instance's process tree; docker: containerd-shim and its tree; dockerd, containerd and berth's supervisor are not counted)",
	}
	return res, nil
}

// writeComposeFile writes body as the compose file of project proj, in a
// directory of its own under dir.
func writeComposeFile(dir, proj, body string) (string, error) {
	d := filepath.Join(dir, proj)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", err
	}
	file := filepath.Join(d, "compose.yaml")
	return file, os.WriteFile(file, []byte(body), 0o644)
}

// scaleTo runs argv and waits until n distinct replicas answer on ports.
func (e *scaleEnv) scaleTo(argv []string, n int, ports ...int) error {
	if err := e.ns.run(e.ctx, argv...); err != nil {
		return err
	}
	return e.waitAnswers(n, ports...)
}

// replicaMemory reads the PSS of each running replica of project proj:
// its monitor, and its init or QEMU with their descendants.
func replicaMemory(g *globals, proj, mode string) (scaleMemory, error) {
	st, err := g.instanceStore()
	if err != nil {
		return scaleMemory{}, err
	}
	all, err := st.List()
	if err != nil {
		return scaleMemory{}, err
	}
	m := scaleMemory{Mode: mode}
	accels := map[string]int{}
	for _, in := range all {
		if in.Labels[project.LabelProject] != proj || !in.Status.Active() {
			continue
		}
		kib, err := sumPSS(append([]int{in.MonitorPid}, bench.Tree(in.Pid)...))
		if err != nil {
			return scaleMemory{}, fmt.Errorf("%s: %w", in.Name, err)
		}
		m.PSS = append(m.PSS, kib)
		if in.Accel != "" {
			accels[in.Accel]++
		}
	}
	m.Replicas = len(m.PSS)
	if m.Replicas == 0 {
		return m, fmt.Errorf("project %s has no running replica", proj)
	}
	var parts []string
	for a, c := range accels {
		parts = append(parts, fmt.Sprintf("%s x%d", a, c))
	}
	m.Counts = strings.Join(parts, ", ")
	return m, nil
}

// dockerMemory reads the PSS of each docker-compose replica: its
// containerd-shim and the shim's tree.
func (e *scaleEnv) dockerMemory(dk *benchDockerd, compose func(args ...string) []string) (scaleMemory, error) {
	out, err := e.ns.output(e.ctx, compose("ps", "-q", "web")...)
	if err != nil {
		return scaleMemory{}, err
	}
	m := scaleMemory{Mode: "docker container (containerd-shim, httpd)"}
	for _, id := range strings.Fields(out) {
		pidOut, err := e.ns.output(e.ctx, dk.argv("inspect", "-f", "{{.State.Pid}}", id)...)
		if err != nil {
			return scaleMemory{}, err
		}
		pid, err := strconv.Atoi(strings.TrimSpace(pidOut))
		if err != nil {
			return scaleMemory{}, fmt.Errorf("docker inspect %s: pid %q", id, pidOut)
		}
		shim, err := parentPid(pid)
		if err != nil {
			return scaleMemory{}, err
		}
		kib, err := sumPSS(bench.Tree(shim))
		if err != nil {
			return scaleMemory{}, err
		}
		m.PSS = append(m.PSS, kib)
	}
	m.Replicas = len(m.PSS)
	if m.Replicas == 0 {
		return m, errors.New("docker-compose's project has no running replica")
	}
	return m, nil
}

// parentPid reads pid's parent from /proc.
func parentPid(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command's name is in parentheses and may hold spaces.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	return strconv.Atoi(f[1])
}

// load takes n samples of each target, alternating, each a process in
// the namespace that makes scaleRequests GETs of its port.
func (e *scaleEnv) load(targets []scaleLoad, ports []int, n int) error {
	rates := make([][]time.Duration, len(targets))
	sample := func(i int, keep bool) error {
		if err := e.ctx.Err(); err != nil {
			return err
		}
		out, err := e.ns.output(e.ctx, e.self, netprobeVerb, "http-load", strconv.Itoa(scaleRequests), strconv.Itoa(scaleClients),
			fmt.Sprintf("http://%s:%d/", benchHostIP, ports[i]))
		if err != nil {
			return fmt.Errorf("%s: %w", targets[i].Target, err)
		}
		var r bench.LoadResult
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			return fmt.Errorf("%s: the load's output %q: %v", targets[i].Target, out, err)
		}
		targets[i].Distinct = r.Distinct
		if keep {
			// Kept as the time per request, so that quartiles of
			// durations give those of the rate, reversed.
			rates[i] = append(rates[i], time.Duration(r.ElapsedNs/int64(r.Requests)))
		}
		return nil
	}
	for i := range targets {
		if err := sample(i, false); err != nil {
			return err
		}
	}
	for round := 0; round < n; round++ {
		for j := range targets {
			if err := sample((round+j)%len(targets), true); err != nil {
				return err
			}
		}
	}
	for i := range targets {
		q := bench.Quartiles(rates[i])
		rps := func(d time.Duration) float64 { return 1 / d.Seconds() }
		targets[i].RPS = floatSpread{Min: rps(q[4]), P25: rps(q[3]), Median: rps(q[2]), P75: rps(q[1]), Max: rps(q[0])}
	}
	return nil
}
