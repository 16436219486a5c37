package instance

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/errdefs"
)

type fakeOwner struct {
	mu      sync.Mutex
	signals []syscall.Signal
	sizes   []specs.Box

	execSignals []syscall.Signal
	paused      []bool
}

func (o *fakeOwner) Pause() error  { return o.pause(true) }
func (o *fakeOwner) Resume() error { return o.pause(false) }

func (o *fakeOwner) pause(on bool) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.paused) > 0 && o.paused[len(o.paused)-1] == on {
		return fmt.Errorf("already in that state: %w", errdefs.ErrConflict)
	}
	o.paused = append(o.paused, on)
	return nil
}

func (o *fakeOwner) Query(kind string) (any, error) {
	if kind != "stats" {
		return nil, fmt.Errorf("no %s here: %w", kind, errdefs.ErrNotSupported)
	}
	return map[string]int{"pids": 3}, nil
}

func (o *fakeOwner) Signal(sig syscall.Signal) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if sig == syscall.SIGSTOP {
		return fmt.Errorf("refused: %w", errdefs.ErrConflict)
	}
	o.signals = append(o.signals, sig)
	return nil
}

func (o *fakeOwner) ServeExec(p *specs.Process, stdin, stdout, stderr *os.File, resize <-chan specs.Box, signals <-chan syscall.Signal) (int, error) {
	in, _ := io.ReadAll(stdin)
	fmt.Fprintf(stdout, "%s got %q", p.Args[0], in)
	fmt.Fprint(stderr, "to stderr")
	for b := range resize {
		o.mu.Lock()
		o.sizes = append(o.sizes, b)
		o.mu.Unlock()
		break
	}
	for sig := range signals {
		o.mu.Lock()
		o.execSignals = append(o.execSignals, sig)
		o.mu.Unlock()
		if sig == syscall.SIGTERM {
			return 143, nil
		}
	}
	return 3, nil
}

func TestControlSocket(t *testing.T) {
	dir := t.TempDir()
	owner := &fakeOwner{}
	stop, err := ServeControl(ControlSocket(dir), owner)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	path := ControlSocket(dir)
	if err := ControlSignal(path, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := ControlSignal(path, syscall.SIGSTOP); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("refused signal: %v", err)
	}
	if err := ControlPause(path, true); err != nil {
		t.Fatalf("pause: %v", err)
	}
	if err := ControlPause(path, true); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("second pause: %v, want the owner's conflict", err)
	}
	if err := ControlPause(path, false); err != nil {
		t.Fatalf("resume: %v", err)
	}
	if o := owner.paused; len(o) != 2 || !o[0] || o[1] {
		t.Fatalf("the owner saw pauses %v, want [true false]", o)
	}
	var got struct{ Pids int }
	if err := ControlQuery(path, "stats", &got); err != nil || got.Pids != 3 {
		t.Fatalf("query stats: %+v, %v", got, err)
	}
	if err := ControlQuery(path, "top", &got); !errors.Is(err, errdefs.ErrNotSupported) {
		t.Fatalf("query top: %v, want the owner's not supported", err)
	}

	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	inW.WriteString("input")
	inW.Close()
	resize := make(chan specs.Box, 1)
	resize <- specs.Box{Height: 24, Width: 80}
	signals := make(chan syscall.Signal, 2)
	signals <- syscall.SIGUSR1
	signals <- syscall.SIGTERM
	code, err := ControlExec(path, &specs.Process{Args: []string{"cmd"}}, inR, outW, errW, resize, signals)
	close(resize)
	close(signals)
	outW.Close()
	errW.Close()
	if err != nil || code != 143 {
		t.Fatalf("exec: code %d err %v", code, err)
	}
	out, _ := io.ReadAll(outR)
	serr, _ := io.ReadAll(errR)
	if string(out) != `cmd got "input"` || string(serr) != "to stderr" {
		t.Fatalf("stdout %q stderr %q", out, serr)
	}
	owner.mu.Lock()
	defer owner.mu.Unlock()
	if len(owner.signals) != 1 || owner.signals[0] != syscall.SIGTERM || len(owner.sizes) != 1 || owner.sizes[0].Width != 80 {
		t.Fatalf("owner saw signals %v sizes %v", owner.signals, owner.sizes)
	}
	if fmt.Sprint(owner.execSignals) != fmt.Sprint([]syscall.Signal{syscall.SIGUSR1, syscall.SIGTERM}) {
		t.Fatalf("exec got signals %v, want USR1 then TERM in order", owner.execSignals)
	}
	stop()
	if err := ControlSignal(path, syscall.SIGTERM); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("after close: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "control.sock")); err == nil {
		t.Fatal("the socket file outlived close")
	}
}

// An owner that takes a request and never answers (hung, stopped) does
// not hang the caller: the request fails, as one line, within its bound.
func TestControlOwnerHangs(t *testing.T) {
	defer func(d time.Duration) { signalTimeout = d }(signalTimeout)
	signalTimeout = 200 * time.Millisecond
	path := ControlSocket(t.TempDir())
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, unanswered
		}
	}()
	start := time.Now()
	err = ControlSignal(path, syscall.SIGKILL)
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "did not answer a signal request within 200ms") {
		t.Fatalf("signal to a hung owner: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("signal to a hung owner took %v", d)
	}
	if err := ControlPause(path, true); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("pause of a hung owner: %v", err)
	}
}
