package container

import (
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func testChannels(t *testing.T) (a, b *channel, af, bf *os.File) {
	t.Helper()
	af, bf, err := socketPair("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { af.Close(); bf.Close() })
	if a, err = newChannel(af); err != nil {
		t.Fatal(err)
	}
	if b, err = newChannel(bf); err != nil {
		t.Fatal(err)
	}
	return a, b, af, bf
}

// Files travel with the message they were sent with, whatever was sent
// around them; files that come with a message read by recv are closed.
func TestChannelFiles(t *testing.T) {
	a, b, af, _ := testChannels(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	big := strings.Repeat("x", 100<<10) // more than one read
	go func() {
		a.send(message{Type: msgReady, Err: big})
		a.send(message{Type: msgConsole}, w)
		a.send(message{Type: msgStarted, Pid: 7}, w, w)
		a.send(message{Type: msgExit, Status: 9})
		w.Close()
		af.Close()
	}()
	var m message
	files, err := b.recvFiles(&m)
	if err != nil || m.Type != msgReady || len(m.Err) != len(big) || len(files) != 0 {
		t.Fatalf("first: %v %q %d files", err, m.Type, len(files))
	}
	files, err = b.recvFiles(&m)
	if err != nil || m.Type != msgConsole || len(files) != 1 {
		t.Fatalf("console: %v %q %d files", err, m.Type, len(files))
	}
	flags, err := unix.FcntlInt(files[0].Fd(), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("received fd not close-on-exec: %#x %v", flags, err)
	}
	// The second message's two files are closed by recv.
	m = message{}
	if err := b.recv(&m); err != nil || m.Type != msgStarted || m.Pid != 7 {
		t.Fatalf("started: %v %+v", err, m)
	}
	files[0].Write([]byte("through the passed pipe"))
	files[0].Close()
	// Every copy of the pipe's write end is closed now: end of file.
	got, _ := io.ReadAll(r)
	if string(got) != "through the passed pipe" {
		t.Fatalf("pipe: got %q", got)
	}
	if err := b.recv(&m); err != nil || m.Type != msgExit || m.Status != 9 {
		t.Fatalf("exit: %v %+v", err, m)
	}
	if err := b.recv(&m); err != io.EOF {
		t.Fatalf("end: got %v, want EOF", err)
	}
}

// A line cut short by the end of the stream is an unexpected EOF.
func TestChannelTruncated(t *testing.T) {
	_, b, af, _ := testChannels(t)
	af.Write([]byte(`{"type":"rea`))
	af.Close()
	var m message
	if err := b.recv(&m); err != io.ErrUnexpectedEOF {
		t.Fatalf("got %v", err)
	}
}

// warmConfig must stay a valid configuration, or it warms nothing.
func TestWarmConfigDecodes(t *testing.T) {
	var c initConfig
	dec := json.NewDecoder(strings.NewReader(warmConfig))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	if c.Spec == nil || c.Spec.Process == nil || c.Spec.Linux == nil || c.Spec.Linux.Seccomp == nil || len(c.Spec.Mounts) != 1 {
		t.Fatalf("decoded %+v", c)
	}
}
