package bench

import (
	"net"
	"testing"
)

// The probe's two ends over loopback: the server counts every byte the
// client streams, and echoes each round trip.
func TestProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go ServeProbe(ln)
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	const size = 3<<20 + 12345 // not a whole number of chunks
	if d, err := ProbeThroughput(dial(), size); err != nil || d <= 0 {
		t.Fatalf("ProbeThroughput: %v, %v", d, err)
	}
	rtts, err := ProbeLatency(dial(), 7)
	if err != nil || len(rtts) != 7 {
		t.Fatalf("ProbeLatency: %d round trips, %v", len(rtts), err)
	}
	for _, d := range rtts {
		if d <= 0 {
			t.Errorf("round trip of %v", d)
		}
	}
}
