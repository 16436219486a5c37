package main

// `berth bench network`: what a network costs at start, against Docker's
// default bridge and against --network none, then TCP throughput and
// round-trip time over each path into an instance, beside the same over
// Docker's bridge and over the host's loopback. Everything runs in a
// network namespace of the bench's own (benchnetenv.go), so it talks to
// no address but its own, and what it made goes with the namespace.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/bench"
	"github.com/berth-dev/berth/internal/network"
)

const (
	// netTransfer is what one throughput sample streams.
	netTransfer = 32 << 20
	// netRoundTrips is the round trips of one latency sample.
	netRoundTrips = 200
	// netProbePort is the probe server's port inside an instance.
	netProbePort = "7000"
)

// netResult is the network scenario's outcome.
type netResult struct {
	Scenario string `json:"scenario"`
	Runs     int    `json:"runs"`
	// Start compares starts with a network; StartSkipped says why
	// Docker is not among them, when it is not.
	Start        bench.Result `json:"start"`
	DockerSkip   string       `json:"docker_unavailable,omitempty"`
	TransferMiB  int          `json:"transfer_mib"`
	RoundTrips   int          `json:"round_trips_per_sample"`
	Accel        string       `json:"accel,omitempty"`
	Paths        []netPathFig `json:"paths"`
	Comparisons  [][2]string  `json:"pairs"`
	VMStartLabel string       `json:"vm_start,omitempty"`
}

// netPathFig is one path's figures, or why it has none.
type netPathFig struct {
	Path        string `json:"path"`
	Unavailable string `json:"unavailable,omitempty"`
	// Throughput is transfer_mib over each sample's transfer time, MiB/s.
	Throughput floatSpread `json:"throughput_mib_s"`
	// RTT is over every round trip of every sample, microseconds.
	RTT floatSpread `json:"rtt_us"`
}

// floatSpread is min, quartiles and max.
type floatSpread struct {
	Min    float64 `json:"min"`
	P25    float64 `json:"p25"`
	Median float64 `json:"median"`
	P75    float64 `json:"p75"`
	Max    float64 `json:"max"`
}

func (r netResult) Print(w io.Writer) {
	r.Start.Print(w)
	if r.DockerSkip != "" {
		fmt.Fprintf(w, "  Docker rows skipped: %s\n", r.DockerSkip)
	}
	fmt.Fprintf(w, "%s (%d alternating samples per path; accelerator %s)\n", r.Scenario, r.Runs, r.Accel)
	fmt.Fprintf(w, "  %-58s %24s %26s\n", "PATH", "MiB/s: MEDIAN (IQR)", "RTT us: MEDIAN (IQR)")
	byName := map[string]netPathFig{}
	for _, p := range r.Paths {
		byName[p.Path] = p
		if p.Unavailable != "" {
			fmt.Fprintf(w, "  %-58s unavailable: %s\n", p.Path, p.Unavailable)
			continue
		}
		fmt.Fprintf(w, "  %-58s %8.0f (%5.0f-%5.0f) %10.1f (%6.1f-%6.1f)\n", p.Path,
			p.Throughput.Median, p.Throughput.P25, p.Throughput.P75, p.RTT.Median, p.RTT.P25, p.RTT.P75)
	}
	for _, c := range r.Comparisons {
		a, b := byName[c[0]], byName[c[1]]
		if a.Unavailable != "" || b.Unavailable != "" || b.Throughput.Median == 0 || b.RTT.Median == 0 {
			continue
		}
		fmt.Fprintf(w, "  %s / %s: throughput %.2f, RTT %.2f\n", c[0], c[1], a.Throughput.Median/b.Throughput.Median, a.RTT.Median/b.RTT.Median)
	}
	fmt.Fprintf(w, "  each sample: one connection streams %d MiB to the probe server, timed to its count of them; "+
		"another makes %d round trips of %d bytes, each timed (the RTT spread is over all of them)\n",
		r.TransferMiB, r.RoundTrips, bench.ProbeMsg)
	if r.VMStartLabel != "" {
		fmt.Fprintf(w, "  the VM: %s\n", r.VMStartLabel)
	}
}

