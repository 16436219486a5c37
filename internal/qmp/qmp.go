// Package qmp is a client of the QEMU Machine Protocol (QMP), the JSON
// control channel of a running QEMU.
//
// The design follows Kata Containers' govmm client: one goroutine (the loop)
// owns the command queue and the table of commands awaiting a reply, one
// goroutine reads the connection, and one writes it. Commands carry an "id"
// so replies are matched to them whatever the order of events in between;
// every command is cancellable through its context, and a cancelled command's
// late reply is dropped. When the peer hangs up, every pending command fails
// with ErrClosed and the Events channel is closed.
//
// Lifecycle: Dial reads QEMU's greeting and negotiates capabilities; Execute
// (and the helpers QueryStatus, Stop, Cont, SystemPowerdown, Quit) runs
// commands; Close ends the connection and waits for the goroutines.
package qmp

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
)

// ErrClosed is returned by commands on a connection that has ended (closed
// by Close or by the peer). It is of class errdefs.ErrUnavailable.
var ErrClosed = fmt.Errorf("qmp connection closed: %w", errdefs.ErrUnavailable)

// maxQueuedEvents bounds the events kept for a reader that does not drain
// Events; beyond it the oldest are dropped.
const maxQueuedEvents = 4096

// Version is QEMU's version from the greeting.
type Version struct {
	Major, Minor, Micro int
	Package             string
}

// Greeting is what QEMU announces on connect.
type Greeting struct {
	Version      Version
	Capabilities []string
}

// Event is an asynchronous QMP event such as SHUTDOWN, STOP, RESUME, RESET
// or GUEST_PANICKED.
type Event struct {
	Name string
	// Data is the event's "data" member, raw (nil when absent).
	Data json.RawMessage
	// Time is QEMU's timestamp of the event.
	Time time.Time
}

// Names of the events berth acts on.
const (
	EventShutdown      = "SHUTDOWN"
	EventPowerdown     = "POWERDOWN"
	EventReset         = "RESET"
	EventStop          = "STOP"
	EventResume        = "RESUME"
	EventGuestPanicked = "GUEST_PANICKED"
	// EventSerialPort says the guest opened or closed a virtio-serial
	// port (VSERPORT_CHANGE).
	EventSerialPort = "VSERPORT_CHANGE"
)

// Error is a QMP "error" reply.
type Error struct {
	Command string
	Class   string
	Desc    string
}

func (e *Error) Error() string {
	return fmt.Sprintf("qmp %s: %s (%s)", e.Command, e.Desc, e.Class)
}

// Unwrap maps the QMP error class onto berth's error classes.
func (e *Error) Unwrap() error {
	switch e.Class {
	case "CommandNotFound":
		return errdefs.ErrNotSupported
	case "DeviceNotFound":
		return errdefs.ErrNotFound
	case "DeviceNotActive":
		return errdefs.ErrConflict
	case "KVMMissingCap":
		return errdefs.ErrUnavailable
	default:
		return errdefs.ErrInvalid
	}
}

