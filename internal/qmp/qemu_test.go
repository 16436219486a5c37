package qmp

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testutil"
)

// TestRealQEMU drives a real QEMU (no guest: -S keeps it in prelaunch):
// query-status, cont, stop, an unknown command, quit.
func TestRealQEMU(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		testutil.Missing(t, "needs qemu: qemu-system-x86_64 not on PATH (apt-get install qemu-system-x86)")
	}
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	// berth hands QEMU a socket it already listens on, so there is no race
	// with QEMU creating it: a connection made now waits in the backlog.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	lf, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	cmd := exec.Command(qemu, "-chardev", "socket,id=qmp,fd=3,server=on,wait=off",
		"-mon", "chardev=qmp,mode=control", "-M", "q35,accel=tcg",
		"-nodefaults", "-no-user-config", "-S", "-display", "none")
	cmd.ExtraFiles = []*os.File{lf}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lf.Close()
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := Dial(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if cl.Greeting().Version.Major < 2 {
		t.Errorf("greeting = %+v", cl.Greeting())
	}

	st, err := cl.QueryStatus(ctx)
	if err != nil || st.Status != "prelaunch" || st.Running {
		t.Fatalf("QueryStatus = %+v, %v", st, err)
	}
	if err := cl.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	if ev := waitEvent(t, cl, EventResume); ev.Time.IsZero() {
		t.Errorf("RESUME without timestamp: %+v", ev)
	}
	if st, err := cl.QueryStatus(ctx); err != nil || !st.Running {
		t.Fatalf("after cont: %+v, %v", st, err)
	}
	if err := cl.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, cl, EventStop)
	if st, err := cl.QueryStatus(ctx); err != nil || st.Status != "paused" {
		t.Fatalf("after stop: %+v, %v", st, err)
	}
	var qe *Error
	if err := cl.Execute(ctx, "no-such-command", nil, nil); !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Errorf("unknown command = %v", err)
	}
	if err := cl.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	ev := waitEvent(t, cl, EventShutdown)
	if info, ok := ev.Shutdown(); !ok || info.Guest || info.Reason != "host-qmp-quit" {
		t.Errorf("SHUTDOWN = %+v", ev)
	}
	select {
	case <-exited:
	case <-ctx.Done():
		t.Fatal("QEMU did not exit after quit")
	}
	<-cl.Done()
}

// waitEvent reads events until one named name arrives.
func waitEvent(t *testing.T, cl *Client, name string) Event {
	t.Helper()
	for ev := range cl.Events() {
		if ev.Name == name {
			return ev
		}
	}
	t.Fatalf("events ended before %s", name)
	return Event{}
}
