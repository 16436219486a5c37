// Package agent is the protocol between berth on the host and berth-agent,
// the PID 1 of a berth guest VM, with both of its ends: Dial and Client for
// the host, Serve and Handler for the guest.
//
// # Transport
//
// Any reliable, ordered byte stream (an io.ReadWriteCloser): the guest opens
// its virtio-serial port (/dev/vportNpM), the host connects to the unix
// socket QEMU's `-chardev socket` listens on; or, over vsock, the guest
// listens on an AF_VSOCK port and the host connects to the guest's CID.
// The frames are the same on both.
//
// # Frames
//
// Every message is one frame: a 16-byte header followed by the payload.
//
//	offset size field
//	0      4    magic "BRTH" (0x42 0x52 0x54 0x48)
//	4      1    protocol version (Version)
//	5      1    message type
//	6      2    reserved, zero
//	8      4    stream: the process the message is about (0 = the connection)
//	12     4    payload length, at most MaxPayload
//
// All integers are big-endian. Control messages carry JSON; stdin, stdout
// and stderr data frames carry raw bytes. The header layout never changes
// between versions, so a peer can always read the other's hello and name
// both versions when they differ.
//
// # Conversation
//
//	host                              guest
//	Hello{version,time,entropy} ->
//	                          <-      Hello{version}  (mismatch: both sides fail)
//	                          <-      or Error{msg} (stream 0): seeding failed
//	Run/Exec{Process} (stream n) ->
//	                          <-      Started{pid}  or  Error{code,msg}
//	Stdin/StdinClose (n)      ->
//	                          <-      Stdout/Stderr data (n)
//	Signal/Resize (n)         ->
//	Credit (n)                ->  <-  Credit (n)
//	                          <-      Exit{code,signal,oomKilled} (n)
//	Query{kind} (stream q)    ->
//	                          <-      Answer (q)  or  Error{msg} (q)
//	Shutdown (0)              ->
//	                          <-      ShutdownDone (0), then the guest powers off
//
// The host's hello carries its wall clock (unixNano) and 32 bytes of
// fresh entropy. Before answering, the guest sets its clock and seeds its
// kernel RNG with them (Seeder), so nothing the host starts sees the clock
// or RNG state of a restored snapshot; if that fails it answers with an
// Error frame instead and the handshake fails. The time is when the host
// sent the hello: over virtio-serial a host that connects before the
// guest is up has its hello read only once the agent runs, a whole boot
// later, so berth-agent only ever moves its clock forward.
//
// The host picks stream numbers (1, 2, ...); Run starts the guest's main
// workload (once per guest), Exec another process next to it. A Query
// takes a stream number of its own, which its one Answer (or Error) ends:
// "stats" answers the workload cgroup's figures (usage.Stats), "top" its
// processes ([]usage.Process). A kind the agent does not know is answered
// with an Error naming it, so a newer host meets an older agent with one
// clear line.
//
// # Flow control
//
// Each direction of data on each stream has a credit window of Window
// bytes: a sender may have at most Window bytes of data frames that the
// receiver has not yet handed to its consumer; the receiver returns credit
// with Credit frames once its consumer (a host io.Writer, the guest's stdin
// pipe) took the bytes. stdout and stderr of one process share one window,
// so their relative order is kept. A receiver's read loop never blocks on
// a consumer and never writes to the connection, so a consumer that stops
// reading stalls only its own stream: signals, exits and other processes
// keep flowing, and memory stays bounded by Window per stream.
package agent

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// Version is the protocol version this package speaks. Peers with a
// different version refuse each other at the handshake. Version 2 added
// the clock and entropy to the host's hello, version 3 the Query and
// Answer messages, version 4 the OCI spec of Run and the OCI process of
// Exec (the guest runs them through berth's container engine), version 5
// the network card and the copied files of Run (Process.Net, Files).
const Version = 5

// SeedSize is how many bytes of entropy the host's hello carries.
const SeedSize = 32

// Magic starts every frame.
const Magic uint32 = 0x42525448 // "BRTH"

const headerSize = 16

// MaxPayload bounds a frame's payload; a larger length is a protocol error.
const MaxPayload = 1 << 20

// Window is the credit window, per stream and direction, in bytes.
const Window = 256 << 10

// chunkSize is the largest data frame a sender makes.
const chunkSize = 32 << 10

// msgType is a frame's message type.
type msgType uint8