// message is any message QEMU sends.
type message struct {
	Greeting *struct {
		Version struct {
			QEMU struct {
				Major int `json:"major"`
				Minor int `json:"minor"`
				Micro int `json:"micro"`
			} `json:"qemu"`
			Package string `json:"package"`
		} `json:"version"`
		Capabilities []string `json:"capabilities"`
	} `json:"QMP"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	ID json.RawMessage `json:"id"`
}

// request is one command on its way through the loop.
type request struct {
	id    string
	cmd   string
	data  []byte
	fd    *os.File   // passed with the command (SCM_RIGHTS), or nil
	reply chan reply // buffered, receives exactly one reply or none
}

type reply struct {
	ret json.RawMessage
	err error
}

// Client is a QMP connection. Its methods are safe for concurrent use.
type Client struct {
	conn     net.Conn
	greeting Greeting

	submit    chan *request
	cancel    chan string
	replies   chan *message
	toWriter  chan *request
	writeDone chan error
	readDone  chan error // reader's final error
	done      chan struct{}
	greeted   chan *message

	events    chan Event
	evMu      sync.Mutex
	evQueue   []Event
	evSignal  chan struct{}
	evEnded   bool
	closing   chan struct{} // closed by Close
	closeOnce sync.Once     // closes conn
	userOnce  sync.Once     // closes closing
	wg        sync.WaitGroup

	errMu sync.Mutex
	err   error // why the connection ended

	nextID   uint64
	nextIDMu sync.Mutex
}

// Dial takes over conn, a connection to a QMP server: it reads the greeting
// and leaves capabilities negotiation mode. On failure conn is closed. ctx
// bounds the handshake only.
func Dial(ctx context.Context, conn net.Conn) (*Client, error) {
	c := &Client{
		conn:      conn,
		submit:    make(chan *request),
		cancel:    make(chan string),
		replies:   make(chan *message),
		toWriter:  make(chan *request, 1),
		writeDone: make(chan error, 1),
		readDone:  make(chan error, 1),
		done:      make(chan struct{}),
		greeted:   make(chan *message, 1),
		events:    make(chan Event),
		evSignal:  make(chan struct{}, 1),
		closing:   make(chan struct{}),
	}
	c.wg.Add(4)
	go c.read()
	go c.write()
	go c.loop()
	go c.deliverEvents()

	select {
	case m := <-c.greeted:
		g := m.Greeting
		c.greeting = Greeting{
			Version: Version{
				Major: g.Version.QEMU.Major, Minor: g.Version.QEMU.Minor,
				Micro: g.Version.QEMU.Micro, Package: g.Version.Package,
			},
			Capabilities: g.Capabilities,
		}
	case <-c.done:
		c.Close()
		return nil, fmt.Errorf("qmp greeting: %w", c.closedErr())
	case <-ctx.Done():
		c.Close()
		return nil, fmt.Errorf("qmp greeting: %w", ctx.Err())
	}
	if err := c.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Greeting returns what QEMU announced on connect.
func (c *Client) Greeting() Greeting { return c.greeting }

// Events returns the channel of asynchronous events, in the order QEMU sent
// them. It is closed when the connection ends. Events are queued (up to
// 4096, oldest dropped first) so a slow reader never stalls commands.
func (c *Client) Events() <-chan Event { return c.events }

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended, or nil while it is open.
func (c *Client) Err() error {
	select {
	case <-c.done:
		return c.closedErr()
	default:
		return nil
	}
}

// Close closes the connection, fails pending commands with ErrClosed and
// waits for the client's goroutines to end. It is idempotent.
func (c *Client) Close() error {
	c.userOnce.Do(func() { close(c.closing) })
	c.closeOnce.Do(func() { c.conn.Close() })
	c.wg.Wait()
	return nil
}

// Execute runs the QMP command cmd with args (marshalled to the "arguments"
// member; nil for none) and decodes the "return" member into result (nil to
// ignore it). A QMP error reply is returned as *Error. When ctx ends first
// Execute returns ctx's error at once; the command may still run in QEMU.
func (c *Client) Execute(ctx context.Context, cmd string, args any, result any) error {
	return c.execute(ctx, cmd, args, result, nil)
}

// execute is Execute, with fd (when not nil) passed along with the
// command over a unix socket connection.
func (c *Client) execute(ctx context.Context, cmd string, args any, result any, fd *os.File) error {
	c.nextIDMu.Lock()
	c.nextID++
	id := "berth-" + strconv.FormatUint(c.nextID, 10)
	c.nextIDMu.Unlock()

	wire := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        string `json:"id"`
	}{cmd, args, id}
	data, err := json.Marshal(wire)
	if err != nil {
		return fmt.Errorf("qmp %s: arguments: %v: %w", cmd, err, errdefs.ErrInvalid)
	}
	req := &request{id: id, cmd: cmd, data: append(data, '\n'), fd: fd, reply: make(chan reply, 1)}

	select {
	case c.submit <- req:
	case <-c.done:
		return fmt.Errorf("qmp %s: %w", cmd, c.closedErr())
	case <-ctx.Done():
		return fmt.Errorf("qmp %s: %w", cmd, ctx.Err())
	}

	select {
	case r := <-req.reply:
		if r.err != nil {
			return r.err
		}
		if result != nil && len(r.ret) > 0 {
			if err := json.Unmarshal(r.ret, result); err != nil {
				return fmt.Errorf("qmp %s: decoding reply: %v: %w", cmd, err, errdefs.ErrInvalid)
			}
		}
		return nil
	case <-ctx.Done():
		select {
		case c.cancel <- id:
		case <-c.done:
		}
		return fmt.Errorf("qmp %s: %w", cmd, ctx.Err())
	}
}

// closedErr is ErrClosed with the reason the connection ended.
func (c *Client) closedErr() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	if c.err == nil {
		return ErrClosed
	}
	return fmt.Errorf("%w: %v", ErrClosed, c.err)
}

// read decodes messages and hands them to the loop (replies), the event
// queue (events) or Dial (the greeting). It is the only reader of conn.
func (c *Client) read() {
	defer c.wg.Done()
	dec := json.NewDecoder(c.conn)
	greeted := false
	for {
		var m message
		if err := dec.Decode(&m); err != nil {
			c.readDone <- err
			return
		}
		switch {
		case !greeted:
			if m.Greeting == nil {
				c.readDone <- fmt.Errorf("peer sent no QMP greeting")
				return
			}
			greeted = true
			c.greeted <- &m
		case m.Event != "":
			ev := Event{Name: m.Event, Data: m.Data}
			if m.Timestamp != nil {
				ev.Time = time.Unix(m.Timestamp.Seconds, m.Timestamp.Microseconds*1000)
			}
			c.queueEvent(ev)
		case m.Return != nil || m.Error != nil:
			select {
			case c.replies <- &m:
			case <-c.done:
				return
			}
		}
	}
}

// write sends commands handed over by the loop, one at a time.
func (c *Client) write() {
	defer c.wg.Done()
	for {
		select {
		case req := <-c.toWriter:
			c.writeDone <- c.send(req)
		case <-c.done:
			return
		}
	}
}

// send writes req, with its descriptor as ancillary data.
func (c *Client) send(req *request) error {
	if req.fd == nil {
		_, err := c.conn.Write(req.data)
		return err
	}
	uc, ok := c.conn.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("qmp %s: passing a descriptor needs a unix socket connection", req.cmd)
	}
	_, _, err := uc.WriteMsgUnix(req.data, syscall.UnixRights(int(req.fd.Fd())), nil)
	return err
}

// loop owns the command queue and the pending table. It ends when the
// connection fails, failing everything still queued or pending.
func (c *Client) loop() {
	defer c.wg.Done()
	var queue []*request
	pending := map[string]*request{}
	writing := false
	var endErr error
	for endErr == nil {
		if !writing && len(queue) > 0 {
			req := queue[0]
			queue = queue[1:]
			pending[req.id] = req
			writing = true
			c.toWriter <- req
		}
		select {
		case req := <-c.submit:
			queue = append(queue, req)
		case id := <-c.cancel:
			delete(pending, id)
			for i, req := range queue {
				if req.id == id {
					queue = append(queue[:i], queue[i+1:]...)
					break
				}
			}
		case err := <-c.writeDone:
			writing = false
			if err != nil {
				endErr = fmt.Errorf("write: %w", err)
			}
		case m := <-c.replies:
			var id string
			if json.Unmarshal(m.ID, &id) != nil {
				continue // not ours (no id, or a foreign one)
			}
			req, ok := pending[id]
			if !ok {
				continue // cancelled, or never sent by us
			}
			delete(pending, id)
			if m.Error != nil {
				req.reply <- reply{err: &Error{Command: req.cmd, Class: m.Error.Class, Desc: m.Error.Desc}}
			} else {
				req.reply <- reply{ret: m.Return}
			}
		case err := <-c.readDone:
			endErr = err
		}
	}
	c.errMu.Lock()
	c.err = endErr
	c.errMu.Unlock()
	c.closeOnce.Do(func() { c.conn.Close() })
	close(c.done)
	closed := c.closedErr()
	for _, req := range pending {
		req.reply <- reply{err: fmt.Errorf("qmp %s: %w", req.cmd, closed)}
	}
	for _, req := range queue {
		req.reply <- reply{err: fmt.Errorf("qmp %s: %w", req.cmd, closed)}
	}
	// The reader and the writer end on their own: the connection is closed,
	// their last sends are buffered or guarded by done.
	c.evMu.Lock()
	c.evEnded = true
	c.evMu.Unlock()
	c.signalEvents()
}

// queueEvent appends ev to the event queue, dropping the oldest beyond the
// bound.
func (c *Client) queueEvent(ev Event) {
	c.evMu.Lock()
	if len(c.evQueue) >= maxQueuedEvents {
		c.evQueue = c.evQueue[1:]
	}
	c.evQueue = append(c.evQueue, ev)
	c.evMu.Unlock()
	c.signalEvents()
}

func (c *Client) signalEvents() {
	select {
	case c.evSignal <- struct{}{}:
	default:
	}
}

// deliverEvents moves queued events to the Events channel. It closes the
// channel once the connection has ended and the queue is drained, or at once
// on Close (undelivered events are then dropped).
func (c *Client) deliverEvents() {
	defer c.wg.Done()
	defer close(c.events)
	for {
		c.evMu.Lock()
		var ev Event
		have := len(c.evQueue) > 0
		if have {
			ev = c.evQueue[0]
			c.evQueue = c.evQueue[1:]
		}
		ended := c.evEnded
		c.evMu.Unlock()
		if !have {
			if ended {
				return
			}
			select {
			case <-c.evSignal:
			case <-c.closing:
				return
			}
			continue
		}
		select {
		case c.events <- ev:
		case <-c.closing:
			return
		}
	}
}
