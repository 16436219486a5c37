package qmp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// qemuTranscript is what QEMU 7.2 (-machine none -qmp stdio) answered to
// the commands FuzzClient sends, in that order.
const qemuTranscript = `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}
{"return": {}, "id": "berth-1"}
{"return": {"status": "running", "singlestep": false, "running": true}, "id": "berth-2"}
{"timestamp": {"seconds": 1796667190, "microseconds": 443922}, "event": "STOP"}
{"return": {}, "id": "berth-3"}
{"return": {}, "id": "berth-4"}
{"timestamp": {"seconds": 1796667190, "microseconds": 450563}, "event": "RESUME"}
{"return": {}, "id": "berth-5"}
{"timestamp": {"seconds": 1796667190, "microseconds": 452453}, "event": "POWERDOWN"}
{"return": {}, "id": "berth-6"}
{"timestamp": {"seconds": 1796667190, "microseconds": 452862}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}
{"return": {}, "id": "berth-7"}
`

// qemuConn is the client's end of a scripted QEMU. The script is cut into
// JSON values; the first (the greeting) is readable at once, and each
// command the client writes makes the values up to the next reply
// readable, events before it included. After finish the whole script is
// readable, then reads get EOF, as they do once everything is read.
//
// When the client waits for something the script does not hold (its
// reader wants more, and the first value is no greeting, or no reply with
// the last command's id was read since the command was written), the
// channel issue returned is closed: the test then gives up on Dial or the
// command, as a caller whose context ends does.
type qemuConn struct {
	mu       sync.Mutex
	cond     *sync.Cond
	chunks   [][]byte // the script's values, each with the blanks before it
	replyID  []string // chunks[i] is the reply to the command with this id, or ""
	next     int      // chunks[:next] are readable
	unread   []int    // chunks made readable and not read yet
	off      int      // what of chunks[unread[0]] was read
	replied  bool     // a reply to lastID was read since it was written
	lastID   string   // of the last command written
	greets   bool     // the first value is a greeting
	writes   int
	expected int // commands the test has issued
	starve   chan struct{}
	closed   bool
}

func newQEMUConn(script []byte) *qemuConn {
	c := &qemuConn{}
	c.cond = sync.NewCond(&c.mu)
	dec := json.NewDecoder(bytes.NewReader(script))
	start := 0
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			break
		}
		end := int(dec.InputOffset())
		c.chunks = append(c.chunks, script[start:end])
		c.replyID = append(c.replyID, replyID(raw))
		start = end
	}
	var first message
	c.greets = len(c.chunks) > 0 && json.Unmarshal(c.chunks[0], &first) == nil && first.Greeting != nil
	if start < len(script) || len(c.chunks) == 0 {
		c.chunks = append(c.chunks, script[start:])
		c.replyID = append(c.replyID, "")
	}
	c.unlock(1)
	return c
}

// replyID is the id of the command raw answers, as the client reads it,
// or "" when the client would not take raw for a reply.
func replyID(raw []byte) string {
	var m message
	var id string
	if json.Unmarshal(raw, &m) != nil || m.Event != "" || (m.Return == nil && m.Error == nil) ||
		json.Unmarshal(m.ID, &id) != nil {
		return ""
	}
	return id
}

// unlock makes n more chunks readable. Called with mu held.
func (c *qemuConn) unlock(n int) {
	for ; n > 0 && c.next < len(c.chunks); n-- {
		c.unread = append(c.unread, c.next)
		c.next++
	}
	c.cond.Broadcast()
}

// issue says the test sends another command; the channel it returns is
// closed if the client starves waiting for its reply.
func (c *qemuConn) issue() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expected++
	c.starve = make(chan struct{})
	return c.starve
}

// finish makes the rest of the script readable.
func (c *qemuConn) finish() {
	c.mu.Lock()
	c.unlock(math.MaxInt)
	c.mu.Unlock()
}

func (c *qemuConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		switch {
		case c.closed:
			return 0, net.ErrClosed
		case len(c.unread) > 0:
			i := c.unread[0]
			n := copy(p, c.chunks[i][c.off:])
			if c.off += n; c.off == len(c.chunks[i]) {
				c.unread, c.off = c.unread[1:], 0
				c.replied = c.replied || (c.replyID[i] != "" && c.replyID[i] == c.lastID)
			}
			return n, nil
		case c.next == len(c.chunks):
			return 0, io.EOF
		}
		starved := (c.writes == 0 && !c.greets) || (c.writes >= c.expected && !c.replied)
		if starved && c.starve != nil {
			close(c.starve)
			c.starve = nil
		}
		c.cond.Wait()
	}
}

func (c *qemuConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	var cmd struct{ ID string }
	_ = json.Unmarshal(p, &cmd)
	c.writes++
	c.lastID, c.replied = cmd.ID, false
	for c.next < len(c.chunks) {
		c.unlock(1)
		if c.replyID[c.next-1] != "" {
			break
		}
	}
	c.cond.Broadcast()
	return len(p), nil
}

func (c *qemuConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.cond.Broadcast()
	c.mu.Unlock()
	return nil
}

func (c *qemuConn) LocalAddr() net.Addr              { return &net.UnixAddr{Name: "qmp", Net: "unix"} }
func (c *qemuConn) RemoteAddr() net.Addr             { return &net.UnixAddr{Name: "qemu", Net: "unix"} }
func (c *qemuConn) SetDeadline(time.Time) error      { return nil }
func (c *qemuConn) SetReadDeadline(time.Time) error  { return nil }
func (c *qemuConn) SetWriteDeadline(time.Time) error { return nil }

