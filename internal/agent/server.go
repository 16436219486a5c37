package agent

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/usage"
)

// Kind says whether a process is the guest's main workload or an extra one.
type Kind int

const (
	// KindRun is the guest's main workload (Client.Run).
	KindRun Kind = iota
	// KindExec is another process in the running guest (Client.Exec).
	KindExec
)

func (k Kind) String() string {
	if k == KindRun {
		return "run"
	}
	return "exec"
}

// Handler is what Serve asks to start processes and to shut down.
// berth-agent implements it inside the guest; tests implement it on the
// host.
type Handler interface {
	// Start starts p and returns it running, or an error; a *StartError
	// carries its exit code (126, 127, 125) to the host as it is, any
	// other error becomes a 125.
	Start(kind Kind, p *Process) (Task, error)
	// Shutdown stops every process and makes the guest ready to power off
	// (sync, unmount). Serve acknowledges it to the host afterwards and
	// returns nil; the caller then powers off.
	Shutdown() error
}

// Seeder is an optional interface of a Handler. Serve calls Seed once,
// during the handshake and before it answers the host's hello, with the
// host's wall clock (zero if the host sent none) and its SeedSize bytes of
// entropy: the guest sets its clock and seeds its kernel RNG, so a guest
// restored from a snapshot does not go on with the snapshot's. An error
// fails the handshake; the host is told why. It is a separate interface,
// checked with a type assertion, so handlers with nothing to set (tests
// on the host) need not implement it.
type Seeder interface {
	Seed(hostTime time.Time, entropy []byte) error
}

// Querier is an optional interface of a Handler: it answers the host's
// queries about the workload. A Handler without it answers every query
// with an error naming the request as unknown.
type Querier interface {
	// Stats reads the workload cgroup's figures (QueryStats).
	Stats() (usage.Stats, error)
	// Top lists the workload cgroup's processes (QueryTop).
	Top() ([]usage.Process, error)
}

// Task is a process a Handler started.
type Task interface {
	// Pid is the process's pid.
	Pid() int
	// Stdio returns the process's streams as seen by the agent: stdin to
	// write (nil to give the host's stdin nowhere to go) and stdout and
	// stderr to read until EOF (stderr nil for a terminal). Serve closes
	// all three when the process is done.
	Stdio() (stdin io.WriteCloser, stdout, stderr io.ReadCloser)
	// Wait waits for the process to exit. Serve sends the exit status to
	// the host after stdout and stderr reached EOF, so everything the
	// process wrote arrives before its exit.
	Wait() (ExitStatus, error)
	// Signal sends sig to the process.
	Signal(sig syscall.Signal) error
	// Resize sets its terminal's size (no-op without a terminal).
	Resize(rows, cols uint16) error
}

// Serve runs the guest's end of the protocol on conn until the host asks
// for Shutdown (it then returns nil after acknowledging it) or the
// connection fails (it returns why). It closes conn and, unless shut down,
// kills every process it started before returning: the connection is the
// instance's lifeline.
func Serve(conn io.ReadWriteCloser, h Handler) error {
	s := &server{conn: conn, wire: &wire{w: conn}, h: h, streams: map[uint32]*stream{}}
	defer conn.Close()
	if err := s.handshake(); err != nil {
		return err
	}
	var err error
	for err == nil {
		var f frame
		if f, err = readFrame(conn); err != nil {
			break
		}
		err = s.dispatch(f)
	}
	s.mu.Lock()
	shut := s.shutdown
	streams := make([]*stream, 0, len(s.streams))
	for _, st := range s.streams {
		streams = append(streams, st)
	}
	s.mu.Unlock()
	if shut {
		// The shutdown goroutine closed conn after acknowledging.
		<-s.shutDone
		return s.shutErr
	}
	for _, st := range streams {
		st.kill()
	}
	return fmt.Errorf("agent connection: %w", connErr(err))
}

type server struct {
	conn io.ReadWriteCloser
	wire *wire
	h    Handler

	mu       sync.Mutex
	streams  map[uint32]*stream
	shutdown bool
	shutDone chan struct{}
	shutErr  error
}

// stream is one process on the guest side.
type stream struct {
	id    uint32
	out   *window // credit for stdout+stderr
	stdin *queue  // host stdin not yet written to the process

	mu   sync.Mutex
	task Task // nil until started
	dead bool
}

func (st *stream) kill() {
	st.mu.Lock()
	t := st.task
	st.dead = true
	st.mu.Unlock()
	st.out.close()
	st.stdin.close(io.ErrClosedPipe)
	if t != nil {
		_ = t.Signal(syscall.SIGKILL)
	}
}

