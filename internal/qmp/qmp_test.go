package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"testing"

	"github.com/berth-dev/berth/internal/errdefs"
)

const greeting = `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2"}, "capabilities": ["oob"]}}`

// peer is the scripted QMP server end of a net.Pipe.
type peer struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

// cmd is a command as the peer receives it.
type cmd struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
	ID        string          `json:"id"`
}

func (p *peer) send(s string) {
	if _, err := p.conn.Write([]byte(s + "\n")); err != nil {
		p.t.Errorf("peer write: %v", err)
	}
}

func (p *peer) recv() cmd {
	line, err := p.r.ReadBytes('\n')
	if err != nil {
		p.t.Errorf("peer read: %v", err)
		return cmd{}
	}
	var c cmd
	if err := json.Unmarshal(line, &c); err != nil {
		p.t.Errorf("peer got %q: %v", line, err)
	}
	return c
}

func (p *peer) reply(c cmd, ret string) {
	p.send(`{"return": ` + ret + `, "id": "` + c.ID + `"}`)
}

// dialPeer connects a client to a scripted peer that has sent the greeting
// and acknowledged qmp_capabilities.
func dialPeer(t *testing.T) (*Client, *peer) {
	t.Helper()
	a, b := net.Pipe()
	p := &peer{t: t, conn: b, r: bufio.NewReader(b)}
	go func() {
		p.send(greeting)
		c := p.recv()
		if c.Execute != "qmp_capabilities" {
			t.Errorf("first command %q, want qmp_capabilities", c.Execute)
		}
		p.reply(c, "{}")
	}()
	cl, err := Dial(context.Background(), a)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { cl.Close(); b.Close() })
	return cl, p
}

func TestDialGreeting(t *testing.T) {
	cl, _ := dialPeer(t)
	g := cl.Greeting()
	if g.Version.Major != 7 || g.Version.Minor != 2 || g.Version.Micro != 22 || g.Version.Package != "Debian 1:7.2" {
		t.Errorf("greeting version = %+v", g.Version)
	}
	if len(g.Capabilities) != 1 || g.Capabilities[0] != "oob" {
		t.Errorf("capabilities = %v", g.Capabilities)
	}
}

func TestDialNoGreeting(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	go func() { b.Write([]byte(`{"return": {}}` + "\n")) }()
	_, err := Dial(context.Background(), a)
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("Dial = %v, want ErrClosed", err)
	}
}

func TestDialCancelled(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Dial(ctx, a); !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial = %v, want context.Canceled", err)
	}
}

func TestDialCapabilitiesRefused(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	p := &peer{t: t, conn: b, r: bufio.NewReader(b)}
	go func() {
		p.send(greeting)
		c := p.recv()
		p.send(`{"error": {"class": "CommandNotFound", "desc": "nope"}, "id": "` + c.ID + `"}`)
	}()
	_, err := Dial(context.Background(), a)
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Fatalf("Dial = %v, want a CommandNotFound *Error", err)
	}
}

func TestExecuteArgumentsAndResult(t *testing.T) {
	cl, p := dialPeer(t)
	go func() {
		c := p.recv()
		if c.Execute != "human-monitor-command" || string(c.Arguments) != `{"command-line":"info version"}` {
			t.Errorf("peer got %+v", c)
		}
		p.reply(c, `"7.2.22\r\n"`)
	}()
	var out string
	err := cl.Execute(context.Background(), "human-monitor-command",
		map[string]string{"command-line": "info version"}, &out)
	if err != nil || out != "7.2.22\r\n" {
		t.Fatalf("Execute = %q, %v", out, err)
	}
}

