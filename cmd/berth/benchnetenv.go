package main

// The world `bench network` measures in: a network namespace of its own
// (everything berth and dockerd make there, bridges, veths, firewall
// tables, goes with it) and a dockerd of its own in that namespace, on
// its own socket, data root, exec root and pid file.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
)

// benchNetns is a new network namespace held by one locked thread: what
// runs on that thread (a dial, the start of a process) belongs to it.
// The namespace goes when the thread has ended and its last process
// has exited.
type benchNetns struct {
	do   chan func()
	quit chan struct{}
}

// newBenchNetns makes the namespace: loopback up, and a veth pair whose
// end bnb0 holds benchHostIP, the host's non-loopback address there.
func newBenchNetns() (*benchNetns, error) {
	ns := &benchNetns{do: make(chan func()), quit: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread ends with the goroutine, and
		// leaves the namespace with it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("a network namespace for the bench: %w", err)
			return
		}
		errc <- nil
		for {
			select {
			case fn := <-ns.do:
				fn()
			case <-ns.quit:
				return
			}
		}
	}()
	if err := <-errc; err != nil {
		return nil, err
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "bnb0", "type", "veth", "peer", "name", "bnb1"},
		{"addr", "add", benchHostIP + "/24", "dev", "bnb0"},
		{"link", "set", "bnb0", "up"},
		{"link", "set", "bnb1", "up"},
	} {
		if _, err := ns.output(context.Background(), append([]string{"ip"}, args...)...); err != nil {
			ns.close()
			return nil, err
		}
	}
	return ns, nil
}

// benchHostIP is the host's address in the bench's namespace (TEST-NET-3):
// published ports reach instances there through DNAT.
const benchHostIP = "203.0.113.1"

func (ns *benchNetns) close() { close(ns.quit) }

// in runs fn on the namespace's thread.
func (ns *benchNetns) in(fn func()) {
	done := make(chan struct{})
	ns.do <- func() { fn(); close(done) }
	<-done
}

// start starts cmd in the namespace.
func (ns *benchNetns) start(cmd *exec.Cmd) error {
	var err error
	ns.in(func() { err = cmd.Start() })
	return err
}

// output runs argv in the namespace and returns its standard output; its
// error carries the end of its standard error.
func (ns *benchNetns) output(ctx context.Context, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	// A cancelled command is asked to stop, not killed: a berth run
	// undoes its start on SIGTERM, a SIGKILL would leave it half made.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := ns.start(cmd); err != nil {
		return "", err
	}
	if err := cmd.Wait(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 1000 {
			msg = msg[len(msg)-1000:]
		}
		return "", fmt.Errorf("%s %s: %v: %s", filepath.Base(argv[0]), strings.Join(argv[1:min(len(argv), 4)], " "), err, msg)
	}
	return stdout.String(), nil
}

// run is output without the output.
func (ns *benchNetns) run(ctx context.Context, argv ...string) error {
	_, err := ns.output(ctx, argv...)
	return err
}

// benchDockerd is a dockerd of the bench's, in its namespace.
type benchDockerd struct {
	dir    string // its sockets, data root, exec root, pid file and log
	docker string
	cmd    *exec.Cmd
	done   chan struct{}
}

// dockerCgroup is the cgroup parent of the bench dockerd's containers.
const dockerCgroup = "berthbench-docker"

