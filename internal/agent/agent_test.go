package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/berth-dev/berth/internal/errdefs"
)

// pair connects a Client to Serve running hostHandler over net.Pipe (an
// unbuffered connection, the harshest transport for deadlocks).
func pair(t *testing.T) (*Client, *hostHandler, <-chan error) {
	t.Helper()
	hc, gc := net.Pipe()
	h := &hostHandler{}
	served := make(chan error, 1)
	go func() { served <- Serve(gc, h) }()
	c, err := Dial(context.Background(), hc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		<-c.Done()
	})
	return c, h, served
}

// syncBuffer is a bytes.Buffer safe for the delivering goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func sh(script string) Process {
	return Process{Args: []string{"/bin/sh", "-c", script}, Env: []string{"PATH=/usr/bin:/bin", "FOO=bar"}}
}

func run(t *testing.T, c *Client, p Process, stdin io.Reader) (string, string, ExitStatus) {
	t.Helper()
	var out, errb syncBuffer
	pr, err := c.Run(context.Background(), p, Stdio{Stdin: stdin, Stdout: &out, Stderr: &errb})
	if err != nil {
		t.Fatal(err)
	}
	st, err := pr.Wait()
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), st
}

func TestOutputExitAndEnv(t *testing.T) {
	c, _, _ := pair(t)
	out, errs, st := run(t, c, sh(`echo out $FOO; echo err >&2; pwd; exit 42`), nil)
	if out != "out bar\n/\n" && !strings.HasPrefix(out, "out bar\n") {
		t.Errorf("stdout %q", out)
	}
	if errs != "err\n" {
		t.Errorf("stderr %q", errs)
	}
	if st != (ExitStatus{Code: 42}) {
		t.Errorf("status %+v, want code 42", st)
	}
	p := sh("pwd")
	p.Cwd = "/usr"
	if out, _, _ := run(t, c, p, nil); out != "/usr\n" {
		t.Errorf("cwd: stdout %q", out)
	}
}

func TestStreamOrder(t *testing.T) {
	c, _, _ := pair(t)
	out, errs, st := run(t, c, sh(`i=1; while [ $i -le 3000 ]; do echo $i; echo e$i >&2; i=$((i+1)); done`), nil)
	if st.Code != 0 {
		t.Fatalf("status %+v", st)
	}
	var want, wantErr strings.Builder
	for i := 1; i <= 3000; i++ {
		fmt.Fprintf(&want, "%d\n", i)
		fmt.Fprintf(&wantErr, "e%d\n", i)
	}
	if out != want.String() {
		t.Errorf("stdout out of order or incomplete (%d bytes, want %d)", len(out), want.Len())
	}
	if errs != wantErr.String() {
		t.Errorf("stderr out of order or incomplete (%d bytes, want %d)", len(errs), wantErr.Len())
	}
}

func TestStdin(t *testing.T) {
	c, _, _ := pair(t)
	if out, _, st := run(t, c, Process{Args: []string{"cat"}, Env: []string{"PATH=/bin:/usr/bin"}}, strings.NewReader("hello\nworld\n")); out != "hello\nworld\n" || st.Code != 0 {
		t.Errorf("cat: %q %+v", out, st)
	}
	// No stdin at all: the process sees EOF at once.
	if out, _, st := run(t, c, Process{Args: []string{"cat"}, Env: []string{"PATH=/bin"}}, nil); out != "" || st.Code != 0 {
		t.Errorf("cat without stdin: %q %+v", out, st)
	}
	// 10 MB through stdin, more than the window many times over.
	big := bytes.Repeat([]byte("0123456789abcdef"), 10<<20/16)
	if out, _, st := run(t, c, sh("wc -c"), bytes.NewReader(big)); strings.TrimSpace(out) != strconv.Itoa(len(big)) || st.Code != 0 {
		t.Errorf("wc -c of 10 MB stdin: %q %+v", out, st)
	}
	// A process that never reads its stdin still exits and Wait returns.
	if _, _, st := run(t, c, sh("exit 3"), bytes.NewReader(big)); st.Code != 3 {
		t.Errorf("unread stdin: %+v", st)
	}
}

// readyWriter closes ready once "ready" was written.
type readyWriter struct {
	syncBuffer
	ready chan struct{}
	once  sync.Once
}

func (r *readyWriter) Write(p []byte) (int, error) {
	n, err := r.syncBuffer.Write(p)
	if strings.Contains(r.String(), "ready") {
		r.once.Do(func() { close(r.ready) })
	}
	return n, err
}

// gateWriter blocks every Write until the test opens the gate: a consumer
// that stopped reading.
type gateWriter struct {
	gate chan struct{}
	n    int
	mu   sync.Mutex
}

func (g *gateWriter) Write(p []byte) (int, error) {
	<-g.gate
	g.mu.Lock()
	g.n += len(p)
	g.mu.Unlock()
	return len(p), nil
}