func TestQueryStatusStopCont(t *testing.T) {
	cl, p := dialPeer(t)
	go func() {
		c := p.recv()
		if c.Execute != "query-status" || c.Arguments != nil {
			t.Errorf("peer got %+v", c)
		}
		p.reply(c, `{"status": "prelaunch", "singlestep": false, "running": false}`)
		for _, want := range []string{"stop", "cont", "system_powerdown"} {
			c = p.recv()
			if c.Execute != want {
				t.Errorf("peer got %q, want %q", c.Execute, want)
			}
			p.reply(c, "{}")
		}
	}()
	ctx := context.Background()
	st, err := cl.QueryStatus(ctx)
	if err != nil || st.Status != "prelaunch" || st.Running {
		t.Fatalf("QueryStatus = %+v, %v", st, err)
	}
	if err := cl.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cl.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cl.SystemPowerdown(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestErrorReply(t *testing.T) {
	cl, p := dialPeer(t)
	go func() {
		c := p.recv()
		p.send(`{"error": {"class": "DeviceNotFound", "desc": "Device 'x' not found"}, "id": "` + c.ID + `"}`)
	}()
	err := cl.Execute(context.Background(), "device_del", map[string]string{"id": "x"}, nil)
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "DeviceNotFound" || qe.Desc != "Device 'x' not found" || qe.Command != "device_del" {
		t.Fatalf("err = %#v", err)
	}
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("DeviceNotFound does not map to ErrNotFound: %v", err)
	}
	if got := err.Error(); got != "qmp device_del: Device 'x' not found (DeviceNotFound)" {
		t.Errorf("message = %q", got)
	}
}

// Events and replies interleave; replies come out of order and carry ids;
// replies without our ids are ignored; events keep their order and data.
func TestInterleavedEventsAndReplies(t *testing.T) {
	cl, p := dialPeer(t)
	go func() {
		a := p.recv()
		b := p.recv()
		p.send(`{"event": "STOP", "timestamp": {"seconds": 1700000000, "microseconds": 250}}`)
		p.send(`{"return": {}, "id": "someone-else"}`)
		p.send(`{"error": {"class": "GenericError", "desc": "no id"}}`)
		p.reply(b, `"`+b.Execute+`"`)
		p.send(`{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}, "timestamp": {"seconds": 1700000001, "microseconds": 0}}`)
		p.reply(a, `"`+a.Execute+`"`)
		p.send(`{"event": "RESET", "data": {"guest": true, "reason": "guest-reset"}, "timestamp": {"seconds": 1700000002, "microseconds": 0}}`)
	}()
	done := make(chan struct{})
	for _, name := range []string{"one", "two"} {
		go func() {
			defer func() { done <- struct{}{} }()
			var s string
			if err := cl.Execute(context.Background(), name, nil, &s); err != nil || s != name {
				t.Errorf("Execute(%s) = %q, %v", name, s, err)
			}
		}()
	}
	<-done
	<-done
	var evs []Event
	for range 3 {
		evs = append(evs, <-cl.Events())
	}
	if evs[0].Name != EventStop || evs[1].Name != EventShutdown || evs[2].Name != EventReset {
		t.Fatalf("events = %+v", evs)
	}
	if evs[0].Time.Unix() != 1700000000 || evs[0].Time.Nanosecond() != 250000 || evs[0].Data != nil {
		t.Errorf("STOP event = %+v", evs[0])
	}
	info, ok := evs[1].Shutdown()
	if !ok || !info.Guest || info.Reason != "guest-shutdown" {
		t.Errorf("SHUTDOWN info = %+v, %v", info, ok)
	}
	if _, ok := evs[2].Shutdown(); ok {
		t.Errorf("RESET decoded as SHUTDOWN")
	}
}

// A cancelled command returns at once, its late reply is dropped, and the
// next command still gets its own reply.
func TestCancelWhileWaiting(t *testing.T) {
	cl, p := dialPeer(t)
	got := make(chan cmd)
	go func() {
		got <- p.recv()
	}()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() { errc <- cl.Execute(ctx, "slow", nil, nil) }()
	slow := <-got
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Execute = %v, want context.Canceled", err)
	}
	go func() {
		p.reply(slow, `"late"`)
		c := p.recv()
		p.reply(c, `"fresh"`)
	}()
	var s string
	if err := cl.Execute(context.Background(), "next", nil, &s); err != nil || s != "fresh" {
		t.Fatalf("next = %q, %v", s, err)
	}
}

// A peer that never reads: the write blocks, cancellation still returns.
func TestCancelWhileWriting(t *testing.T) {
	cl, p := dialPeer(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() { errc <- cl.Execute(ctx, "stuck", nil, nil) }()
	// Take one byte: the write has begun and now blocks for good.
	if _, err := p.conn.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Execute = %v, want context.Canceled", err)
	}
	// Close must not hang on the blocked write either.
	cl.Close()
}