const (
	msgHello        msgType = 1  // JSON hello, both directions
	msgRun          msgType = 2  // JSON Process, host -> guest
	msgExec         msgType = 3  // JSON Process, host -> guest
	msgStarted      msgType = 4  // JSON started, guest -> host
	msgStdin        msgType = 5  // raw, host -> guest
	msgStdinClose   msgType = 6  // empty, host -> guest
	msgStdout       msgType = 7  // raw, guest -> host
	msgStderr       msgType = 8  // raw, guest -> host
	msgSignal       msgType = 9  // JSON signalMsg, host -> guest
	msgResize       msgType = 10 // JSON resizeMsg, host -> guest
	msgExit         msgType = 11 // JSON ExitStatus, guest -> host
	msgError        msgType = 12 // JSON StartError (stream) or connection error (stream 0)
	msgShutdown     msgType = 13 // empty, host -> guest
	msgShutdownDone msgType = 14 // empty, guest -> host
	msgCredit       msgType = 15 // JSON creditMsg, both directions
	msgQuery        msgType = 16 // JSON queryMsg, host -> guest
	msgAnswer       msgType = 17 // JSON answer to a query, guest -> host
)

func (t msgType) String() string {
	names := [...]string{"", "hello", "run", "exec", "started", "stdin", "stdin-close",
		"stdout", "stderr", "signal", "resize", "exit", "error", "shutdown", "shutdown-done", "credit",
		"query", "answer"}
	if int(t) < len(names) && t != 0 {
		return names[t]
	}
	return fmt.Sprintf("type-%d", uint8(t))
}

// Process is the process a Run or Exec starts in the guest. Fields after
// Rlimits apply to Run only (the guest's root, limits and mounts are made
// once); Exec ignores them.
type Process struct {
	// Args is the command and its arguments; Args[0] is looked up in the
	// PATH of Env when it holds no slash.
	Args []string `json:"args"`
	// Env is the environment, KEY=VALUE.
	Env []string `json:"env,omitempty"`
	// Cwd is the working directory inside the guest's root ("/" if empty).
	Cwd string `json:"cwd,omitempty"`
	// UID, GID and AdditionalGids are the credentials the process runs as.
	UID            uint32   `json:"uid"`
	GID            uint32   `json:"gid"`
	AdditionalGids []uint32 `json:"additionalGids,omitempty"`
	// Terminal gives the process a pseudo-terminal as stdin, stdout and
	// stderr (stderr is then merged into stdout); Rows and Cols are its
	// initial size.
	Terminal bool   `json:"terminal,omitempty"`
	Rows     uint16 `json:"rows,omitempty"`
	Cols     uint16 `json:"cols,omitempty"`
	// Rlimits are set before the process starts.
	Rlimits []Rlimit `json:"rlimits,omitempty"`

	// Hostname is the guest's host name (Run only).
	Hostname string `json:"hostname,omitempty"`
	// Resources are the cgroup v2 limits of the guest's workload cgroup,
	// which Exec processes join too (Run only).
	Resources *Resources `json:"resources,omitempty"`
	// Root describes the disks the guest's root file system is made of
	// (Run only).
	Root *Root `json:"root,omitempty"`
	// Mounts are made inside the root after it is assembled, in order
	// (Run only).
	Mounts []Mount `json:"mounts,omitempty"`

	// Spec is the instance's OCI runtime spec (Run only): the guest runs
	// the workload through berth's container engine by it, with the
	// assembled root as Spec.Root.Path, its bind mounts' sources taken
	// from Mounts (matched by Target: a virtio-fs share is mounted outside
	// the root and bound in), in the workload cgroup. Without it the
	// request is refused.
	Spec *specs.Spec `json:"spec,omitempty"`
	// Files are host files bind-mounted into the root (the network
	// layer's /etc/hosts, /etc/resolv.conf, /etc/hostname, as Docker
	// binds them), carried as copies: virtio-fs shares directories only
	// (Run only). The spec's bind mount at a file's Target takes it as
	// its source.
	Files []File `json:"files,omitempty"`
	// Net configures the guest's network card for the workload (Run
	// only); nil for none.
	Net *Net `json:"net,omitempty"`
	// OCI is the OCI form of an Exec's process (capabilities,
	// no_new_privs, rlimits, user), which joins the workload's
	// namespaces and cgroup; the fields above are its summary.
	OCI *specs.Process `json:"oci,omitempty"`
}

// IsBindMount says whether a spec's mount is a bind, by type or option
// (containerd writes type "" or "none" with "rbind"): the mounts the
// host turns into shares and the guest binds in from them.
func IsBindMount(m specs.Mount) bool {
	if m.Type == "bind" {
		return true
	}
	for _, o := range m.Options {
		if o == "bind" || o == "rbind" {
			return true
		}
	}
	return false
}