// run calls fn with a context that ends if the client starves waiting
// for the reply, and returns fn's error; it fails t if fn hangs.
func (c *qemuConn) run(t *testing.T, fn func(ctx context.Context) error) error {
	t.Helper()
	starved := c.issue()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := make(chan error, 1)
	go func() { res <- fn(ctx) }()
	select {
	case err := <-res:
		return err
	case <-starved:
		cancel()
	case <-time.After(3 * time.Second):
		c.hung(t, "a command still runs after 3 s, its context alive")
	}
	select {
	case err := <-res:
		return err
	case <-time.After(3 * time.Second):
		c.hung(t, "a command still runs 3 s after its context ended")
		return nil
	}
}

// hung fails t with what every goroutine is doing.
func (c *qemuConn) hung(t *testing.T, what string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	c.mu.Lock()
	state := fmt.Sprintf("writes %d, expected %d, readable %d of %d values, last id %q, replied %v",
		c.writes, c.expected, c.next, len(c.chunks), c.lastID, c.replied)
	c.mu.Unlock()
	c.Close()
	t.Fatalf("%s (%s)\n%s", what, state, buf)
}

// waitDone fails t unless ch is closed within 3 s: the script is all in
// memory, so anything slower is a hang.
func (c *qemuConn) waitDone(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(3 * time.Second):
		c.hung(t, what+": still waiting after 3 s")
	}
}

// FuzzClient plays QEMU with arbitrary output to a client that connects,
// runs the commands berth uses and reads the events. Whatever QEMU sends,
// the client never panics or hangs, and its Events channel closes once
// the connection has ended.
func FuzzClient(f *testing.F) {
	f.Add([]byte(qemuTranscript))
	lines := strings.SplitAfter(qemuTranscript, "\n")
	greet, capsOK := lines[0], lines[1]
	f.Add([]byte(greet + capsOK +
		`{"timestamp": {"seconds": 1796667190, "microseconds": 1}, "event": "VSERPORT_CHANGE", "data": {"open": true, "id": "agent0"}}` + "\n" +
		`{"id": "berth-2", "error": {"class": "GenericError", "desc": "Parameter 'capability' does not accept value 'nosuch'"}}` + "\n" +
		`{"timestamp": {"seconds": 1796667191, "microseconds": 2}, "event": "GUEST_PANICKED", "data": {"action": "pause"}}` + "\n" +
		`{"return": {"status": "failed", "error-desc": "disk full"}, "id": "berth-4"}` + "\n"))
	f.Add([]byte(greet + `{"return": {}, "id": 1}` + "\n" + `{"return": {}}` + "\n"))
	f.Add([]byte(greet + `{"error": {"class": "CommandNotFound", "desc": "The command qmp_capabilities has not been found"}, "id": "berth-1"}` + "\n"))
	f.Add([]byte(`{"return": {}, "id": "berth-1"}`))
	f.Add([]byte(greet[:40]))
	f.Add([]byte("\xff\xfe{"))

	f.Fuzz(func(t *testing.T, script []byte) { playQEMU(t, script) })
}

// played is what the client made of a scripted QEMU.
type played struct {
	errs   []error // Dial's, then each command's
	status Status
	events []string
}

// playQEMU connects a client to a QEMU playing script, runs the commands
// berth uses and reads the events, failing t if anything hangs.
func playQEMU(t *testing.T, script []byte) played {
	var p played
	conn := newQEMUConn(script)
	var c *Client
	err := conn.run(t, func(ctx context.Context) (err error) { c, err = Dial(ctx, conn); return err })
	p.errs = append(p.errs, err)
	if err != nil {
		return p
	}
	defer c.Close()
	events := make(chan struct{})
	go func() {
		defer close(events)
		for ev := range c.Events() {
			ev.Shutdown()
			ev.SerialPort()
			p.events = append(p.events, ev.Name)
		}
	}()
	for _, cmd := range []func(ctx context.Context) error{
		func(ctx context.Context) (err error) { p.status, err = c.QueryStatus(ctx); return err },
		c.Stop,
		func(ctx context.Context) error { _, err := c.QueryMigrate(ctx); return err },
		c.Cont,
		c.SystemPowerdown,
		c.Quit,
	} {
		p.errs = append(p.errs, conn.run(t, cmd))
	}
	conn.finish()
	conn.waitDone(t, c.Done(), "end of the connection")
	conn.waitDone(t, events, "end of the events")
	if c.Err() == nil {
		t.Fatal("the connection ended without a reason")
	}
	return p
}

// The fuzz target's scripted QEMU plays a real transcript as QEMU did.
func TestPlayQEMUTranscript(t *testing.T) {
	p := playQEMU(t, []byte(qemuTranscript))
	for i, err := range p.errs {
		if err != nil {
			t.Errorf("step %d: %v", i, err)
		}
	}
	if p.status.Status != "running" || !p.status.Running {
		t.Errorf("query-status: %+v", p.status)
	}
	if got := strings.Join(p.events, " "); got != "STOP RESUME POWERDOWN SHUTDOWN" {
		t.Errorf("events %q", got)
	}
	// Replies that never come: each command gives up (its context ends);
	// a late reply is dropped.
	lines := strings.SplitAfter(qemuTranscript, "\n")
	p = playQEMU(t, []byte(lines[0]+lines[1]+lines[3]+lines[4]+lines[2]))
	if len(p.errs) != 7 || p.errs[0] != nil || !errors.Is(p.errs[1], context.Canceled) ||
		!errors.Is(p.errs[2], context.Canceled) || !errors.Is(p.errs[3], ErrClosed) {
		t.Errorf("without replies: %v", p.errs)
	}
}
