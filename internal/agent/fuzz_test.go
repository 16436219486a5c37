package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// The host's end of the protocol reads what a guest sends, and the guest
// runs whatever the image and the workload make of it: these fuzz targets
// feed the host's decoder arbitrary guest output.

// FuzzReadFrame: readFrame never panics, never returns more payload than
// the header announced or MaxPayload, and reads back what encodeFrame made.
func FuzzReadFrame(f *testing.F) {
	f.Add(encodeFrame(msgHello, 0, mustJSON(helloMsg{Version: Version, Agent: "berth-agent"})))
	f.Add(encodeFrame(msgStdout, 1, []byte("hello\n")))
	f.Add(encodeFrame(msgExit, 1, mustJSON(ExitStatus{Code: 137, Signal: 9})))
	f.Add([]byte("BRTH\x02\x07\x00\x00\x00\x00\x00\x01\xff\xff\xff\xff"))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := readFrame(bytes.NewReader(data))
		if err != nil {
			if fr.payload != nil {
				t.Fatalf("error %v with a payload", err)
			}
			return
		}
		n := binary.BigEndian.Uint32(data[12:16])
		if uint32(len(fr.payload)) != n || n > MaxPayload {
			t.Fatalf("payload of %d bytes, header says %d", len(fr.payload), n)
		}
		again := encodeFrameVersion(fr.version, fr.typ, fr.stream, fr.payload)
		if !bytes.Equal(again[:4], data[:4]) || !bytes.Equal(again[4:6], data[4:6]) ||
			!bytes.Equal(again[8:], data[8:headerSize+int(n)]) {
			t.Fatalf("frame does not encode back to its bytes")
		}
	})
}

// guestConn is the host's end of a connection whose guest side is a
// script: the guest's hello is readable at once, the rest of its output
// only once the host has written its hello and its Run frame, so the
// frames find the process they are about registered. After the script,
// reads get EOF (the guest hung up); writes are discarded.
type guestConn struct {
	mu     sync.Mutex
	cond   *sync.Cond
	hello  []byte
	rest   []byte
	writes int
	closed bool
}

func newGuestConn(hello, rest []byte) *guestConn {
	c := &guestConn{hello: hello, rest: rest}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *guestConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		switch {
		case c.closed:
			return 0, net.ErrClosed
		case len(c.hello) > 0:
			n := copy(p, c.hello)
			c.hello = c.hello[n:]
			return n, nil
		case c.writes >= 2 && len(c.rest) > 0:
			n := copy(p, c.rest)
			c.rest = c.rest[n:]
			return n, nil
		case c.writes >= 2:
			return 0, io.EOF
		}
		c.cond.Wait()
	}
}

func (c *guestConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	c.writes++
	c.cond.Broadcast()
	return len(p), nil
}

func (c *guestConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.cond.Broadcast()
	c.mu.Unlock()
	return nil
}

// recordConn passes a connection through and keeps a copy of what was
// written to it.
type recordConn struct {
	net.Conn
	mu  sync.Mutex
	out bytes.Buffer
}

func (r *recordConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.out.Write(p)
	r.mu.Unlock()
	return r.Conn.Write(p)
}

// recordGuest runs p under a real Serve (hostHandler runs it on the host)
// and returns the guest's output split after its hello frame.
func recordGuest(f *testing.F, p Process, stdin string) (helloPayload, rest []byte) {
	f.Helper()
	hc, gc := net.Pipe()
	rec := &recordConn{Conn: gc}
	served := make(chan error, 1)
	go func() { served <- Serve(rec, &hostHandler{}) }()
	c, err := Dial(context.Background(), hc)
	if err != nil {
		f.Fatal(err)
	}
	pr, err := c.Run(context.Background(), p, Stdio{Stdin: strings.NewReader(stdin), Stdout: io.Discard, Stderr: io.Discard})
	if err == nil {
		_, err = pr.Wait()
	}
	var se *StartError
	if err != nil && !errors.As(err, &se) {
		f.Fatal(err)
	}
	_ = c.Shutdown(context.Background())
	c.Close()
	<-served
	rec.mu.Lock()
	defer rec.mu.Unlock()
	all := rec.out.Bytes()
	if len(all) < headerSize {
		f.Fatalf("the guest wrote %d bytes", len(all))
	}
	n := headerSize + int(binary.BigEndian.Uint32(all[12:16]))
	return bytes.Clone(all[headerSize:n]), bytes.Clone(all[n:])
}

// streamData is the concatenated payload of the well-formed typ frames
// on stream in b, up to the first frame readFrame refuses.
func streamData(b []byte, typ msgType, stream uint32) []byte {
	var out []byte
	r := bytes.NewReader(b)
	for {
		fr, err := readFrame(r)
		if err != nil {
			return out
		}
		if fr.typ == typ && fr.stream == stream {
			out = append(out, fr.payload...)
		}
	}
}