func (s *server) handshake() error {
	f, err := readFrame(s.conn)
	if err != nil {
		return fmt.Errorf("agent handshake: %w", hostErr(err))
	}
	if f.typ != msgHello {
		return fmt.Errorf("agent handshake: expected hello, got %v frame: %w", f.typ, errdefs.ErrInvalid)
	}
	if err := checkVersion(int(f.version), false); err != nil {
		// Answer with our version anyway, so the host can name both; the
		// rest of another version's hello may not be understood.
		_ = s.wire.sendJSON(msgHello, 0, helloMsg{Version: Version, Agent: "berth-agent"})
		return err
	}
	var m helloMsg
	err = decode(f, &m)
	if err == nil {
		err = s.seed(m)
	}
	if err != nil {
		_ = s.wire.sendJSON(msgError, 0, StartError{Code: 125, Msg: err.Error()})
		return fmt.Errorf("agent handshake: %w", err)
	}
	if err := s.wire.sendJSON(msgHello, 0, helloMsg{Version: Version, Agent: "berth-agent"}); err != nil {
		return fmt.Errorf("agent handshake: %w", err)
	}
	return nil
}

// seed hands the clock and entropy of the host's hello to the handler.
func (s *server) seed(m helloMsg) error {
	if len(m.Entropy) != SeedSize {
		return fmt.Errorf("host's hello carries %d bytes of entropy, want %d: %w", len(m.Entropy), SeedSize, errdefs.ErrInvalid)
	}
	sd, ok := s.h.(Seeder)
	if !ok {
		return nil
	}
	var now time.Time
	if m.UnixNano != 0 {
		now = time.Unix(0, m.UnixNano)
	}
	if err := sd.Seed(now, m.Entropy); err != nil {
		return fmt.Errorf("set the guest's clock and seed its RNG: %w", err)
	}
	return nil
}

func hostErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("connection closed by the host: %w", errdefs.ErrUnavailable)
	}
	return err
}

// dispatch handles one frame from the host. Like the client's read loop
// it never blocks on a process and never writes to the connection.
func (s *server) dispatch(f frame) error {
	if f.version != Version {
		return fmt.Errorf("agent protocol: %v frame of version %d on a version %d connection: %w", f.typ, f.version, Version, errdefs.ErrInvalid)
	}
	switch f.typ {
	case msgShutdown:
		s.mu.Lock()
		if !s.shutdown {
			s.shutdown = true
			s.shutDone = make(chan struct{})
			go s.doShutdown()
		}
		s.mu.Unlock()
		return nil
	case msgRun, msgExec:
		return s.start(f)
	case msgQuery:
		if f.stream == 0 {
			return fmt.Errorf("agent protocol: query on stream 0: %w", errdefs.ErrInvalid)
		}
		var q queryMsg
		if err := decode(f, &q); err != nil {
			return err
		}
		go s.answer(f.stream, q.Kind)
		return nil
	case msgStdin, msgStdinClose, msgSignal, msgResize, msgCredit:
	default:
		return fmt.Errorf("agent protocol: unexpected %v frame from the host: %w", f.typ, errdefs.ErrInvalid)
	}
	s.mu.Lock()
	st := s.streams[f.stream]
	s.mu.Unlock()
	if st == nil {
		return nil // late frame for a finished process
	}
	switch f.typ {
	case msgStdin:
		return st.stdin.push(item{typ: msgStdin, data: f.payload})
	case msgStdinClose:
		return st.stdin.push(item{typ: msgStdinClose})
	case msgCredit:
		var m creditMsg
		if err := decode(f, &m); err != nil {
			return err
		}
		return st.out.give(m.Bytes)
	case msgSignal:
		var m signalMsg
		if err := decode(f, &m); err != nil {
			return err
		}
		if t := st.started(); t != nil {
			_ = t.Signal(syscall.Signal(m.Signal))
		}
	case msgResize:
		var m resizeMsg
		if err := decode(f, &m); err != nil {
			return err
		}
		if t := st.started(); t != nil {
			_ = t.Resize(m.Rows, m.Cols)
		}
	}
	return nil
}

// answer answers one query on its stream, with an Answer or an Error.
func (s *server) answer(id uint32, kind string) {
	q, ok := s.h.(Querier)
	var v any
	var err error
	switch {
	case ok && kind == QueryStats:
		v, err = q.Stats()
	case ok && kind == QueryTop:
		v, err = q.Top()
	default:
		err = fmt.Errorf("unknown request %q", kind)
	}
	if err != nil {
		_ = s.wire.sendJSON(msgError, id, StartError{Code: 125, Msg: err.Error()})
		return
	}
	_ = s.wire.sendJSON(msgAnswer, id, v)
}

