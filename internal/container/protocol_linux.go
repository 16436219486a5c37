package container

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"syscall"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The parent and a stage process talk over one unix socketpair (fd 3 in
// the stage) with newline-delimited JSON messages. The parent sends the
// stage's configuration first; with a terminal the stage sends "console"
// with the pty master attached (SCM_RIGHTS); the init answers "ready" or
// "error"; the parent sends "start". An init that stays (KeepInit)
// answers "started" (or "exec-error" or "error") and, when the workload
// has ended, "exit" with its wait status; one that becomes the workload
// answers "execing", then end of file once its execve has closed the
// socket (or "exec-error" or "error"), and the parent waits for its pid.
// The exec stage's socket is close-on-exec too: end of file after the
// config (and "console") means the command runs.

// Message types.
const (
	msgConsole    = "console"    // stage -> parent: the terminal's pty master is attached
	msgReady      = "ready"      // init -> parent: rootfs is done, waiting for start
	msgStart      = "start"      // parent -> init: run the workload
	msgStarted    = "started"    // init -> parent: the workload runs (Pid is its pid in the container)
	msgExecing    = "execing"    // init -> parent: the init execve's the workload next; end of file follows once it runs
	msgError      = "error"      // stage -> parent: setup failed (Err, Class)
	msgExecError  = "exec-error" // stage -> parent: the command could not be started (Path, Errno, Code)
	msgExit       = "exit"       // init -> parent: the workload ended (Status is its wait status)
	msgHooks      = "hooks"      // init -> parent: the root is built, pivot_root is next: run the create hooks
	msgHooksDone  = "hooks-done" // parent -> init: they ran; State is the state JSON for createContainer
	msgPremounted = "premounted" // init -> parent: the premount configuration's root and mounts are built
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
	// PidsMax, with "error": the cgroup's pids limit (pids.max), which
	// the stage found reached (PidsLimitError).
	PidsMax int64 `json:"pidsMax,omitempty"`
	// Filter is the seccomp program the parent compiled while the init
	// set up the root file system (with msgStart).
	Filter []byte `json:"filter,omitempty"`
	// State is the container's OCI state JSON, for the hooks the init runs
	// (with msgHooksDone and a detached start's msgStart).
	State []byte `json:"state,omitempty"`
	// Trace is the steps the stage reached since its last message, when
	// the parent traces (stagetrace_linux.go).
	Trace []stamp `json:"trace,omitempty"`
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

// warmConfig has the shape of an init's configuration. Decoding it
// first, while the init waits for the real one, builds encoding/json's
// per-type decoders and brings its code in: a cold decode takes most of a
// millisecond on the start's critical path.
const warmConfig = `{"id":"","spec":{"ociVersion":"","process":{"terminal":false,` +
	`"consoleSize":{"height":0,"width":0},"user":{"uid":0,"gid":0,"umask":0,"additionalGids":[0]},` +
	`"args":[""],"env":[""],"cwd":"","capabilities":{"bounding":[""],"effective":[""],` +
	`"inheritable":[""],"permitted":[""],"ambient":[""]},"rlimits":[{"type":"","hard":0,"soft":0}],` +
	`"noNewPrivileges":true},"root":{"path":"","readonly":false},"hostname":"","domainname":"",` +
	`"mounts":[{"destination":"","type":"","source":"","options":[""]}],` +
	`"hooks":{"createContainer":[{"path":"","args":[""],"env":[""],"timeout":1}],"startContainer":[]},` +
	`"linux":{"uidMappings":[{"containerID":0,"hostID":0,"size":0}],"sysctl":{"":""},` +
	`"namespaces":[{"type":"","path":""}],"devices":[{"type":"","path":"","major":0,"minor":0,` +
	`"fileMode":0,"uid":0,"gid":0}],"seccomp":{"defaultAction":"","architectures":[""],"flags":[""]},` +
	`"rootfsPropagation":"","maskedPaths":[""],"readonlyPaths":[""]}},"layers":[""],"dir":"",` +
	`"cgroupPath":"","newNet":true,"cgroupJoins":0,"startAtOnce":true,"startFilter":"AAAAAAAAAAA=","keepInit":true}`

// warmDecoder decodes warmConfig (see there).
func warmDecoder() {
	var c initConfig
	_ = json.Unmarshal([]byte(warmConfig), &c)
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
	// HostMount: the spec has no mount namespace. The init builds the
	// root in a scratch one and then returns to the host's (fd
	// hostMountNSFD) with a detached copy of the tree as its root.
	HostMount bool `json:"hostMount,omitempty"`
	// Console: allocate a terminal in the container's devpts for the
	// workload (Spec.Process.Terminal), its master sent with "console".
	Console bool `json:"console"`
	// Hooks: stop before pivot_root for the parent's create hooks
	// (msgHooks), then run the spec's createContainer hooks.
	Hooks bool `json:"hooks,omitempty"`
	// CgroupJoins, when not 0: the init is not in the container's cgroup
	// (v1); the configuration comes with cgroups.ThreadFiles, this many
	// files of Join then those of Leave, through which the thread that
	// forks or execs the workload joins the cgroup first (and, forking,
	// leaves).
	CgroupJoins int `json:"cgroupJoins,omitempty"`
	// StartAtOnce: start the workload once ready, with StartFilter as
	// the seccomp program, without waiting for "start" (Run).
	StartAtOnce bool   `json:"startAtOnce,omitempty"`
	StartFilter []byte `json:"startFilter,omitempty"`
	// KeepInit: the init stays as PID 1 and forks the workload
	// (Config.KeepInit); otherwise, at start, it execve's the workload.
	KeepInit bool `json:"keepInit,omitempty"`
	// Premount: this configuration only builds the root and its mounts
	// ahead of the real one (Init.Premount); the init answers
	// "premounted" and waits for the real configuration, which carries
	// Premounted, the number of its mounts built so.
	Premount   bool `json:"premount,omitempty"`
	Premounted int  `json:"premounted,omitempty"`
}

// execConfig is what the parent sends the exec stage.
type execConfig struct {
	Process *specs.Process      `json:"process"`
	Seccomp *specs.LinuxSeccomp `json:"seccomp,omitempty"`
	Console bool                `json:"console"`
	// Chroot: fd 4 is the container's root directory, not its mount
	// namespace (a container in the host's mount namespace).
	Chroot bool `json:"chroot,omitempty"`
	// CgroupJoins, when not 0: the stage is not in the container's
	// cgroup (v1); the configuration comes with cgroups.ThreadFiles,
	// this many files of Join then those of Leave, then the cgroup's
	// cgroups.PidsFiles (Current, Max). The thread that execs the
	// command joins the cgroup last thing before the execve.
	CgroupJoins int `json:"cgroupJoins,omitempty"`
}

// classOf picks the errdefs class name of err for the wire, so the
// parent can wrap the stage's error in the right class; an errno without
// one is classed as the parent would class it.
func classOf(err error) string {
	if c := errdefs.ClassName(err); c != "" {
		return c
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ENOENT, syscall.ENOTDIR:
			return errdefs.ClassName(errdefs.ErrNotFound)
		case syscall.EINVAL:
			return errdefs.ClassName(errdefs.ErrInvalid)
		case syscall.ENOSYS, syscall.ENODEV:
			return errdefs.ClassName(errdefs.ErrUnavailable)
		}
	}
	return ""
}

// errorMessage is the wire form of a stage's error: the text without the
// class's own words (the parent wraps the class back in, silently), so the
// user reads one line naming what was wrong.
func errorMessage(err error) message {
	if pe, ok := err.(*PidsLimitError); ok {
		return message{Type: msgError, Err: pe.Error(), PidsMax: pe.Limit}
	}
	class := classOf(err)
	text := err.Error()
	if class != "" { // the class's own text
		text = strings.TrimSuffix(text, ": "+class)
	}
	return message{Type: msgError, Err: text, Class: class}
}

func errorFromMessage(m *message) error {
	switch m.Type {
	case msgError:
		if m.PidsMax > 0 {
			return &PidsLimitError{Limit: m.PidsMax}
		}
		// One line, wrapped in its class so errors.Is works.
		return errdefs.Decode(m.Err, m.Class)
	case msgExecError:
		return &ExecError{Path: m.Path, Err: syscall.Errno(m.Errno), Code: m.Code}
	}
	return fmt.Errorf("container init: unexpected message %q", m.Type)
}

// channel is one end of the sync socket. Each message is one JSON line
// written with a single sendmsg; a message may carry open files
// (SCM_RIGHTS) in that same sendmsg, e.g. the pty master of "console".
// Lines are read with recvmsg into the channel's own buffer (a
// json.Decoder would read(2) and lose the ancillary data).
type channel struct {
	rc   syscall.RawConn
	buf  []byte  // received bytes not yet decoded
	off  int64   // stream offset of buf[0]
	fds  []fdSet // received fds not yet handed out, in arrival order
	read []byte  // recvmsg's data buffer
}

// fdSet is the fds one recvmsg returned, with the stream offset of the
// last byte that call returned. The kernel hands a message's fds to the
// first recvmsg that reads any of the bytes sent with them, and ends that
// recvmsg within those bytes, so the fds belong to the line holding that
// last byte.
type fdSet struct {
	at  int64
	fds []int
}

// maxFDs is the most fds one message may carry.
const maxFDs = 32 // a v1 cgroup's ThreadFiles (initConfig.CgroupJoins) are the most

func newChannel(f *os.File) (*channel, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("sync socket: %w", err)
	}
	return &channel{rc: rc}, nil
}

