package agent

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"github.com/berth-dev/berth/internal/tty"
	"golang.org/x/sys/unix"
)

// hostHandler is a real Handler that runs host processes with os/exec,
// the way berth-agent runs guest processes, so the protocol tests run
// real processes end to end.
type hostHandler struct {
	mu       sync.Mutex
	tasks    []*hostTask
	shutdown int
}

func (h *hostHandler) Start(kind Kind, p *Process) (Task, error) {
	path, err := exec.LookPath(p.Args[0])
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, &StartError{Code: 126, Msg: err.Error()}
		}
		return nil, &StartError{Code: 127, Msg: err.Error()}
	}
	cmd := exec.Command(path, p.Args[1:]...)
	cmd.Args[0] = p.Args[0]
	cmd.Env = p.Env
	cmd.Dir = p.Cwd
	t := &hostTask{cmd: cmd, done: make(chan struct{})}
	var child []*os.File
	if p.Terminal {
		m, s, err := tty.Open()
		if err != nil {
			return nil, err
		}
		if p.Rows != 0 {
			_ = unix.IoctlSetWinsize(int(m.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: p.Rows, Col: p.Cols})
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = s, s, s
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
		t.master = m
		t.stdin, t.stdout = PtyStdio(m)
		child = []*os.File{s}
	} else {
		inR, inW, _ := os.Pipe()
		outR, outW, _ := os.Pipe()
		errR, errW, _ := os.Pipe()
		cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
		t.stdin, t.stdout, t.stderr = inW, outR, errR
		child = []*os.File{inR, outW, errW}
	}
	err = cmd.Start()
	for _, f := range child {
		f.Close()
	}
	if err != nil {
		return nil, &StartError{Code: 126, Msg: err.Error()}
	}
	h.mu.Lock()
	h.tasks = append(h.tasks, t)
	h.mu.Unlock()
	return t, nil
}

func (h *hostHandler) Shutdown() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.shutdown++
	for _, t := range h.tasks {
		_ = t.Signal(syscall.SIGKILL)
	}
	return nil
}

type hostTask struct {
	cmd            *exec.Cmd
	master         *os.File
	stdin          io.WriteCloser
	stdout, stderr io.ReadCloser
	done           chan struct{} // closed when Wait returned
	status         ExitStatus
}

func (t *hostTask) Pid() int { return t.cmd.Process.Pid }

func (t *hostTask) Stdio() (io.WriteCloser, io.ReadCloser, io.ReadCloser) {
	if t.stderr == nil {
		return t.stdin, t.stdout, nil
	}
	return t.stdin, t.stdout, t.stderr
}

func (t *hostTask) Wait() (ExitStatus, error) {
	defer close(t.done)
	err := t.cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return ExitStatus{}, err
	}
	t.status = ExitStatusOf(t.cmd.ProcessState.Sys().(syscall.WaitStatus))
	return t.status, nil
}

func (t *hostTask) Signal(sig syscall.Signal) error { return t.cmd.Process.Signal(sig) }

func (t *hostTask) Resize(rows, cols uint16) error {
	if t.master == nil {
		return nil
	}
	return unix.IoctlSetWinsize(int(t.master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
}