func (st *stream) started() Task {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.task
}

func (s *server) start(f frame) error {
	kind := KindRun
	if f.typ == msgExec {
		kind = KindExec
	}
	p := &Process{}
	if err := decode(f, p); err != nil {
		return err
	}
	if f.stream == 0 {
		return fmt.Errorf("agent protocol: %v on stream 0: %w", f.typ, errdefs.ErrInvalid)
	}
	st := &stream{id: f.stream, out: newWindow(), stdin: newQueue()}
	s.mu.Lock()
	if _, dup := s.streams[f.stream]; dup || s.shutdown {
		s.mu.Unlock()
		return fmt.Errorf("agent protocol: stream %d is in use: %w", f.stream, errdefs.ErrInvalid)
	}
	s.streams[f.stream] = st
	s.mu.Unlock()
	go s.runTask(kind, p, st)
	return nil
}

func (s *server) forget(id uint32) {
	s.mu.Lock()
	delete(s.streams, id)
	s.mu.Unlock()
}

// runTask starts one process and carries its stdio and exit to the host.
func (s *server) runTask(kind Kind, p *Process, st *stream) {
	defer s.forget(st.id)
	t, err := s.h.Start(kind, p)
	if err != nil {
		se, ok := err.(*StartError)
		if !ok {
			se = &StartError{Code: 125, Msg: err.Error()}
		}
		_ = s.wire.sendJSON(msgError, st.id, se)
		return
	}
	st.mu.Lock()
	st.task = t
	dead := st.dead
	st.mu.Unlock()
	if dead {
		_ = t.Signal(syscall.SIGKILL)
	}
	stdin, stdout, stderr := t.Stdio()
	_ = s.wire.sendJSON(msgStarted, st.id, startedMsg{Pid: t.Pid()})

	go s.feedStdin(st, stdin)
	var outputs sync.WaitGroup
	for _, o := range []struct {
		r   io.ReadCloser
		typ msgType
	}{{stdout, msgStdout}, {stderr, msgStderr}} {
		if o.r == nil {
			continue
		}
		outputs.Add(1)
		go func() {
			defer outputs.Done()
			s.pumpOutput(st, o.r, o.typ)
		}()
	}
	status, err := t.Wait()
	outputs.Wait()
	for _, c := range []io.Closer{stdout, stderr} {
		if c != nil {
			c.Close()
		}
	}
	st.stdin.close(io.EOF)
	if err != nil {
		_ = s.wire.sendJSON(msgExit, st.id, ExitStatus{Code: 125})
		return
	}
	_ = s.wire.sendJSON(msgExit, st.id, status)
}

// pumpOutput sends one output stream to the host within the credit
// window, until EOF. Once the connection or the window is gone it keeps
// reading and discards, so the process never blocks on a full pipe.
func (s *server) pumpOutput(st *stream, r io.Reader, typ msgType) {
	buf := make([]byte, chunkSize)
	broken := false
	for {
		n, err := r.Read(buf)
		if n > 0 && !broken {
			broken = sendData(s.wire, st.out, typ, st.id, buf[:n]) != nil
		}
		if err != nil {
			return
		}
	}
}

// feedStdin writes the host's stdin to the process and returns credit for
// every byte taken (also for bytes dropped because the process closed its
// stdin, so the host never stalls).
func (s *server) feedStdin(st *stream, w io.WriteCloser) {
	broken := w == nil
	defer func() {
		if w != nil {
			w.Close()
		}
	}()
	for {
		it, err := st.stdin.pop()
		if err != nil {
			return
		}
		if it.typ == msgStdinClose {
			if w != nil {
				w.Close()
				w = nil
			}
			broken = true
			continue
		}
		if !broken {
			if _, err := w.Write(it.data); err != nil {
				broken = true
			}
		}
		_ = s.wire.credit(st.id, len(it.data))
	}
}

// doShutdown stops everything through the handler, acknowledges the
// shutdown and closes the connection, which ends Serve's read loop.
func (s *server) doShutdown() {
	defer close(s.shutDone)
	s.mu.Lock()
	streams := make([]*stream, 0, len(s.streams))
	for _, st := range s.streams {
		streams = append(streams, st)
	}
	s.mu.Unlock()
	s.shutErr = s.h.Shutdown()
	for _, st := range streams {
		st.kill()
	}
	if err := s.wire.send(msgShutdownDone, 0, nil); err != nil && s.shutErr == nil {
		s.shutErr = err
	}
	s.conn.Close()
}
