package agent

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/usage"
)

// queryHandler is a hostHandler that answers queries: fixed figures, and
// the test process itself as the workload's one process.
type queryHandler struct {
	hostHandler
}

func (*queryHandler) Stats() (usage.Stats, error) {
	return usage.Stats{CPUNanos: 7e6, Memory: 3 << 20, MemoryLimit: 64 << 20, Pids: 2, BlockRead: -1, BlockWrite: -1, NetRx: 10, NetTx: 20}, nil
}

func (*queryHandler) Top() ([]usage.Process, error) {
	return usage.Processes("/proc", []int{os.Getpid()})
}

func dialHandler(t *testing.T, h Handler) *Client {
	t.Helper()
	hc, gc := net.Pipe()
	go Serve(gc, h)
	c, err := Dial(context.Background(), hc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestQueryStatsAndTop(t *testing.T) {
	c := dialHandler(t, &queryHandler{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.MemoryLimit != 64<<20 || st.Pids != 2 || st.CPUNanos != 7e6 || st.BlockRead != -1 || st.NetTx != 20 {
		t.Errorf("stats: %+v", st)
	}
	ps, err := c.Top(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || ps[0].PID != os.Getpid() || !strings.Contains(ps[0].Cmd, "agent.test") {
		t.Errorf("top: %+v, want this test process", ps)
	}
	// Queries and processes share the connection's stream numbers.
	if out, _, st := run(t, c, sh("echo after"), nil); out != "after\n" || st.Code != 0 {
		t.Errorf("a run after queries: %q %+v", out, st)
	}
}

// An agent that answers no queries (a handler without Querier, as an
// agent that does not know a kind) gives one clear error, and the
// connection goes on.
func TestQueryUnknown(t *testing.T) {
	c, _, _ := pair(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := c.Stats(ctx)
	if err == nil || !strings.Contains(err.Error(), `unknown request "stats"`) || !errors.Is(err, errdefs.ErrNotSupported) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("stats of an agent without queries: %v", err)
	}
	if err := c.query(ctx, "nosuch", new(any)); err == nil || !strings.Contains(err.Error(), `unknown request "nosuch"`) {
		t.Errorf("unknown kind: %v", err)
	}
	if out, _, st := run(t, c, sh("echo still"), nil); out != "still\n" || st.Code != 0 {
		t.Errorf("a run after a refused query: %q %+v", out, st)
	}
}

// A query whose connection ends fails instead of waiting for ever.
func TestQueryConnectionLost(t *testing.T) {
	hc, gc := net.Pipe()
	go func() {
		// A guest that answers the hello, then reads the query and hangs up.
		readFrame(gc)
		gc.Write(encodeFrame(msgHello, 0, mustJSON(helloMsg{Version: Version})))
		readFrame(gc)
		gc.Close()
	}()
	c, err := Dial(context.Background(), hc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Top(context.Background()); err == nil || !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("top over a lost connection: %v", err)
	}
}