// Rlimit is one resource limit, Type named as in OCI ("RLIMIT_NOFILE").
type Rlimit struct {
	Type string `json:"type"`
	Hard uint64 `json:"hard"`
	Soft uint64 `json:"soft"`
}

// Resources are cgroup v2 limits; zero means unlimited.
type Resources struct {
	// MemoryBytes is memory.max.
	MemoryBytes int64 `json:"memoryBytes,omitempty"`
	// CPUQuota and CPUPeriod (microseconds) are cpu.max; period defaults
	// to 100000.
	CPUQuota  int64  `json:"cpuQuota,omitempty"`
	CPUPeriod uint64 `json:"cpuPeriod,omitempty"`
	// PidsMax is pids.max.
	PidsMax int64 `json:"pidsMax,omitempty"`
}

// Root names the guest's disks that make the workload's root file system.
//
// A disk is named either by its guest device path ("/dev/vda") or, more
// robustly, by the serial the host gave the virtio-blk device (QEMU
// `-device virtio-blk-pci,drive=X,serial=berth-l0`), which the guest finds
// in /sys/block/*/serial. Serials are at most 20 bytes (virtio's limit).
type Root struct {
	// Layers are read-only disks each holding an EROFS image of one layer
	// in overlayfs form (whiteouts are 0/0 character devices, opaque
	// directories carry trusted.overlay.opaque=y), lowest layer first.
	Layers []string `json:"layers"`
	// Scratch is a writable disk holding an empty ext4 file system for the
	// overlay's upper and work directories; empty means a tmpfs in guest
	// RAM instead.
	Scratch string `json:"scratch,omitempty"`
	// ReadOnly makes the root read-only for the workload (--read-only);
	// the mounts on it (/dev, /proc, /sys, user mounts) keep their own.
	ReadOnly bool `json:"readOnly,omitempty"`
}