// startDockerd starts dockerd in ns with everything of its own under dir
// (a short path: its sockets live there) and waits for it to answer.
func startDockerd(ctx context.Context, ns *benchNetns, dir string) (_ *benchDockerd, err error) {
	dockerd, err := exec.LookPath("dockerd")
	if err != nil {
		return nil, fmt.Errorf("dockerd is not installed: %w", errdefs.ErrUnavailable)
	}
	docker, err := exec.LookPath("docker")
	if err != nil {
		return nil, fmt.Errorf("the docker client is not installed: %w", errdefs.ErrUnavailable)
	}
	// An empty configuration: nothing of the machine's /etc/docker.
	if err := os.WriteFile(filepath.Join(dir, "daemon.json"), []byte("{}\n"), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "dockerd.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	d := &benchDockerd{dir: dir, docker: docker, done: make(chan struct{})}
	d.cmd = exec.Command(dockerd,
		"--config-file", filepath.Join(dir, "daemon.json"),
		"--host", "unix://"+filepath.Join(dir, "d.sock"),
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "x"),
		"--pidfile", filepath.Join(dir, "d.pid"),
		"--cgroup-parent", "/"+dockerCgroup)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// Its own session: a Ctrl-C at the terminal reaches the bench, which
	// stops it after its containers.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := ns.start(d.cmd); err != nil {
		return nil, fmt.Errorf("start dockerd: %w", err)
	}
	go func() { d.cmd.Wait(); close(d.done) }()
	defer func() {
		if err != nil {
			d.stop(ns)
		}
	}()
	for deadline := time.Now().Add(60 * time.Second); ns.run(ctx, d.argv("version")...) != nil; time.Sleep(200 * time.Millisecond) {
		select {
		case <-d.done:
			return nil, fmt.Errorf("dockerd exited at start: %s", tailFile(filepath.Join(dir, "dockerd.log")))
		default:
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("dockerd did not answer within a minute: %s", tailFile(filepath.Join(dir, "dockerd.log")))
		}
	}
	return d, nil
}

// argv is a docker command line for the bench's dockerd, with a client
// configuration of its own.
func (d *benchDockerd) argv(args ...string) []string {
	return append([]string{"env", "DOCKER_CONFIG=" + filepath.Join(d.dir, "cli"), d.docker, "--host", "unix://" + filepath.Join(d.dir, "d.sock")}, args...)
}

// stop removes every container of the bench's dockerd, stops it and
// removes what it left: mounts, its directory, its cgroup parent.
func (d *benchDockerd) stop(ns *benchNetns) {
	ctx := context.Background()
	if out, err := ns.output(ctx, d.argv("ps", "-aq")...); err == nil && strings.TrimSpace(out) != "" {
		ns.run(ctx, d.argv(append([]string{"rm", "-f"}, strings.Fields(out)...)...)...)
	}
	stopDaemon(d.cmd.Process, d.done)
	cleanupDaemonDir(d.dir)
	removeCgroupParent(dockerCgroup)
}

// interruptible is a context that Ctrl-C, SIGTERM or SIGHUP cancels, and
// a func for a deferred call with the scenario's error: after a signal,
// it says so (the deferred clean-ups have run or run next).
func interruptible() (context.Context, func(*error)) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	return ctx, func(err *error) {
		// Before stop, which cancels ctx too.
		if ctx.Err() != nil {
			*err = errors.New("interrupted by a signal; what the bench started is removed")
		}
		stop()
	}
}

// startBenchDocker starts a dockerd in ns with its files under tmp/d, and
// loads image ref into it as name. Without one, it says why the Docker
// rows are skipped; an error ends the bench.
func startBenchDocker(ctx context.Context, g *globals, ns *benchNetns, ref, tmp, name string) (*benchDockerd, string, error) {
	runc, err := exec.LookPath("runc")
	if err != nil {
		return nil, "runc is not installed (it writes the image's archive)", nil
	}
	dir := filepath.Join(tmp, "d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, "", err
	}
	dk, err := startDockerd(ctx, ns, dir)
	if err != nil {
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
		return nil, err.Error(), nil
	}
	archive := filepath.Join(tmp, "image.tar")
	err = dockerArchive(g, runc, ref, filepath.Join(tmp, "img"), archive, name)
	if err == nil {
		err = ns.run(ctx, dk.argv("load", "-q", "-i", archive)...)
	}
	if err != nil {
		dk.stop(ns)
		return nil, "", err
	}
	return dk, "", nil
}
