package agent

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/usage"
)

// Stdio is where a guest process's standard streams come from and go to
// on the host. A nil Stdin gives the process an empty stdin (EOF at once);
// nil Stdout or Stderr discard the stream.
type Stdio struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Client is the host's end of one connection to a guest agent. Its
// methods are safe for concurrent use.
type Client struct {
	conn io.ReadWriteCloser
	wire *wire

	mu    sync.Mutex
	procs map[uint32]*Proc
	// queries are the queries waiting for their answer, by stream.
	queries map[uint32]chan frame
	next    uint32
	err     error // why the read loop ended, once done is closed

	done         chan struct{} // closed when the read loop ends
	shutdownDone chan struct{} // closed when the guest acknowledged Shutdown
	shutdownOnce sync.Once
	closeOnce    sync.Once
}

// Dial performs the handshake on conn (the host end of the guest's agent
// channel) and returns a Client that owns conn. The hello gives the guest
// the host's wall clock and fresh entropy, which the guest applies before
// answering. The handshake fails with both versions named when the guest
// speaks another protocol version, with the guest's reason when it could
// not apply them, and with ctx's error (closing conn) when ctx ends first.
func Dial(ctx context.Context, conn io.ReadWriteCloser) (*Client, error) {
	c := &Client{
		conn:         conn,
		wire:         &wire{w: conn},
		procs:        map[uint32]*Proc{},
		queries:      map[uint32]chan frame{},
		done:         make(chan struct{}),
		shutdownDone: make(chan struct{}),
	}
	res := make(chan error, 1)
	go func() { res <- c.handshake() }()
	select {
	case err := <-res:
		if err != nil {
			conn.Close()
			return nil, err
		}
	case <-ctx.Done():
		conn.Close()
		<-res
		return nil, fmt.Errorf("agent handshake: %w", ctx.Err())
	}
	go c.readLoop()
	return c, nil
}

func (c *Client) handshake() error {
	hello := helloMsg{Version: Version, Agent: "berth", Entropy: make([]byte, SeedSize)}
	_, _ = rand.Read(hello.Entropy) // never fails (crypto/rand)
	hello.UnixNano = time.Now().UnixNano()
	if err := c.wire.sendJSON(msgHello, 0, hello); err != nil {
		return fmt.Errorf("agent handshake: %w", err)
	}
	f, err := readFrame(c.conn)
	if err != nil {
		return fmt.Errorf("agent handshake: %w", connErr(err))
	}
	switch f.typ {
	case msgHello:
		return checkVersion(int(f.version), true)
	case msgError:
		var e StartError
		if decode(f, &e) == nil {
			return fmt.Errorf("agent handshake: guest refused: %s: %w", guestText(e.Msg), errdefs.ErrUnavailable)
		}
	}
	return fmt.Errorf("agent handshake: expected hello, got %v frame: %w", f.typ, errdefs.ErrInvalid)
}

// connErr names a lost connection plainly.
func connErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("connection closed by the guest: %w", errdefs.ErrUnavailable)
	}
	return err
}

// Run starts the guest's main workload p (once per guest) and returns when
// the guest reports it started or why it could not (*StartError).
func (c *Client) Run(ctx context.Context, p Process, stdio Stdio) (*Proc, error) {
	return c.start(ctx, msgRun, p, stdio)
}

// Exec starts another process p in the running guest, next to the
// workload; it returns like Run.
func (c *Client) Exec(ctx context.Context, p Process, stdio Stdio) (*Proc, error) {
	return c.start(ctx, msgExec, p, stdio)
}

func (c *Client) start(ctx context.Context, typ msgType, p Process, stdio Stdio) (*Proc, error) {
	if len(p.Args) == 0 {
		return nil, fmt.Errorf("agent %v: no command: %w", typ, errdefs.ErrInvalid)
	}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.next++
	pr := &Proc{
		c:       c,
		id:      c.next,
		stdio:   stdio,
		out:     newQueue(),
		in:      newWindow(),
		started: make(chan error, 1),
		exited:  make(chan struct{}),
	}
	c.procs[pr.id] = pr
	c.mu.Unlock()

	if err := c.wire.sendJSON(typ, pr.id, p); err != nil {
		c.forget(pr.id)
		return nil, err
	}
	select {
	case err := <-pr.started:
		if err != nil {
			return nil, err
		}
	case <-ctx.Done():
		// The guest may still start it: kill it when it does.
		go func() {
			if <-pr.started == nil {
				pr.stdio = Stdio{}
				go pr.deliver()
				go pr.pumpStdin()
				_ = pr.Signal(syscall.SIGKILL)
			}
		}()
		return nil, fmt.Errorf("agent %v %q: %w", typ, p.Args[0], ctx.Err())
	}
	go pr.deliver()
	go pr.pumpStdin()
	return pr, nil
}

func (c *Client) proc(id uint32) *Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[id]
}