// Mount is one mount made inside the guest's root.
type Mount struct {
	// Source is a guest device path or disk serial (for block file systems),
	// a virtio-fs tag (Type "virtiofs"), or a path in the guest's root
	// (Type "bind").
	Source string `json:"source"`
	// Type is the file system type: "virtiofs", "ext4", "erofs", "bind",
	// "tmpfs", ...
	Type string `json:"type"`
	// Target is the absolute path inside the root; it is created if missing.
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// Net is the guest's network card as the workload sees it: what the host
// read from the eth0 the VM took over (internal/vm). The agent gives the
// card (the guest's one virtio-net device) this MAC (a clone of a
// template has the template's), MTU, addresses and routes, in the
// workload's network namespace, as eth0, before the workload starts.
type Net struct {
	// MAC is eth0's Ethernet address, 02:00:...
	MAC string `json:"mac"`
	// MTU is eth0's; 0 leaves the card's.
	MTU int `json:"mtu,omitempty"`
	// Addrs are eth0's IPv4 addresses with their prefix ("10.213.77.2/24").
	Addrs []string `json:"addrs,omitempty"`
	// Gateway is the default route's next hop, "" for none.
	Gateway string `json:"gateway,omitempty"`
	// Routes are eth0's other routes, beyond the addresses' subnets.
	Routes []Route `json:"routes,omitempty"`
}

// File is a copy of a host file that the workload's spec binds in.
type File struct {
	// Target is the bind mount's destination.
	Target string `json:"target"`
	// Mode is the file's permission bits.
	Mode uint32 `json:"mode"`
	Data []byte `json:"data"`
}

// MaxFile bounds the size of one File, so that a Run request fits a
// frame (MaxPayload).
const MaxFile = 64 << 10

// Route is one route of the guest's card.
type Route struct {
	// Dst is the destination with its prefix ("192.0.2.0/24").
	Dst string `json:"dst"`
	// Via is the next hop, "" for a destination on the link.
	Via string `json:"via,omitempty"`
}

// ExitStatus is how a process ended: Code is its exit code, or 128+Signal
// when signal Signal killed it. OOMKilled says the guest's OOM killer
// killed a process of the workload's cgroup while it ran.
type ExitStatus struct {
	Code      int  `json:"code"`
	Signal    int  `json:"signal,omitempty"`
	OOMKilled bool `json:"oomKilled,omitempty"`
}

// StartError is why a process could not be started, with Docker's exit
// code conventions: 126 the command cannot be invoked, 127 it was not
// found, 125 anything else failed.
type StartError struct {
	Code int    `json:"code"`
	Msg  string `json:"message"`
}

func (e *StartError) Error() string { return e.Msg }

// Unwrap classes the error for errors.Is: 127 is errdefs.ErrNotFound, 126
// errdefs.ErrInvalid and 125 errdefs.ErrUnavailable.
func (e *StartError) Unwrap() error {
	switch e.Code {
	case 127:
		return errdefs.ErrNotFound
	case 126:
		return errdefs.ErrInvalid
	}
	return errdefs.ErrUnavailable
}

type helloMsg struct {
	Version int    `json:"version"`
	Agent   string `json:"agent,omitempty"`
	// UnixNano is the host's wall clock when it sent the hello, and
	// Entropy SeedSize bytes from crypto/rand (host to guest only).
	UnixNano int64  `json:"unixNano,omitempty"`
	Entropy  []byte `json:"entropy,omitempty"`
}

type startedMsg struct {
	Pid int `json:"pid"`
}

type signalMsg struct {
	Signal int `json:"signal"`
}

type resizeMsg struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// Query kinds.
const (
	QueryStats = "stats"
	QueryTop   = "top"
)

type queryMsg struct {
	Kind string `json:"kind"`
}

type creditMsg struct {
	Bytes int `json:"bytes"`
}

// frame is one decoded frame.
type frame struct {
	version uint8
	typ     msgType
	stream  uint32
	payload []byte
}

// readFrame reads one frame. It checks the magic and the length; the
// version is checked by the caller (the handshake must see any version).
func readFrame(r io.Reader) (frame, error) {
	var h [headerSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return frame{}, err
	}
	if m := binary.BigEndian.Uint32(h[0:4]); m != Magic {
		return frame{}, fmt.Errorf("agent protocol: bad frame magic %#08x: %w", m, errdefs.ErrInvalid)
	}
	f := frame{version: h[4], typ: msgType(h[5]), stream: binary.BigEndian.Uint32(h[8:12])}
	n := binary.BigEndian.Uint32(h[12:16])
	if n > MaxPayload {
		return frame{}, fmt.Errorf("agent protocol: %v frame of %d bytes exceeds %d: %w", f.typ, n, MaxPayload, errdefs.ErrInvalid)
	}
	f.payload = make([]byte, n)
	if _, err := io.ReadFull(r, f.payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return frame{}, err
	}
	return f, nil
}

// encodeFrame returns the bytes of one frame of this package's version.
func encodeFrame(typ msgType, stream uint32, payload []byte) []byte {
	return encodeFrameVersion(Version, typ, stream, payload)
}

func encodeFrameVersion(version uint8, typ msgType, stream uint32, payload []byte) []byte {
	b := make([]byte, headerSize+len(payload))
	binary.BigEndian.PutUint32(b[0:4], Magic)
	b[4] = version
	b[5] = byte(typ)
	binary.BigEndian.PutUint32(b[8:12], stream)
	binary.BigEndian.PutUint32(b[12:16], uint32(len(payload)))
	copy(b[headerSize:], payload)
	return b
}

// decode unmarshals a JSON payload, naming the message on failure.
func decode(f frame, v any) error {
	if err := json.Unmarshal(f.payload, v); err != nil {
		return fmt.Errorf("agent protocol: bad %v message: %v: %w", f.typ, err, errdefs.ErrInvalid)
	}
	return nil
}

// mustJSON marshals the package's own message types, which cannot fail.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// checkVersion compares the peer's hello with ours.
func checkVersion(peer int, hostSide bool) error {
	if peer == Version {
		return nil
	}
	host, guest := Version, peer
	if !hostSide {
		host, guest = peer, Version
	}
	return fmt.Errorf("agent protocol version mismatch: host speaks version %d, guest agent speaks version %d: %w",
		host, guest, errdefs.ErrNotSupported)
}

// maxGuestText bounds a message from the guest as the host repeats it.
const maxGuestText = 1024

// guestText makes a message the guest sent fit into one line of the host's
// errors: characters that are not printable (newlines, terminal escapes,
// bidirectional overrides, invalid UTF-8) are escaped as \xNN or \uNNNN,
// and text beyond maxGuestText bytes is cut.
func guestText(s string) string {
	var b strings.Builder
	for i, r := range s {
		if b.Len() >= maxGuestText {
			b.WriteString("...")
			break
		}
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], string(utf8.RuneError)):
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r < 0x100 && !strconv.IsPrint(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case !strconv.IsPrint(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// ExitStatusOf turns a wait status into an ExitStatus (128+N for signal N).
func ExitStatusOf(ws syscall.WaitStatus) ExitStatus {
	if ws.Signaled() {
		return ExitStatus{Code: 128 + int(ws.Signal()), Signal: int(ws.Signal())}
	}
	return ExitStatus{Code: ws.ExitStatus()}
}
