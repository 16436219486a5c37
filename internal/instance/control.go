package instance

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/sockpath"
)

// The control socket (DIR/control.sock) is how other berth processes reach
// an instance whose workload only its owner can touch: a VM's guest agent
// has one connection, held by the owner. `kill`, `stop` and `exec` send
// one JSON request a connection; an exec request carries the caller's
// stdin, stdout and stderr as SCM_RIGHTS, so the owner wires them straight
// to the guest process and no byte of output passes through the socket.
// The answer is one JSON line; for exec it comes when the command ends.

// ControlSocket is the control socket's path in an instance directory.
func ControlSocket(dir string) string { return filepath.Join(dir, "control.sock") }

// ControlHandler does what the control socket asks.
type ControlHandler interface {
	// Signal relays sig to the workload.
	Signal(sig syscall.Signal) error
	// ServeExec runs p beside the workload with the given stdio (a
	// terminal when p.Terminal) and returns its exit code: 128+N for
	// signal N. While it runs, resize delivers window size changes and
	// signals the signals to pass on to it; both are closed when the
	// caller hangs up, which should end the process.
	ServeExec(p *specs.Process, stdin, stdout, stderr *os.File, resize <-chan specs.Box, signals <-chan syscall.Signal) (int, error)
	// Pause freezes the workload; Resume thaws it.
	Pause() error
	Resume() error
	// Query answers a question about the workload (kind "stats" or
	// "top") with a value that marshals to JSON.
	Query(kind string) (any, error)
}

type controlRequest struct {
	Op     string         `json:"op"` // "signal", "exec", "resize", "pause", "resume", "query"
	Kind   string         `json:"kind,omitempty"`
	Signal int            `json:"signal,omitempty"`
	Proc   *specs.Process `json:"process,omitempty"`
	Size   *specs.Box     `json:"size,omitempty"`
}

type controlReply struct {
	Code  int             `json:"code"`
	Error string          `json:"error,omitempty"`
	Class string          `json:"class,omitempty"` // errdefs class name, so callers keep errors.Is
	Data  json.RawMessage `json:"data,omitempty"`  // a query's answer
}

// ServeControl listens on path and serves h until close is called.
func ServeControl(path string, h ControlHandler) (close func(), err error) {
	os.Remove(path)
	var l *net.UnixListener
	err = sockpath.Do(path, func(name string) (err error) {
		l, err = net.ListenUnix("unix", &net.UnixAddr{Name: name, Net: "unix"})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	l.SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	go func() {
		for {
			c, err := l.AcceptUnix()
			if err != nil {
				return
			}
			go serveConn(c, h)
		}
	}()
	return func() {
		l.Close()
		os.Remove(path)
	}, nil
}

func serveConn(c *net.UnixConn, h ControlHandler) {
	defer c.Close()
	line, rest, files, err := readFirst(c)
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if err != nil {
		return
	}
	var req controlRequest
	if err := json.Unmarshal(line, &req); err != nil {
		reply(c, 125, fmt.Errorf("control: bad request: %w", errdefs.ErrInvalid))
		return
	}
	switch req.Op {
	case "signal":
		reply(c, 0, h.Signal(syscall.Signal(req.Signal)))
	case "pause":
		reply(c, 0, h.Pause())
	case "resume":
		reply(c, 0, h.Resume())
	case "query":
		v, err := h.Query(req.Kind)
		var data []byte
		if err == nil {
			data, err = json.Marshal(v)
		}
		replyData(c, 0, err, data)
	case "exec":
		if req.Proc == nil || len(files) != 3 {
			reply(c, 125, fmt.Errorf("control: exec needs a process and three stdio files: %w", errdefs.ErrInvalid))
			return
		}
		resize := make(chan specs.Box, 4)
		signals := make(chan syscall.Signal, 16)
		go readEvents(bufio.NewReader(io.MultiReader(bytes.NewReader(rest), c)), resize, signals)
		code, err := h.ServeExec(req.Proc, files[0], files[1], files[2], resize, signals)
		reply(c, code, err)
	default:
		reply(c, 125, fmt.Errorf("control: unknown operation %q: %w", req.Op, errdefs.ErrInvalid))
	}
}

// readFirst reads the first request line and the descriptors sent with
// it; rest is whatever followed the line in the same reads.
func readFirst(c *net.UnixConn) (line, rest []byte, files []*os.File, err error) {
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*4))
	var data []byte
	for {
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		files = append(files, parseRights(oob[:oobn])...)
		data = append(data, buf[:n]...)
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			return data[:i+1], data[i+1:], files, nil
		}
		if err != nil || n == 0 {
			return nil, nil, files, io.ErrUnexpectedEOF
		}
	}
}

// parseRights turns SCM_RIGHTS control messages into files.
func parseRights(oob []byte) []*os.File {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "control-fd"))
		}
	}
	return files
}

// readEvents passes a running exec's window size changes and signals on
// until the caller hangs up, then closes both channels. A size is dropped
// when one is still pending (only the last matters); signals are kept in
// order, as many as the channel holds.
func readEvents(r *bufio.Reader, resize chan<- specs.Box, signals chan<- syscall.Signal) {
	defer close(resize)
	defer close(signals)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		var rq controlRequest
		if json.Unmarshal(line, &rq) != nil {
			continue
		}
		switch {
		case rq.Op == "resize" && rq.Size != nil:
			select {
			case resize <- *rq.Size:
			default:
			}
		case rq.Op == "signal" && rq.Signal > 0:
			signals <- syscall.Signal(rq.Signal)
		}
	}
}