func (c *Client) forget(id uint32) {
	c.mu.Lock()
	delete(c.procs, id)
	c.mu.Unlock()
}

// readLoop dispatches the guest's frames. It never blocks on a consumer
// and never writes to the connection.
func (c *Client) readLoop() {
	var err error
	for err == nil {
		var f frame
		if f, err = readFrame(c.conn); err != nil {
			err = fmt.Errorf("agent connection: %w", connErr(err))
			break
		}
		err = c.dispatch(f)
	}
	c.mu.Lock()
	c.err = err
	procs := c.procs
	c.procs = map[uint32]*Proc{}
	c.mu.Unlock()
	for _, p := range procs {
		select {
		case p.started <- err:
		default:
		}
		p.out.close(err)
		p.in.close()
	}
	close(c.done)
}

func (c *Client) dispatch(f frame) error {
	if f.version != Version {
		return fmt.Errorf("agent protocol: %v frame of version %d on a version %d connection: %w", f.typ, f.version, Version, errdefs.ErrInvalid)
	}
	if f.stream == 0 {
		switch f.typ {
		case msgShutdownDone:
			c.shutdownOnce.Do(func() { close(c.shutdownDone) })
			return nil
		case msgError:
			var e StartError
			if err := decode(f, &e); err != nil {
				return err
			}
			return fmt.Errorf("agent: guest failed: %s: %w", guestText(e.Msg), errdefs.ErrUnavailable)
		}
		return fmt.Errorf("agent protocol: unexpected %v frame on stream 0: %w", f.typ, errdefs.ErrInvalid)
	}
	if q := c.takeQuery(f.stream); q != nil {
		if f.typ != msgAnswer && f.typ != msgError {
			return fmt.Errorf("agent protocol: %v frame for a query: %w", f.typ, errdefs.ErrInvalid)
		}
		q <- f
		return nil
	}
	p := c.proc(f.stream)
	if f.typ == msgAnswer {
		if p != nil {
			return fmt.Errorf("agent protocol: answer frame for process %d: %w", p.id, errdefs.ErrInvalid)
		}
		return nil // a query the host gave up on
	}
	switch f.typ {
	case msgStarted, msgError, msgStdout, msgStderr, msgExit, msgCredit:
	default:
		return fmt.Errorf("agent protocol: unexpected %v frame from the guest: %w", f.typ, errdefs.ErrInvalid)
	}
	if p == nil {
		return nil // a stream the host already gave up on
	}
	// The guest answers a start once, with Started or Error, and sends
	// nothing else about the process before: the read loop must never
	// block on started, and a process the guest never answered must stay
	// known until the connection ends, which answers it with the error.
	switch {
	case f.typ == msgStarted || f.typ == msgError:
		if p.answered {
			return fmt.Errorf("agent protocol: %v frame for process %d, which the guest already answered: %w", f.typ, p.id, errdefs.ErrInvalid)
		}
		p.answered = true
	case !p.answered:
		return fmt.Errorf("agent protocol: %v frame for process %d before it started: %w", f.typ, p.id, errdefs.ErrInvalid)
	}
	switch f.typ {
	case msgStarted:
		var m startedMsg
		if err := decode(f, &m); err != nil {
			return err
		}
		p.Pid = m.Pid
		p.started <- nil
	case msgError:
		e := &StartError{}
		if err := decode(f, e); err != nil {
			return err
		}
		e.Msg = guestText(e.Msg)
		if e.Code != 126 && e.Code != 127 {
			e.Code = 125
		}
		c.forget(p.id)
		p.started <- e
	case msgStdout, msgStderr:
		return p.out.push(item{typ: f.typ, data: f.payload})
	case msgExit:
		var st ExitStatus
		if err := decode(f, &st); err != nil {
			return err
		}
		if st.Code < 0 || st.Code > 255 || st.Signal < 0 || st.Signal > 64 {
			return fmt.Errorf("agent protocol: exit status %d, signal %d out of range: %w", st.Code, st.Signal, errdefs.ErrInvalid)
		}
		c.forget(p.id)
		if err := p.out.push(item{typ: msgExit, exit: st}); err != nil {
			return err
		}
		p.out.close(io.EOF)
	case msgCredit:
		var m creditMsg
		if err := decode(f, &m); err != nil {
			return err
		}
		return p.in.give(m.Bytes)
	}
	return nil
}

// takeQuery removes and returns the query waiting on stream id, if any.
func (c *Client) takeQuery(id uint32) chan frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.queries[id]
	delete(c.queries, id)
	return q
}

// Stats asks the guest for its workload cgroup's figures.
func (c *Client) Stats(ctx context.Context) (usage.Stats, error) {
	var s usage.Stats
	err := c.query(ctx, QueryStats, &s)
	return s, err
}

