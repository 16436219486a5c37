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

// cmdNetprobe is `netprobe serve ADDR` or `netprobe client ADDR BYTES
// ROUNDTRIPS`.
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
	}
	return fmt.Errorf("want serve ADDR, or client ADDR BYTES ROUNDTRIPS: %w", errdefs.ErrInvalid)
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