// FuzzClient feeds the host's Client a guest whose hello frame is made
// of (version, type, payload) and whose further output is rest. Whatever
// the guest sends, the Client never panics or hangs, its errors are one
// line, and the process's stdout and stderr are what the guest sent on
// the process's stream, in order (cut short where the guest broke the
// protocol).
func FuzzClient(f *testing.F) {
	hello := mustJSON(helloMsg{Version: Version, Agent: "berth-agent"})
	add := func(helloPayload, rest []byte) {
		f.Add(uint8(Version), uint8(msgHello), helloPayload, rest)
	}
	// Real conversations of the guest's end.
	add(recordGuest(f, sh(`echo out; echo err >&2; exit 3`), ""))
	add(recordGuest(f, sh(`cat; kill -9 $$`), "from stdin\n"))
	add(recordGuest(f, Process{Args: []string{"/no/such/command"}}, ""))
	add(recordGuest(f, Process{Args: []string{"/bin/sh", "-c", "tty; exit 0"}, Terminal: true, Rows: 24, Cols: 80}, ""))
	// Made by hand: guest-side failures and protocol errors.
	add(hello, encodeFrame(msgError, 0, mustJSON(StartError{Code: 125, Msg: "guest failed\nsecond line"})))
	add(hello, bytes.Join([][]byte{
		encodeFrame(msgStarted, 1, mustJSON(startedMsg{Pid: 7})),
		encodeFrame(msgCredit, 1, mustJSON(creditMsg{Bytes: 1 << 30})),
	}, nil))
	add(hello, bytes.Join([][]byte{
		encodeFrame(msgStarted, 1, mustJSON(startedMsg{Pid: 7})),
		encodeFrame(msgStarted, 1, mustJSON(startedMsg{Pid: 8})),
		encodeFrame(msgStarted, 1, mustJSON(startedMsg{Pid: 9})),
		encodeFrame(msgExit, 1, mustJSON(ExitStatus{Code: 0})),
	}, nil))
	add(hello, encodeFrame(msgStdout, 1, bytes.Repeat([]byte("x"), Window+1)))
	f.Add(uint8(Version+1), uint8(msgHello), hello, []byte(nil))
	f.Add(uint8(Version), uint8(msgError), mustJSON(StartError{Code: 125, Msg: "seed: \x1b[2Jno entropy"}), []byte(nil))

	f.Fuzz(func(t *testing.T, version, typ uint8, helloPayload, rest []byte) {
		if len(helloPayload) > MaxPayload {
			return
		}
		conn := newGuestConn(encodeFrameVersion(version, msgType(typ), 0, helloPayload), rest)
		done := make(chan struct{})
		var stdout, stderr bytes.Buffer
		go func() {
			defer close(done)
			ctx := context.Background()
			c, err := Dial(ctx, conn)
			if err != nil {
				checkLine(t, "Dial", err)
				return
			}
			defer c.Close()
			pr, err := c.Run(ctx, Process{Args: []string{"x"}}, Stdio{Stdout: &stdout, Stderr: &stderr})
			if err != nil {
				checkLine(t, "Run", err)
				return
			}
			if _, err := pr.Wait(); err != nil {
				checkLine(t, "Wait", err)
			}
		}()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			conn.Close()
			t.Fatalf("the Client still runs 3 s after the guest's output ended")
		}
		if want := streamData(rest, msgStdout, 1); !bytes.HasPrefix(want, stdout.Bytes()) {
			t.Fatalf("stdout %q is not a prefix of what the guest sent, %q", stdout.Bytes(), want)
		}
		if want := streamData(rest, msgStderr, 1); !bytes.HasPrefix(want, stderr.Bytes()) {
			t.Fatalf("stderr %q is not a prefix of what the guest sent, %q", stderr.Bytes(), want)
		}
	})
}

// checkLine fails t unless err reads as one line of plain text.
func checkLine(t *testing.T, what string, err error) {
	t.Helper()
	msg := err.Error()
	if strings.ContainsFunc(msg, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		t.Errorf("%s: error %q has control characters", what, msg)
	}
	if len(msg) > 4096 {
		t.Errorf("%s: error of %d bytes", what, len(msg))
	}
}

func TestGuestText(t *testing.T) {
	for in, want := range map[string]string{
		`exec "sh": not found`:    `exec "sh": not found`,
		"two\nlines\r":            `two\x0alines\x0d`,
		"\x1b[2Jclear":            `\x1b[2Jclear`,
		"bad \xff utf-8":          `bad \xff utf-8`,
		"right\u202eleft":         `right\u202eleft`,
		"caf\u00e9 \ufffd":        "caf\u00e9 \ufffd",
		strings.Repeat("x", 2000): strings.Repeat("x", maxGuestText) + "...",
	} {
		if got := guestText(in); got != want {
			t.Errorf("guestText(%q) = %q, want %q", in, got, want)
		}
	}
}