func reply(c *net.UnixConn, code int, err error) { replyData(c, code, err, nil) }

func replyData(c *net.UnixConn, code int, err error, data []byte) {
	rep := controlReply{Code: code, Data: data}
	if err != nil {
		rep.Error = err.Error()
		rep.Class = errdefs.ClassName(err)
	}
	b, _ := json.Marshal(rep)
	c.Write(append(b, '\n'))
}

// ControlSignal asks the owner at path to relay sig to the workload.
func ControlSignal(path string, sig syscall.Signal) error {
	return controlCall(path, controlRequest{Op: "signal", Signal: int(sig)}, nil)
}

// ControlPause asks the owner at path to pause the workload (on) or to
// resume it.
func ControlPause(path string, on bool) error {
	if on {
		return controlCall(path, controlRequest{Op: "pause"}, nil)
	}
	return controlCall(path, controlRequest{Op: "resume"}, nil)
}

// ControlQuery asks the owner at path a question about the workload
// (kind "stats" or "top") and decodes the answer into out. An owner that
// does not know queries answers with an unknown operation.
func ControlQuery(path, kind string, out any) error {
	return controlCall(path, controlRequest{Op: "query", Kind: kind}, out)
}

// controlTimeout bounds a request other than exec, answer included: an
// owner that hangs must not hang the caller (a SIGKILL then reaches the
// instance another way). A signal is answered at once; a pause or a
// query may wait on the guest for up to 10 s.
func controlTimeout(op string) time.Duration {
	if op == "signal" {
		return signalTimeout
	}
	return 3 * signalTimeout
}

// signalTimeout bounds a signal request (a variable for tests).
var signalTimeout = 10 * time.Second

// controlCall sends one request without files and reads its reply, whose
// data goes into out unless out is nil.
func controlCall(path string, req controlRequest, out any) error {
	c, err := dialControl(path)
	if err != nil {
		return err
	}
	defer c.Close()
	timeout := controlTimeout(req.Op)
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("control request: %w", err)
	}
	if err := sendRequest(c, req, nil); err != nil {
		return err
	}
	rep, err := readReplyData(c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("the instance's owner did not answer a %s request within %v: %w", req.Op, timeout, errdefs.ErrUnavailable)
	}
	if err != nil || out == nil {
		return err
	}
	if err := json.Unmarshal(rep.Data, out); err != nil {
		return fmt.Errorf("control %s reply: %w", req.Kind, err)
	}
	return nil
}

// ControlExec asks the owner at path to run p with this process's stdin,
// stdout and stderr, and returns its exit code. Window size changes sent
// on resize and signals sent on signals (either may be nil) are passed on
// while it runs.
func ControlExec(path string, p *specs.Process, stdin, stdout, stderr *os.File, resize <-chan specs.Box, signals <-chan syscall.Signal) (int, error) {
	c, err := dialControl(path)
	if err != nil {
		return 125, err
	}
	defer c.Close()
	fds := []int{int(stdin.Fd()), int(stdout.Fd()), int(stderr.Fd())}
	if err := sendRequest(c, controlRequest{Op: "exec", Proc: p}, fds); err != nil {
		return 125, err
	}
	var mu sync.Mutex // one request line at a time
	send := func(rq controlRequest) error {
		mu.Lock()
		defer mu.Unlock()
		return sendRequest(c, rq, nil)
	}
	if resize != nil {
		go func() {
			for size := range resize {
				s := size
				if send(controlRequest{Op: "resize", Size: &s}) != nil {
					return
				}
			}
		}()
	}
	if signals != nil {
		go func() {
			for sig := range signals {
				if send(controlRequest{Op: "signal", Signal: int(sig)}) != nil {
					return
				}
			}
		}()
	}
	return readReply(c)
}

func dialControl(path string) (*net.UnixConn, error) {
	var c *net.UnixConn
	err := sockpath.Do(path, func(name string) (err error) {
		c, err = net.DialUnix("unix", nil, &net.UnixAddr{Name: name, Net: "unix"})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("reach the instance's owner at %s: %w", path, errdefs.ErrUnavailable)
	}
	return c, nil
}

func sendRequest(c *net.UnixConn, req controlRequest, fds []int) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.WriteMsgUnix(append(b, '\n'), oob, nil); err != nil {
		return fmt.Errorf("control request: %w", err)
	}
	return nil
}

func readReply(c *net.UnixConn) (int, error) {
	rep, err := readReplyData(c)
	return rep.Code, err
}

func readReplyData(c *net.UnixConn) (controlReply, error) {
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return controlReply{Code: 125}, err
	}
	if err != nil {
		return controlReply{Code: 125}, errors.New("the instance's owner closed the control connection without answering")
	}
	var rep controlReply
	if err := json.Unmarshal(line, &rep); err != nil {
		return controlReply{Code: 125}, fmt.Errorf("control reply: %w", err)
	}
	if rep.Error != "" {
		return rep, errdefs.Decode(rep.Error, rep.Class)
	}
	return rep, nil
}