// netProbePath is one path being measured.
type netProbePath struct {
	name string
	// optional paths (Docker's, a VM's) become unavailable when they
	// fail; berth's own fail the scenario.
	optional bool
	why      string
	probe    func() (probeResult, error)
	xfer     []time.Duration
	rtts     []time.Duration
}

// benchNetwork runs the network scenario with n samples per figure.
func benchNetwork(g *globals, ref string, n int) (_ netResult, err error) {
	ctx, done := interruptible()
	defer done(&err)
	self, err := os.Executable()
	if err != nil {
		return netResult{}, err
	}
	// Short: dockerd's sockets live under it.
	tmp, err := os.MkdirTemp("", "bbn-")
	if err != nil {
		return netResult{}, err
	}
	defer os.RemoveAll(tmp)
	// The probe: a copy of this (static) binary, mounted read-only into
	// every instance.
	probeDir := filepath.Join(tmp, "probe")
	if err := os.Mkdir(probeDir, 0o755); err != nil {
		return netResult{}, err
	}
	if out, err := exec.Command("cp", self, filepath.Join(probeDir, "berth")).CombinedOutput(); err != nil {
		return netResult{}, fmt.Errorf("copy the probe: %v: %s", err, out)
	}
	probeMount := probeDir + ":/probe:ro"
	probeCmd := []string{"/probe/berth", netprobeVerb}

	ns, err := newBenchNetns()
	if err != nil {
		return netResult{}, err
	}
	defer ns.close()
	berth := func(args ...string) []string { return append([]string{self, "--root", g.root}, args...) }
	res := netResult{Scenario: "network: TCP from the host and between instances", Runs: n,
		TransferMiB: netTransfer >> 20, RoundTrips: netRoundTrips}

	// Docker: its own dockerd, the image loaded from a docker archive.
	const dockerImg = "localhost/berth-bench:net"
	dk, why, err := startBenchDocker(ctx, g, ns, ref, tmp, dockerImg)
	if err != nil {
		return res, err
	}
	res.DockerSkip = why
	if dk != nil {
		defer dk.stop(ns)
	}

	// 1. Start with a network.
	subject := func(name string, argv []string) bench.Subject {
		return bench.Subject{Name: name, Run: func() error {
			if err := ctx.Err(); err != nil {
				return err
			}
			return ns.run(ctx, argv...)
		}}
	}
	const bridged, none, dockerRun = "berth run --rm --network bridge", "berth run --rm --network none", "docker run --rm (Docker's bridge)"
	subjects := []bench.Subject{subject(bridged, berth("run", "--rm", "--network", network.DefaultName, ref, "true"))}
	pairs := [][2]string{{bridged, none}}
	if dk != nil {
		subjects = append(subjects, subject(dockerRun, dk.argv("run", "--rm", dockerImg, "true")))
		pairs = [][2]string{{bridged, dockerRun}, {bridged, none}}
	}
	subjects = append(subjects, subject(none, berth("run", "--rm", "--network", "none", ref, "true")))
	res.Start, err = bench.Compare("network start: run --rm of /bin/true on the default bridge", subjects[0], subjects[1], n, subjects[2:]...)
	if err != nil {
		return res, err
	}
	res.Start.Pairs = pairs
	res.Start.Ratio = res.Start.RatioOf(pairs[0][0], pairs[0][1])
	res.Start.Note = "berth's and dockerd's bridges in a network namespace of the bench's; goal: berth bridge / docker <= 0.25"

	// 2. The probe's servers.
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()
	// Cleanups run after a Ctrl-C too, and say what they could not undo.
	cleanup := func(argv []string) {
		if err := ns.run(context.Background(), argv...); err != nil {
			fmt.Fprintf(os.Stderr, "berth bench network: clean-up: %v\n", err)
		}
	}
	userNet := fmt.Sprintf("bnb%d", os.Getpid())
	if err := ns.run(ctx, berth("network", "create", userNet)...); err != nil {
		return res, err
	}
	cleanups = append(cleanups, func() { cleanup(berth("network", "rm", userNet)) })
	seq := 0
	detach := func(vm bool, args ...string) (ip string, err error) {
		seq++
		name := fmt.Sprintf("bench-net-%d-%d", os.Getpid(), seq)
		argv := []string{"run", "-d", "--name", name, "-v", probeMount}
		if vm {
			argv = append(argv, "--vm")
		}
		argv = append(append(append(argv, args...), ref), append(probeCmd, "serve", ":"+netProbePort)...)
		if _, err := ns.output(ctx, berth(argv...)...); err != nil {
			return "", err
		}
		cleanups = append(cleanups, func() { cleanup(berth("rm", "-f", name)) })
		_, in, err := lookupInstance(g, name)
		if err != nil {
			return "", err
		}
		if in.Endpoint == nil {
			return "", fmt.Errorf("instance %s has no address", name)
		}
		if vm {
			res.Accel = in.Accel
			res.VMStartLabel = fmt.Sprintf("%s (started from %s, %s)", name, in.VMStart, in.Transport)
		}
		return in.Endpoint.IP, nil
	}
	loop := exec.Command(self, netprobeVerb, "serve", "127.0.0.1:7001")
	loop.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := ns.start(loop); err != nil {
		return res, err
	}
	cleanups = append(cleanups, func() { loop.Process.Kill(); loop.Wait() })
	bridgeIP, err := detach(false, "--network", network.DefaultName, "-p", "7002:"+netProbePort)
	if err != nil {
		return res, err
	}
	userIP, err := detach(false, "--network", userNet)
	if err != nil {
		return res, err
	}
	var dockerIP string
	if dk != nil {
		name := fmt.Sprintf("bench-net-%d", os.Getpid())
		_, err := ns.output(ctx, dk.argv(append([]string{"run", "-d", "--name", name, "-p", "7003:" + netProbePort, "-v", probeMount, dockerImg}, append(probeCmd, "serve", ":"+netProbePort)...)...)...)
		if err != nil {
			return res, err
		}
		out, err := ns.output(ctx, dk.argv("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name)...)
		if err != nil {
			return res, err
		}
		dockerIP = strings.TrimSpace(out)
	}
	vmWhy := ""
	var vmIP string
	if _, err := findGuest(g, ""); err != nil {
		vmWhy = err.Error()
	} else if vmIP, err = detach(true, "--network", userNet, "-p", "7004:"+netProbePort); err != nil {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		vmWhy = "the VM did not start: " + err.Error()
	}

	// 3. The paths.
	inside := func(name string, argv []string) *netProbePath {
		return &netProbePath{name: name, probe: func() (probeResult, error) {
			out, err := ns.output(ctx, argv...)
			if err != nil {
				return probeResult{}, err
			}
			var r probeResult
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
				return probeResult{}, fmt.Errorf("the probe's output %q: %v", out, err)
			}
			return r, nil
		}}
	}
	client := func(addr string) []string {
		return append(probeCmd, "client", addr, fmt.Sprint(netTransfer), fmt.Sprint(netRoundTrips))
	}
	// The host's client is the same probe, run as a process on the host.
	host := func(name, addr string) *netProbePath {
		return inside(name, append([]string{self}, client(addr)[1:]...))
	}
	unavailable := func(name, why string) *netProbePath { return &netProbePath{name: name, optional: true, why: why} }
	optional := func(p *netProbePath) *netProbePath { p.optional = true; return p }
	const (
		loopback  = "host loopback (no instance)"
		bProxy    = "host -> container, -p 127.0.0.1 (berth's proxy)"
		bDNAT     = "host -> container, -p " + benchHostIP + " (berth's DNAT)"
		bDirect   = "host -> container's address on berth0"
		dProxy    = "host -> docker container, -p 127.0.0.1 (docker-proxy)"
		dDNAT     = "host -> docker container, -p " + benchHostIP + " (Docker's DNAT)"
		bC2C      = "container -> container, berth user network"
		dC2C      = "container -> container, Docker's bridge"
		vmProxy   = "host -> VM, -p 127.0.0.1 (berth's proxy)"
		vmFromCtr = "container -> VM, berth user network"
	)
	paths := []*netProbePath{
		host(loopback, "127.0.0.1:7001"),
		host(bProxy, "127.0.0.1:7002"),
		host(bDNAT, benchHostIP+":7002"),
		host(bDirect, bridgeIP+":"+netProbePort),
	}
	if dk != nil {
		paths = append(paths,
			optional(host(dProxy, "127.0.0.1:7003")),
			optional(host(dDNAT, benchHostIP+":7003")))
	}
	paths = append(paths, inside(bC2C, berth(append([]string{"run", "--rm", "--network", userNet, "-v", probeMount, ref}, client(userIP+":"+netProbePort)...)...)))
	if dk != nil {
		paths = append(paths, optional(inside(dC2C, dk.argv(append([]string{"run", "--rm", "-v", probeMount, dockerImg}, client(dockerIP+":"+netProbePort)...)...))))
	}
	if vmWhy == "" {
		paths = append(paths,
			optional(host(vmProxy, "127.0.0.1:7004")),
			optional(inside(vmFromCtr, berth(append([]string{"run", "--rm", "--network", userNet, "-v", probeMount, ref}, client(vmIP+":"+netProbePort)...)...))))
	} else {
		paths = append(paths, unavailable(vmProxy, vmWhy), unavailable(vmFromCtr, vmWhy))
	}
	res.Comparisons = [][2]string{{bProxy, dProxy}, {bDNAT, dDNAT}, {bC2C, dC2C}, {bProxy, loopback}, {vmProxy, bProxy}}

	// One warm-up sample of each, then n rounds, each starting one path
	// further on.
	sample := func(p *netProbePath, keep bool) error {
		if p.why != "" {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		r, err := p.probe()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if p.optional {
				p.why = err.Error()
				return nil
			}
			return fmt.Errorf("%s: %w", p.name, err)
		}
		if keep {
			p.xfer = append(p.xfer, time.Duration(r.TransferNs))
			for _, ns := range r.RTTNs {
				p.rtts = append(p.rtts, time.Duration(ns))
			}
		}
		return nil
	}
	for _, p := range paths {
		if err := sample(p, false); err != nil {
			return res, err
		}
	}
	for i := 0; i < n; i++ {
		for j := range paths {
			if err := sample(paths[(i+j)%len(paths)], true); err != nil {
				return res, err
			}
		}
	}
	for _, p := range paths {
		fig := netPathFig{Path: p.name, Unavailable: p.why}
		if p.why == "" {
			q := bench.Quartiles(p.xfer)
			rate := func(d time.Duration) float64 { return float64(netTransfer>>20) / d.Seconds() }
			// The fastest transfer is the highest rate.
			fig.Throughput = floatSpread{Min: rate(q[4]), P25: rate(q[3]), Median: rate(q[2]), P75: rate(q[1]), Max: rate(q[0])}
			r := bench.Quartiles(p.rtts)
			us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }
			fig.RTT = floatSpread{Min: us(r[0]), P25: us(r[1]), Median: us(r[2]), P75: us(r[3]), Max: us(r[4])}
		}
		res.Paths = append(res.Paths, fig)
	}
	if res.Accel == "" {
		res.Accel = "none (no VM ran)"
	}
	return res, nil
}