// Top asks the guest for the processes of its workload cgroup.
func (c *Client) Top(ctx context.Context) ([]usage.Process, error) {
	var ps []usage.Process
	err := c.query(ctx, QueryTop, &ps)
	return ps, err
}

// query sends one query on a stream of its own and decodes its answer
// into out. An agent that does not know the kind answers with an error
// naming it.
func (c *Client) query(ctx context.Context, kind string, out any) error {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	c.next++
	id := c.next
	answer := make(chan frame, 1)
	c.queries[id] = answer
	c.mu.Unlock()
	if err := c.wire.sendJSON(msgQuery, id, queryMsg{Kind: kind}); err != nil {
		c.takeQuery(id)
		return err
	}
	select {
	case f := <-answer:
		if f.typ == msgError {
			var e StartError
			if err := decode(f, &e); err != nil {
				return err
			}
			return fmt.Errorf("guest agent: %s request: %s: %w", kind, guestText(e.Msg), errdefs.ErrNotSupported)
		}
		return decode(f, out)
	case <-c.done:
		return c.err
	case <-ctx.Done():
		c.takeQuery(id)
		return fmt.Errorf("guest agent: %s request: %w", kind, ctx.Err())
	}
}

// Shutdown asks the guest to stop every process, sync and unmount its
// file systems and power off, and waits for its acknowledgement (or the
// end of the connection, which a powered-off guest also gives).
func (c *Client) Shutdown(ctx context.Context) error {
	if err := c.wire.send(msgShutdown, 0, nil); err != nil {
		select {
		case <-c.shutdownDone:
			return nil
		default:
			return err
		}
	}
	select {
	case <-c.shutdownDone:
		return nil
	case <-c.done:
		select {
		case <-c.shutdownDone:
			return nil
		default:
		}
		if errors.Is(c.err, errdefs.ErrUnavailable) {
			return nil // the guest powered off before acknowledging
		}
		return fmt.Errorf("agent shutdown: %w", c.err)
	case <-ctx.Done():
		return fmt.Errorf("agent shutdown: %w", ctx.Err())
	}
}

// Close closes the connection; processes still running report an error
// from Wait.
func (c *Client) Close() error {
	var err error
	c.closeOnce.Do(func() { err = c.conn.Close() })
	<-c.done
	return err
}

// Done is closed when the connection to the guest ends.
func (c *Client) Done() <-chan struct{} { return c.done }

// Proc is a process running in the guest.
type Proc struct {
	// Pid is the process's pid inside the guest.
	Pid int

	c       *Client
	id      uint32
	stdio   Stdio
	out     *queue  // stdout, stderr and the exit, in the guest's order
	in      *window // credit for stdin
	started chan error
	// answered is set by the read loop at the guest's Started or Error.
	answered bool

	exited chan struct{}
	status ExitStatus
	err    error
}

// Wait waits until the process has exited and all its output has been
// written to the Stdio writers, and returns its exit status.
func (p *Proc) Wait() (ExitStatus, error) {
	<-p.exited
	return p.status, p.err
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error {
	return p.c.wire.sendJSON(msgSignal, p.id, signalMsg{Signal: int(sig)})
}

// Resize sets the size of the process's terminal.
func (p *Proc) Resize(rows, cols uint16) error {
	return p.c.wire.sendJSON(msgResize, p.id, resizeMsg{Rows: rows, Cols: cols})
}

// deliver hands output to the Stdio writers and returns credit for it.
// A writer that fails is dropped; its later output is discarded, so the
// guest never stalls on it.
func (p *Proc) deliver() {
	defer close(p.exited)
	defer p.in.close()
	stdout, stderr := p.stdio.Stdout, p.stdio.Stderr
	for {
		it, err := p.out.pop()
		if err != nil {
			p.err = err
			return
		}
		var w *io.Writer
		switch it.typ {
		case msgExit:
			p.status = it.exit
			return
		case msgStdout:
			w = &stdout
		case msgStderr:
			w = &stderr
		}
		if *w != nil {
			if _, err := (*w).Write(it.data); err != nil {
				*w = nil
			}
		}
		_ = p.c.wire.credit(p.id, len(it.data))
	}
}

// pumpStdin copies Stdio.Stdin to the guest within the credit window and
// closes the guest's stdin at EOF. It stops when the process exits; a
// Stdin whose Read never returns keeps only this goroutine.
func (p *Proc) pumpStdin() {
	r := p.stdio.Stdin
	if r == nil {
		_ = p.c.wire.send(msgStdinClose, p.id, nil)
		return
	}
	buf := make([]byte, chunkSize)
	for {
		n, err := r.Read(buf)
		select {
		case <-p.exited:
			return
		default:
		}
		if n > 0 {
			if sendData(p.c.wire, p.in, msgStdin, p.id, buf[:n]) != nil {
				return
			}
		}
		if err != nil {
			_ = p.c.wire.send(msgStdinClose, p.id, nil)
			return
		}
	}
}