// The peer hangs up in the middle of a command: the command fails with
// ErrClosed, later commands too, and Events is closed after the events
// already received.
func TestPeerHangsUp(t *testing.T) {
	cl, p := dialPeer(t)
	go func() {
		p.recv()
		p.send(`{"event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}, "timestamp": {"seconds": 1, "microseconds": 0}}`)
		p.conn.Close()
	}()
	err := cl.Execute(context.Background(), "quit-ish", nil, nil)
	if !errors.Is(err, ErrClosed) || !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Execute = %v, want ErrClosed", err)
	}
	<-cl.Done()
	if cl.Err() == nil {
		t.Error("Err() = nil after hang-up")
	}
	if err := cl.Execute(context.Background(), "after", nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Execute after hang-up = %v", err)
	}
	ev, ok := <-cl.Events()
	if !ok || ev.Name != EventShutdown {
		t.Errorf("event = %+v, %v", ev, ok)
	}
	if _, ok := <-cl.Events(); ok {
		t.Error("Events not closed after hang-up")
	}
}

// Quit succeeds when QEMU hangs up before replying.
func TestQuitHangUp(t *testing.T) {
	cl, p := dialPeer(t)
	go func() {
		if c := p.recv(); c.Execute != "quit" {
			t.Errorf("peer got %q", c.Execute)
		}
		p.conn.Close()
	}()
	if err := cl.Quit(context.Background()); err != nil {
		t.Fatalf("Quit = %v", err)
	}
}

// Close with events nobody read does not hang, and fails waiting commands.
func TestCloseWithUnreadEvents(t *testing.T) {
	cl, p := dialPeer(t)
	got := make(chan struct{})
	go func() {
		p.recv()
		p.send(`{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 0}}`)
		p.send(`{"event": "RESUME", "timestamp": {"seconds": 2, "microseconds": 0}}`)
		close(got)
	}()
	errc := make(chan error)
	go func() { errc <- cl.Execute(context.Background(), "never-answered", nil, nil) }()
	<-got
	cl.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("Execute = %v, want ErrClosed", err)
	}
	for range cl.Events() {
	}
	cl.Close() // idempotent
}

func TestMigrationCommands(t *testing.T) {
	cl, p := dialPeer(t)
	go func() {
		c := p.recv()
		want := `{"capabilities":[{"capability":"events","state":false},{"capability":"x-ignore-shared","state":true}]}`
		if c.Execute != "migrate-set-capabilities" || string(c.Arguments) != want {
			t.Errorf("peer got %s %s, want migrate-set-capabilities %s", c.Execute, c.Arguments, want)
		}
		p.reply(c, "{}")
		c = p.recv()
		if c.Execute != "migrate" || string(c.Arguments) != `{"uri":"fd:7"}` {
			t.Errorf("peer got %s %s", c.Execute, c.Arguments)
		}
		p.reply(c, "{}")
		c = p.recv()
		if c.Execute != "migrate-incoming" || string(c.Arguments) != `{"uri":"fd:5"}` {
			t.Errorf("peer got %s %s", c.Execute, c.Arguments)
		}
		p.reply(c, "{}")
		c = p.recv()
		p.send(`{"event": "VSERPORT_CHANGE", "data": {"id": "agentport", "open": true}, "timestamp": {"seconds": 1, "microseconds": 0}}`)
		p.reply(c, `{"status": "failed", "error-desc": "load of migration failed: Invalid argument"}`)
	}()
	ctx := context.Background()
	if err := cl.SetMigrationCapabilities(ctx, map[string]bool{"x-ignore-shared": true, "events": false}); err != nil {
		t.Fatal(err)
	}
	if err := cl.Migrate(ctx, "fd:7"); err != nil {
		t.Fatal(err)
	}
	if err := cl.MigrateIncoming(ctx, "fd:5"); err != nil {
		t.Fatal(err)
	}
	m, err := cl.QueryMigrate(ctx)
	if err != nil || m.Status != "failed" || m.ErrorDesc != "load of migration failed: Invalid argument" {
		t.Fatalf("QueryMigrate = %+v, %v", m, err)
	}
	ev := <-cl.Events()
	ch, ok := ev.SerialPort()
	if !ok || ch.ID != "agentport" || !ch.Open {
		t.Errorf("SerialPort() of %s %s = %+v, %v", ev.Name, ev.Data, ch, ok)
	}
	if _, ok := (Event{Name: EventShutdown, Data: ev.Data}).SerialPort(); ok {
		t.Error("SerialPort() decoded a SHUTDOWN event")
	}
}
