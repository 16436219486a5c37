package main

// `berth netprobe`, hidden: the two ends of `bench network`'s TCP probe
// (internal/bench/netprobe.go), run from a copy of this binary that the
// bench mounts into the containers and VMs it measures (berth is
// static, so the copy runs in any image).

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/berth-dev/berth/internal/bench"
	"github.com/berth-dev/berth/internal/errdefs"
)

// netprobeVerb is the hidden command.
const netprobeVerb = "netprobe"

// probeResult is what `netprobe client` prints: one throughput sample
// and one batch of round trips.
type probeResult struct {
	TransferNs int64   `json:"transfer_ns"`
	RTTNs      []int64 `json:"rtt_ns"`
}

// cmdNetprobe is `netprobe serve ADDR`, `netprobe client ADDR BYTES
// ROUNDTRIPS`, or the HTTP client of `bench scale`: `netprobe http-wait
// N TIMEOUT URL...` (until N distinct answers) and `netprobe http-load
// COUNT CONCURRENCY URL`, each printing one JSON line.
func cmdNetprobe(_ *globals, args []string) error {
	switch {
	case len(args) == 2 && args[0] == "serve":
		ln, err := net.Listen("tcp", args[1])
		if err != nil {
			return err
		}
		return bench.ServeProbe(ln)
	case len(args) == 4 && args[0] == "client":
		size, err1 := strconv.ParseInt(args[2], 10, 64)
		n, err2 := strconv.Atoi(args[3])
		if err1 != nil || err2 != nil || size <= 0 || n <= 0 {
			return fmt.Errorf("client %s %s: want a byte count and a number of round trips: %w", args[2], args[3], errdefs.ErrInvalid)
		}
		r, err := probeOnce(func() (net.Conn, error) { return dialProbe(args[1], 2*time.Minute) }, size, n)
		if err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(r)
	case len(args) >= 4 && args[0] == "http-wait":
		n, err1 := strconv.Atoi(args[1])
		limit, err2 := time.ParseDuration(args[2])
		if err1 != nil || err2 != nil || n <= 0 {
			return fmt.Errorf("http-wait %s %s: want a count and a duration: %w", args[1], args[2], errdefs.ErrInvalid)
		}
		r, err := bench.WaitDistinct(args[3:], n, limit)
		if err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(r)
	case len(args) == 4 && args[0] == "http-load":
		count, err1 := strconv.Atoi(args[1])
		conc, err2 := strconv.Atoi(args[2])
		if err1 != nil || err2 != nil || count <= 0 || conc <= 0 {
			return fmt.Errorf("http-load %s %s: want a count of requests and of clients: %w", args[1], args[2], errdefs.ErrInvalid)
		}
		r, err := bench.Load(args[3], count, conc)
		if err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(r)
	}
	return fmt.Errorf("want serve ADDR, client ADDR BYTES ROUNDTRIPS, http-wait N TIMEOUT URL..., or http-load COUNT CONCURRENCY URL: %w", errdefs.ErrInvalid)
}

// probeOnce takes one throughput sample and one batch of n round trips,
// each on a new connection from dial.
func probeOnce(dial func() (net.Conn, error), size int64, n int) (probeResult, error) {
	c, err := dial()
	if err != nil {
		return probeResult{}, err
	}
	d, err := bench.ProbeThroughput(c, size)
	if err != nil {
		return probeResult{}, fmt.Errorf("throughput: %w", err)
	}
	if c, err = dial(); err != nil {
		return probeResult{}, err
	}
	rtts, err := bench.ProbeLatency(c, n)
	if err != nil {
		return probeResult{}, fmt.Errorf("latency: %w", err)
	}
	r := probeResult{TransferNs: d.Nanoseconds()}
	for _, rtt := range rtts {
		r.RTTNs = append(r.RTTNs, rtt.Nanoseconds())
	}
	return r, nil
}

// dialProbe connects to addr, retrying while the server is not there
// yet (refused, or no route while an interface comes up; a VM under TCG
// takes its time) for up to wait.
func dialProbe(addr string, wait time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(wait)
	for {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err == nil || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