// send writes v as one line; files, if any, travel with it and stay open
// in this process.
func (c *channel) send(v any, files ...*os.File) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	var serr error
	err = c.rc.Write(func(fd uintptr) bool {
		for len(b) > 0 {
			n, err := unix.SendmsgN(int(fd), b, oob, nil, unix.MSG_NOSIGNAL)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return false
			case err != nil:
				serr = err
				return true
			}
			// The fds went with the first bytes.
			b, oob = b[n:], nil
		}
		return true
	})
	runtime.KeepAlive(files)
	if err != nil {
		return err
	}
	return serr
}

// recv reads the next line into v. Files that came with it are closed:
// use recvFiles where a message may carry some.
func (c *channel) recv(v any) error {
	files, err := c.recvFiles(v)
	closeFiles(files)
	return err
}

// recvFiles reads the next line into v and returns the files that came
// with it (close-on-exec; the caller owns them). At end of file it
// returns io.EOF, or io.ErrUnexpectedEOF within a line.
func (c *channel) recvFiles(v any) ([]*os.File, error) {
	for {
		if i := bytes.IndexByte(c.buf, '\n'); i >= 0 {
			end := c.off + int64(i)
			var files []*os.File
			for len(c.fds) > 0 && c.fds[0].at <= end {
				for _, fd := range c.fds[0].fds {
					files = append(files, os.NewFile(uintptr(fd), "received"))
				}
				c.fds = c.fds[1:]
			}
			line := c.buf[:i]
			c.buf, c.off = c.buf[i+1:], end+1
			if err := json.Unmarshal(line, v); err != nil {
				closeFiles(files)
				return nil, fmt.Errorf("sync socket: %w", err)
			}
			return files, nil
		}
		if err := c.fill(); err != nil {
			if err == io.EOF && len(c.buf) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// fill appends what one recvmsg returns to the buffer and queues the fds
// that came with it.
func (c *channel) fill() error {
	if c.read == nil {
		c.read = make([]byte, 32<<10)
	}
	oob := make([]byte, unix.CmsgSpace(4*maxFDs))
	var n, oobn, flags int
	var rerr error
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			n, oobn, flags, _, rerr = unix.Recvmsg(int(fd), c.read, oob, unix.MSG_CMSG_CLOEXEC)
			if rerr == unix.EINTR {
				continue
			}
			return rerr != unix.EAGAIN
		}
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return err
	}
	var fds []int
	if oobn > 0 {
		cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return fmt.Errorf("sync socket: %w", err)
		}
		for i := range cmsgs {
			if got, err := unix.ParseUnixRights(&cmsgs[i]); err == nil {
				fds = append(fds, got...)
			}
		}
	}
	if flags&unix.MSG_CTRUNC != 0 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return fmt.Errorf("sync socket: a message carried more than %d files", maxFDs)
	}
	if n == 0 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return io.EOF
	}
	c.buf = append(c.buf, c.read[:n]...)
	if len(fds) > 0 {
		c.fds = append(c.fds, fdSet{at: c.off + int64(len(c.buf)) - 1, fds: fds})
	}
	return nil
}

// close closes the fds received but not handed out.
func (c *channel) close() {
	for _, s := range c.fds {
		for _, fd := range s.fds {
			unix.Close(fd)
		}
	}
	c.fds = nil
}

// closeFiles closes every file of files.
func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