func TestLargeOutputStalledReaderNoDeadlock(t *testing.T) {
	c, _, _ := pair(t)
	g := &gateWriter{gate: make(chan struct{})}
	big, err := c.Run(context.Background(), sh("head -c 10485760 /dev/zero; echo done >&2"), Stdio{Stdout: g})
	if err != nil {
		t.Fatal(err)
	}
	// The stalled consumer holds up only its own stream: another process
	// starts, streams and exits, and signals still arrive.
	for i := 0; i < 3; i++ {
		out, _, st := run(t, c, sh("echo side "+strconv.Itoa(i)), nil)
		if out != fmt.Sprintf("side %d\n", i) || st.Code != 0 {
			t.Fatalf("exec beside a stalled stream: %q %+v", out, st)
		}
	}
	sleeper, err := c.Exec(context.Background(), sh("exec sleep 1000"), Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	if err := sleeper.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if st, err := sleeper.Wait(); err != nil || st != (ExitStatus{Code: 137, Signal: 9}) {
		t.Fatalf("killed sleeper: %+v %v", st, err)
	}
	close(g.gate)
	st, err := big.Wait()
	if err != nil || st.Code != 0 {
		t.Fatalf("big: %+v %v", st, err)
	}
	if g.n != 10<<20 {
		t.Errorf("got %d bytes, want %d", g.n, 10<<20)
	}
}

func TestSignalsAndExitCodes(t *testing.T) {
	c, _, _ := pair(t)
	p, err := c.Run(context.Background(), sh("exec sleep 1000"), Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Pid <= 0 {
		t.Errorf("pid %d", p.Pid)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if st, err := p.Wait(); err != nil || st != (ExitStatus{Code: 143, Signal: 15}) {
		t.Errorf("SIGTERM: %+v %v", st, err)
	}
	// A trapped signal reaches the script, which decides its own status.
	out := &readyWriter{ready: make(chan struct{})}
	p, err = c.Run(context.Background(), sh(`trap 'echo got USR1; exit 7' USR1; echo ready; while :; do sleep 0.01; done`), Stdio{Stdout: out})
	if err != nil {
		t.Fatal(err)
	}
	<-out.ready
	_ = p.Signal(syscall.SIGUSR1)
	if st, _ := p.Wait(); st.Code != 7 || !strings.Contains(out.String(), "got USR1") {
		t.Errorf("trapped USR1: %+v %q", st, out.String())
	}
	for _, code := range []int{0, 1, 2, 125, 255} {
		if _, _, st := run(t, c, sh("exit "+strconv.Itoa(code)), nil); st.Code != code {
			t.Errorf("exit %d: got %+v", code, st)
		}
	}
}

func TestStartErrors(t *testing.T) {
	c, _, _ := pair(t)
	_, err := c.Run(context.Background(), Process{Args: []string{"no-such-command-xyz"}, Env: []string{"PATH=/bin"}}, Stdio{})
	var se *StartError
	if !errors.As(err, &se) || se.Code != 127 || !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("missing command: %v", err)
	}
	f := filepath.Join(t.TempDir(), "notexec")
	if err := os.WriteFile(f, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = c.Run(context.Background(), Process{Args: []string{f}}, Stdio{})
	if !errors.As(err, &se) || se.Code != 126 {
		t.Errorf("not executable: %v", err)
	}
	// The connection stays usable after start errors.
	if out, _, _ := run(t, c, sh("echo ok"), nil); out != "ok\n" {
		t.Errorf("after start errors: %q", out)
	}
}

func TestConcurrentExecWhileRunActive(t *testing.T) {
	c, _, _ := pair(t)
	stdinR, stdinW := io.Pipe()
	var mainOut syncBuffer
	main, err := c.Run(context.Background(), Process{Args: []string{"cat"}, Env: []string{"PATH=/bin"}}, Stdio{Stdin: stdinR, Stdout: &mainOut})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out syncBuffer
			p, err := c.Exec(context.Background(), sh("echo exec "+strconv.Itoa(i)+"; exit "+strconv.Itoa(i)), Stdio{Stdout: &out})
			if err != nil {
				errs <- err
				return
			}
			st, err := p.Wait()
			if err != nil || st.Code != i || out.String() != fmt.Sprintf("exec %d\n", i) {
				errs <- fmt.Errorf("exec %d: %q %+v %v", i, out.String(), st, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	io.WriteString(stdinW, "main still here\n")
	stdinW.Close()
	if st, err := main.Wait(); err != nil || st.Code != 0 || mainOut.String() != "main still here\n" {
		t.Errorf("main: %q %+v %v", mainOut.String(), st, err)
	}
}

func TestTerminal(t *testing.T) {
	if _, err := os.Stat("/dev/ptmx"); err != nil {
		t.Skipf("needs /dev/ptmx: %v", err)
	}
	c, _, _ := pair(t)
	p := sh(`[ -t 0 ] && echo tty; stty size`)
	p.Terminal, p.Rows, p.Cols = true, 31, 97
	out, _, st := run(t, c, p, nil)
	if st.Code != 0 || out != "tty\r\n31 97\r\n" {
		t.Errorf("terminal: %q %+v", out, st)
	}
}

func TestShutdown(t *testing.T) {
	c, h, served := pair(t)
	p, err := c.Run(context.Background(), sh("exec sleep 1000"), Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve after shutdown: %v", err)
	}
	if h.shutdown != 1 {
		t.Errorf("handler Shutdown called %d times", h.shutdown)
	}
	if _, err := p.Wait(); err == nil {
		// Either the exit (killed) or the connection's end is fine; it must return.
		t.Log("workload reported its exit before the connection ended")
	}
}

func TestHostGoneKillsProcesses(t *testing.T) {
	hc, gc := net.Pipe()
	h := &hostHandler{}
	served := make(chan error, 1)
	go func() { served <- Serve(gc, h) }()
	c, err := Dial(context.Background(), hc)
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Run(context.Background(), sh("exec sleep 1000"), Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := <-served; err == nil {
		t.Error("Serve returned nil after the host vanished")
	}
	if _, err := p.Wait(); err == nil {
		t.Error("Wait after Close returned no error")
	}
	h.mu.Lock()
	task := h.tasks[0]
	h.mu.Unlock()
	<-task.done
	if st := task.status; st.Signal != int(syscall.SIGKILL) {
		t.Errorf("workload after host vanished: %+v, want killed", st)
	}
}

func TestVersionMismatch(t *testing.T) {
	// Guests of an older and a newer version against this host. A
	// version 1 agent would ignore the clock and entropy of the hello.
	for _, guest := range []int{1, Version + 1} {
		hc, gc := net.Pipe()
		go func() {
			if _, err := readFrame(gc); err == nil {
				gc.Write(encodeFrameVersion(uint8(guest), msgHello, 0, mustJSON(helloMsg{Version: guest})))
			}
			io.Copy(io.Discard, gc)
		}()
		_, err := Dial(context.Background(), hc)
		want := fmt.Sprintf("host speaks version %d, guest agent speaks version %d", Version, guest)
		if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, errdefs.ErrNotSupported) {
			t.Errorf("host side, guest version %d: %v", guest, err)
		}
		gc.Close()
	}
	// Hosts of an older and a newer version against this guest: it answers
	// with its version, fails, and is not seeded from a hello it may not
	// understand (version 1's has no entropy).
	for _, host := range []int{1, Version + 1} {
		hc, gc := net.Pipe()
		h := &seedHandler{seeds: make(chan seedCall, 1)}
		served := make(chan error, 1)
		go func() { served <- Serve(gc, h) }()
		go hc.Write(encodeFrameVersion(uint8(host), msgHello, 0, mustJSON(helloMsg{Version: host})))
		f, err := readFrame(hc)
		if err != nil || f.typ != msgHello || f.version != Version {
			t.Errorf("guest's answer to version %d: %+v %v", host, f, err)
		}
		err = <-served
		want := fmt.Sprintf("host speaks version %d, guest agent speaks version %d", host, Version)
		if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, errdefs.ErrNotSupported) {
			t.Errorf("guest side, host version %d: %v", host, err)
		}
		if len(h.seeds) != 0 {
			t.Errorf("host version %d: guest seeded from a hello of another version", host)
		}
		hc.Close()
	}
}

func TestGarbage(t *testing.T) {
	// Garbage instead of a hello.
	hc, gc := net.Pipe()
	served := make(chan error, 1)
	go func(gc net.Conn) { served <- Serve(gc, &hostHandler{}) }(gc)
	go hc.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	if err := <-served; err == nil || !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "magic") {
		t.Errorf("garbage hello: %v", err)
	}
	hc.Close()

	// Garbage after a good handshake: Serve fails cleanly.
	hc, gc = net.Pipe()
	go func(gc net.Conn) { served <- Serve(gc, &hostHandler{}) }(gc)
	c, err := Dial(context.Background(), hc)
	if err != nil {
		t.Fatal(err)
	}
	c.wire.send(msgType(200), 1, []byte("x"))
	if err := <-served; err == nil || !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("unknown type: %v", err)
	}
	c.Close()

	// An oversized frame header from the guest ends the client with an error.
	hc, gc = net.Pipe()
	// Each goroutine gets its own end: gc is reused for the next case.
	go func(gc net.Conn) {
		readFrame(gc)
		gc.Write(encodeFrame(msgHello, 0, mustJSON(helloMsg{Version: Version})))
		hdr := encodeFrame(msgStdout, 1, nil)
		hdr[12] = 0xff
		gc.Write(hdr)
		io.Copy(io.Discard, gc)
	}(gc)
	c, err = Dial(context.Background(), hc)
	if err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	if _, err := c.Run(context.Background(), sh("true"), Stdio{}); err == nil || !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("oversized frame: %v", err)
	}
	c.Close()
	gc.Close()

	// Dial gives up with its context when nothing answers.
	hc, gc = net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	go func(gc net.Conn) { readFrame(gc); cancel() }(gc)
	if _, err := Dial(ctx, hc); !errors.Is(err, context.Canceled) {
		t.Errorf("silent guest: %v", err)
	}
	gc.Close()
}
