package agent

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
)

// seedHandler is hostHandler with a Seeder that reports each call on
// seeds and fails with err when set.
type seedHandler struct {
	hostHandler
	seeds chan seedCall
	err   error
}

type seedCall struct {
	hostTime time.Time
	entropy  []byte
}

func (h *seedHandler) Seed(hostTime time.Time, entropy []byte) error {
	h.seeds <- seedCall{hostTime, bytes.Clone(entropy)}
	return h.err
}

// seeded is what dialSeeded saw.
type seeded struct {
	c             *Client
	err           error // Dial's
	call          seedCall
	before, after time.Time // around Dial
	served        <-chan error
}

// dialSeeded dials a Serve of h (whose seeds must be unbuffered) and
// returns the Seed call, which must come before Dial returns: the guest
// applies the seed before it answers the hello.
func dialSeeded(t *testing.T, h *seedHandler) seeded {
	t.Helper()
	hc, gc := net.Pipe()
	served := make(chan error, 1)
	go func() { served <- Serve(gc, h) }()
	s := seeded{served: served, before: time.Now()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.c, s.err = Dial(context.Background(), hc)
	}()
	select {
	case s.call = <-h.seeds: // Seed blocks until here, so Dial cannot be done yet
	case <-done:
		t.Fatalf("Dial returned (%v) before the handler was seeded", s.err)
	}
	<-done
	s.after = time.Now()
	if s.c != nil {
		t.Cleanup(func() { s.c.Close() })
	}
	return s
}

func TestHelloSeedsGuest(t *testing.T) {
	s := dialSeeded(t, &seedHandler{seeds: make(chan seedCall)})
	if s.err != nil {
		t.Fatal(s.err)
	}
	// Wall clock readings (Round(0) drops the monotonic ones).
	if got := s.call.hostTime; got.Before(s.before.Round(0)) || got.After(s.after.Round(0)) {
		t.Errorf("host time %v not within Dial's %v .. %v", got, s.before, s.after)
	}
	if e := s.call.entropy; len(e) != SeedSize || bytes.Equal(e, make([]byte, SeedSize)) {
		t.Errorf("entropy %x, want %d random bytes", e, SeedSize)
	}
	// Each connection gets fresh entropy.
	if s2 := dialSeeded(t, &seedHandler{seeds: make(chan seedCall)}); bytes.Equal(s.call.entropy, s2.call.entropy) {
		t.Errorf("two connections got the same entropy %x", s.call.entropy)
	}
	// The connection works after seeding.
	if out, _, st := run(t, s.c, sh("echo ok"), nil); out != "ok\n" || st.Code != 0 {
		t.Errorf("after seeding: %q %+v", out, st)
	}
}

func TestSeedErrorFailsHandshake(t *testing.T) {
	s := dialSeeded(t, &seedHandler{seeds: make(chan seedCall), err: errors.New("set CLOCK_REALTIME: operation not permitted")})
	// As the host shows it: one line with the guest's reason.
	want := "agent handshake: guest refused: set the guest's clock and seed its RNG: set CLOCK_REALTIME: operation not permitted"
	if s.err == nil || !strings.HasPrefix(s.err.Error(), want) || strings.Contains(s.err.Error(), "\n") || !errors.Is(s.err, errdefs.ErrUnavailable) {
		t.Errorf("Dial: %v, want %q", s.err, want)
	}
	if err := <-s.served; err == nil || !strings.Contains(err.Error(), "operation not permitted") {
		t.Errorf("Serve: %v", err)
	}
}

// A hello of this version without entropy is refused with an error frame.
func TestHelloWithoutEntropy(t *testing.T) {
	hc, gc := net.Pipe()
	h := &seedHandler{seeds: make(chan seedCall, 1)}
	served := make(chan error, 1)
	go func() { served <- Serve(gc, h) }()
	go hc.Write(encodeFrame(msgHello, 0, mustJSON(helloMsg{Version: Version, UnixNano: time.Now().UnixNano()})))
	f, err := readFrame(hc)
	var e StartError
	if err != nil || f.typ != msgError || f.stream != 0 || decode(f, &e) != nil || !strings.Contains(e.Msg, "0 bytes of entropy, want 32") {
		t.Errorf("guest's answer: %v %+v %q", err, f, e.Msg)
	}
	hc.Close()
	if err := <-served; !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Serve: %v", err)
	}
	if len(h.seeds) != 0 {
		t.Error("handler seeded without entropy")
	}
}
