package container

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The parent and a stage process talk over one unix socketpair (fd 3 in
// the stage) with newline-delimited JSON messages. The parent sends the
// stage's configuration first; the stage answers with "ready" or "error";
// the parent sends "start"; the init answers "started" (or "exec-error" or
// "error") and, when the workload has ended, "exit" with its wait status.

// Message types.
const (
	msgReady     = "ready"      // init -> parent: rootfs is done, waiting for start
	msgStart     = "start"      // parent -> init: run the workload
	msgStarted   = "started"    // init -> parent: the workload runs (Pid is its pid in the container)
	msgError     = "error"      // stage -> parent: setup failed (Err, Class)
	msgExecError = "exec-error" // stage -> parent: the command could not be started (Path, Errno, Code)
	msgExit      = "exit"       // init -> parent: the workload ended (Status is its wait status)
)

// message is one line on the sync socket.
type message struct {
	Type   string `json:"type"`
	Err    string `json:"err,omitempty"`
	Class  string `json:"class,omitempty"`
	Path   string `json:"path,omitempty"`
	Errno  int    `json:"errno,omitempty"`
	Code   int    `json:"code,omitempty"`
	Pid    int    `json:"pid,omitempty"`
	Status int    `json:"status,omitempty"`
	// Filter is the seccomp program the parent compiled while the init
	// set up the root file system (with msgStart).
	Filter []byte `json:"filter,omitempty"`
}

// encodeFilter packs a BPF program as the kernel lays it out (8 bytes an
// instruction, little-endian), which is compact on the socket.
func encodeFilter(prog []unix.SockFilter) []byte {
	b := make([]byte, 0, 8*len(prog))
	for _, in := range prog {
		b = binary.LittleEndian.AppendUint16(b, in.Code)
		b = append(b, in.Jt, in.Jf)
		b = binary.LittleEndian.AppendUint32(b, in.K)
	}
	return b
}

// decodeFilter unpacks what encodeFilter packed.
func decodeFilter(b []byte) ([]unix.SockFilter, error) {
	if len(b)%8 != 0 {
		return nil, fmt.Errorf("seccomp program of %d bytes: %w", len(b), errdefs.ErrInvalid)
	}
	prog := make([]unix.SockFilter, len(b)/8)
	for i := range prog {
		in := b[8*i:]
		prog[i] = unix.SockFilter{Code: binary.LittleEndian.Uint16(in), Jt: in[2], Jf: in[3], K: binary.LittleEndian.Uint32(in[4:])}
	}
	return prog, nil
}

// initConfig is what the parent sends the init stage.
type initConfig struct {
	ID         string      `json:"id"`
	Spec       *specs.Spec `json:"spec"`
	Layers     []string    `json:"layers,omitempty"`
	Dir        string      `json:"dir"`
	CgroupPath string      `json:"cgroupPath"`
	// RootPath is Spec.Root.Path made absolute (used when Layers is empty).
	RootPath string `json:"rootPath,omitempty"`
	// NewNet: the init is in a network namespace of its own (bring lo up,
	// mount a fresh sysfs).
	NewNet bool `json:"newNet"`
	// Console: the init's fds 0-2 are the pty slave (Stdio.Console).
	Console bool `json:"console"`
}

// execConfig is what the parent sends the exec stage.
type execConfig struct {
	Process *specs.Process      `json:"process"`
	Seccomp *specs.LinuxSeccomp `json:"seccomp,omitempty"`
	Console bool                `json:"console"`
}

// Error classes carried across the socket so the parent can wrap the
// stage's error in the right errdefs class.
var classes = map[string]error{
	"not-found":     errdefs.ErrNotFound,
	"invalid":       errdefs.ErrInvalid,
	"unavailable":   errdefs.ErrUnavailable,
	"not-supported": errdefs.ErrNotSupported,
	"conflict":      errdefs.ErrConflict,
}

// classOf picks the errdefs class name of err for the wire.
func classOf(err error) string {
	for name, e := range classes {
		if errors.Is(err, e) {
			return name
		}
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ENOENT, syscall.ENOTDIR:
			return "not-found"
		case syscall.EINVAL:
			return "invalid"
		case syscall.ENOSYS, syscall.ENODEV:
			return "unavailable"
		}
	}
	return ""
}

// errorMessage is the wire form of a stage's error: the text without the
// class's own words (the parent wraps the class back in, silently), so the
// user reads one line naming what was wrong.
func errorMessage(err error) message {
	class := classOf(err)
	text := err.Error()
	if c := classes[class]; c != nil {
		text = strings.TrimSuffix(text, ": "+c.Error())
	}
	return message{Type: msgError, Err: text, Class: class}
}

// stageError rebuilds a stage's error in the parent: one line, wrapped in
// its class so errors.Is works.
type stageError struct {
	msg   string
	class error
}

func (e *stageError) Error() string { return e.msg }
func (e *stageError) Unwrap() error { return e.class }

func errorFromMessage(m *message) error {
	switch m.Type {
	case msgError:
		return &stageError{msg: m.Err, class: classes[m.Class]}
	case msgExecError:
		return &ExecError{Path: m.Path, Err: syscall.Errno(m.Errno), Code: m.Code}
	}
	return fmt.Errorf("container init: unexpected message %q", m.Type)
}

// channel wraps the socket with a JSON encoder and decoder.
type channel struct {
	enc *json.Encoder
	dec *json.Decoder
}

func newChannel(rw io.ReadWriter) *channel {
	return &channel{enc: json.NewEncoder(rw), dec: json.NewDecoder(rw)}
}

func (c *channel) send(v any) error { return c.enc.Encode(v) }

func (c *channel) recv(v any) error { return c.dec.Decode(v) }
