package bench

// The TCP probe of `berth bench network`: one server, run wherever a
// path ends (a process on the host, a container, a VM), and one client,
// run wherever it starts (the bench itself, or a container). A
// connection's first byte says what it is for:
//
//   - 'T' (throughput): the client streams bytes and closes its side; the
//     server counts them and answers with the count, 8 bytes big-endian.
//     The client's time runs from its first byte to the count, so it
//     covers every byte's arrival, not just its departure.
//   - 'L' (latency): the client sends ProbeMsg bytes, the server sends
//     them back, as many times as the client likes, until it closes.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// ProbeMsg is the size of one latency request, and of its answer.
const ProbeMsg = 64

const (
	probeThroughput = 'T'
	probeLatency    = 'L'
	probeChunk      = 256 << 10
	// probeTimeout bounds every probe connection: a path that stalls
	// fails its sample instead of hanging the bench.
	probeTimeout = 2 * time.Minute
)

// ServeProbe answers probe connections on ln until it is closed.
func ServeProbe(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go serveProbeConn(c)
	}
}

func serveProbeConn(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(probeTimeout))
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return
	}
	switch mode[0] {
	case probeThroughput:
		buf := make([]byte, probeChunk)
		n, err := io.CopyBuffer(io.Discard, onlyReader{c}, buf)
		if err != nil {
			return
		}
		var count [8]byte
		binary.BigEndian.PutUint64(count[:], uint64(n))
		c.Write(count[:])
	case probeLatency:
		var msg [ProbeMsg]byte
		for {
			if _, err := io.ReadFull(c, msg[:]); err != nil {
				return
			}
			if _, err := c.Write(msg[:]); err != nil {
				return
			}
		}
	}
}

// onlyReader hides a connection's WriterTo, so io.CopyBuffer reads
// through the buffer it is given.
type onlyReader struct{ io.Reader }

// ProbeThroughput streams size bytes over c, a new connection to a
// probe server, and returns the time from the first byte sent to the
// server's count of all of them. It closes c.
func ProbeThroughput(c net.Conn, size int64) (time.Duration, error) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(probeTimeout))
	buf := make([]byte, probeChunk)
	start := time.Now()
	if _, err := c.Write([]byte{probeThroughput}); err != nil {
		return 0, err
	}
	for left := size; left > 0; {
		n := min(left, int64(len(buf)))
		if _, err := c.Write(buf[:n]); err != nil {
			return 0, err
		}
		left -= n
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil {
			return 0, err
		}
	} else {
		return 0, fmt.Errorf("probe: %T cannot close its writing side", c)
	}
	var count [8]byte
	if _, err := io.ReadFull(c, count[:]); err != nil {
		return 0, fmt.Errorf("probe: the server's count: %v", err)
	}
	d := time.Since(start)
	if got := int64(binary.BigEndian.Uint64(count[:])); got != size {
		return 0, fmt.Errorf("probe: the server counted %d bytes of %d", got, size)
	}
	return d, nil
}

// ProbeLatency makes n round trips of ProbeMsg bytes over c, a new
// connection to a probe server, after one untimed round trip (which
// lets a proxy finish connecting), and returns each one's time. It
// closes c.
func ProbeLatency(c net.Conn, n int) ([]time.Duration, error) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(probeTimeout))
	if _, err := c.Write([]byte{probeLatency}); err != nil {
		return nil, err
	}
	var msg [ProbeMsg]byte
	rtts := make([]time.Duration, 0, n)
	for i := 0; i <= n; i++ {
		start := time.Now()
		if _, err := c.Write(msg[:]); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(c, msg[:]); err != nil {
			return nil, err
		}
		if i > 0 {
			rtts = append(rtts, time.Since(start))
		}
	}
	return rtts, nil
}
