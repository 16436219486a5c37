package main

// The berth-runtime scenarios of `berth bench`: container start through
// containerd (ctr) and exec latency, berth-runtime against runc, each
// alternating in one run (docs/conformance.md).

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/bench"
	"github.com/berth-dev/berth/internal/errdefs"
)

// benchNS is the containerd namespace, and so the cgroup parent, of the
// ctr scenario.
const benchNS = "berthbench"

// runtimeBinaries finds runc and berth-runtime: $BERTH_RUNTIME, else next
// to this binary (bin/), else on PATH.
func runtimeBinaries() (runc, berthRT string, err error) {
	if runc, err = exec.LookPath("runc"); err != nil {
		return "", "", fmt.Errorf("runc is not installed: %w", errdefs.ErrUnavailable)
	}
	berthRT = os.Getenv("BERTH_RUNTIME")
	if berthRT == "" {
		if self, err := os.Executable(); err == nil {
			if p := filepath.Join(filepath.Dir(self), "berth-runtime"); isExec(p) {
				berthRT = p
			}
		}
	}
	if berthRT == "" {
		if berthRT, err = exec.LookPath("berth-runtime"); err != nil {
			return "", "", fmt.Errorf("berth-runtime not found next to berth, on PATH or in $BERTH_RUNTIME: %w", errdefs.ErrUnavailable)
		}
	}
	return runc, berthRT, nil
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// containerProcess sets a bundle's process to args with the capabilities
// containerd and Docker give a container by default.
func containerProcess(args []string) func(proc map[string]any) {
	return func(proc map[string]any) {
		proc["terminal"] = false
		proc["args"] = args
		proc["capabilities"] = map[string]any{
			"bounding": defaultCaps, "effective": defaultCaps, "permitted": defaultCaps,
		}
	}
}

// defaultCaps is containerd's and Docker's default capability set.
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// benchExec times `RUNTIME exec ID /bin/true` into a running `sleep`
// container of each runtime.
func benchExec(g *globals, ref string, n int) (bench.Result, error) {
	runc, berthRT, err := runtimeBinaries()
	if err != nil {
		return bench.Result{}, err
	}
	tmp, err := os.MkdirTemp("", "berth-bench-exec-")
	if err != nil {
		return bench.Result{}, err
	}
	defer os.RemoveAll(tmp)
	type side struct{ name, bin, root, id string }
	sides := []side{
		{"berth-runtime exec", berthRT, filepath.Join(tmp, "berth-state"), fmt.Sprintf("bench-exec-berth-%d", os.Getpid())},
		{"runc exec", runc, filepath.Join(tmp, "runc-state"), fmt.Sprintf("bench-exec-runc-%d", os.Getpid())},
	}
	var subjects []bench.Subject
	for i, s := range sides {
		bundle := filepath.Join(tmp, fmt.Sprintf("bundle%d", i))
		if err := imageBundle(g, runc, ref, bundle, containerProcess([]string{"sleep", "100000"})); err != nil {
			return bench.Result{}, err
		}
		defer func(s side) {
			exec.Command(s.bin, "--root", s.root, "delete", "--force", s.id).Run()
		}(s)
		for _, verb := range []string{"create", "start"} {
			args := []string{"--root", s.root, verb}
			if verb == "create" {
				args = append(args, "--bundle", bundle)
			}
			if err := runLogged(filepath.Join(tmp, "out.log"), s.bin, append(args, s.id)...); err != nil {
				return bench.Result{}, fmt.Errorf("%s %s: %w", s.bin, verb, err)
			}
		}
		subjects = append(subjects, bench.Subject{Name: s.name, Argv: []string{s.bin, "--root", s.root, "exec", s.id, "/bin/true"}})
	}
	r, err := bench.Compare("exec: `exec ID /bin/true` into a running container", subjects[0], subjects[1], n)
	r.Note = "runc copies its binary into a memfd on every exec (CVE-2019-5736); berth-runtime does not, see docs/conformance.md"
	return r, err
}

// benchCtr times `ctr run --rm IMAGE ID /bin/true` through a containerd of
// its own, with berth-runtime and with runc as the runc shim's binary.
func benchCtr(g *globals, ref string, n int) (_ bench.Result, err error) {
	runc, berthRT, err := runtimeBinaries()
	if err != nil {
		return bench.Result{}, err
	}
	containerd, err := exec.LookPath("containerd")
	if err != nil {
		return bench.Result{}, fmt.Errorf("containerd is not installed: %w", errdefs.ErrUnavailable)
	}
	ctr, err := exec.LookPath("ctr")
	if err != nil {
		return bench.Result{}, fmt.Errorf("ctr is not installed: %w", errdefs.ErrUnavailable)
	}
	// A short directory: containerd's sockets live in it.
	dir, err := os.MkdirTemp("", "bbc-")
	if err != nil {
		return bench.Result{}, err
	}
	defer cleanupDaemonDir(dir)

	archive := filepath.Join(dir, "image.tar")
	const imgName = "localhost/berth-bench:ctr"
	if err := dockerArchive(g, runc, ref, filepath.Join(dir, "img"), archive, imgName); err != nil {
		return bench.Result{}, err
	}

	cd, err := startContainerd(containerd, ctr, dir)
	if err != nil {
		return bench.Result{}, err
	}
	c := cd.ctr
	defer func() {
		// Whatever is left goes before the daemon stops.
		out, _ := exec.Command(c("task", "ls", "-q")[0], c("task", "ls", "-q")[1:]...).Output()
		for _, id := range strings.Fields(string(out)) {
			run(c("task", "kill", "-s", "KILL", id)...)
			run(c("task", "rm", "-f", id)...)
		}
		out, _ = exec.Command(c("container", "ls", "-q")[0], c("container", "ls", "-q")[1:]...).Output()
		for _, id := range strings.Fields(string(out)) {
			run(c("container", "rm", id)...)
		}
		run(c("image", "rm", imgName)...)
		cd.stop()
	}()
	if out, err := exec.Command(c("image", "import", archive)[0], c("image", "import", archive)[1:]...).CombinedOutput(); err != nil {
		return bench.Result{}, fmt.Errorf("ctr image import: %v: %s", err, strings.TrimSpace(string(out)))
	}
	r, err := bench.Compare("ctr: `ctr run --rm` of /bin/true through containerd 1.6",
		bench.Subject{Name: "ctr run, berth-runtime", Argv: c("run", "--rm", "--runc-binary", berthRT, imgName, "bench-berth", "/bin/true")},
		bench.Subject{Name: "ctr run, runc", Argv: c("run", "--rm", "--runc-binary", runc, imgName, "bench-runc", "/bin/true")},
		n)
	r.Note = "same containerd, image and shim (io.containerd.runc.v2); only the OCI runtime differs"
	return r, err
}

// containerdDaemon is a containerd of the bench's own: its root, state
// and sockets in a directory of the bench's.
type containerdDaemon struct {
	// ctr is the command line of `ctr` with args, talking to it in the
	// bench's namespace.
	ctr  func(args ...string) []string
	stop func()
}

// startContainerd starts containerd with its root, state and sockets in
// dir (a short path: the sockets live there) and waits until it answers.
func startContainerd(containerd, ctr, dir string) (*containerdDaemon, error) {
	sock := filepath.Join(dir, "c.sock")
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc", filepath.Join(dir, "debug.sock"))
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o644); err != nil {
		return nil, err
	}
	c := func(args ...string) []string { return append([]string{ctr, "-a", sock, "-n", benchNS}, args...) }
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		return nil, err
	}
	d := exec.Command(containerd, "--config", filepath.Join(dir, "config.toml"))
	d.Stdout, d.Stderr = logf, logf
	d.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := d.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	logf.Close()
	done := make(chan struct{})
	go func() { d.Wait(); close(done) }()
	cd := &containerdDaemon{ctr: c, stop: func() { stopDaemon(d.Process, done) }}
	for deadline := time.Now().Add(60 * time.Second); run(c("version")...) != nil; time.Sleep(100 * time.Millisecond) {
		select {
		case <-done:
			return nil, fmt.Errorf("containerd exited at start: %s", tailFile(filepath.Join(dir, "containerd.log")))
		default:
		}
		if time.Now().After(deadline) {
			cd.stop()
			return nil, fmt.Errorf("containerd did not answer within a minute: %s", tailFile(filepath.Join(dir, "containerd.log")))
		}
	}
	return cd, nil
}

// runLogged runs name with its output in the file log, not a pipe: the
// container that `create` leaves behind keeps the caller's stdio open.
func runLogged(log, name string, args ...string) error {
	f, err := os.Create(log)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(tailFile(log)))
	}
	return nil
}

// run runs argv and returns its error.
func run(argv ...string) error { return exec.Command(argv[0], argv[1:]...).Run() }

// tailFile is the end of a log file.
func tailFile(p string) string {
	b, _ := os.ReadFile(p)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// cleanupDaemonDir unmounts whatever a stopped daemon left under dir,
// removes dir and the empty cgroup parent of the bench's namespace.
func cleanupDaemonDir(dir string) {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	lines := strings.Split(string(b), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		f := strings.Fields(lines[i])
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			unix.Unmount(f[4], unix.MNT_DETACH)
		}
	}
	os.RemoveAll(dir)
	removeCgroupParent(benchNS)
}

// removeCgroupParent removes the cgroup directories called name at the
// top of each hierarchy, those that are empty.
func removeCgroupParent(name string) {
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + name)
	for _, d := range append(dirs, "/sys/fs/cgroup/"+name) {
		os.Remove(d) // only when empty
	}
}

// stopDaemon stops a daemon the bench started: SIGTERM, then SIGKILL if
// it has not exited (done closed) within 30 seconds.
func stopDaemon(p *os.Process, done <-chan struct{}) {
	p.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		p.Kill()
		<-done
	}
}

// dockerArchive writes a docker-save archive of the image's root file
// system (one layer) named name, which `ctr image import` reads.
func dockerArchive(g *globals, runc, ref, work, out, name string) error {
	if err := imageBundle(g, runc, ref, work, containerProcess([]string{"/bin/true"})); err != nil {
		return err
	}
	layer := filepath.Join(work, "layer.tar")
	if o, err := exec.Command("tar", "--numeric-owner", "-C", filepath.Join(work, "rootfs"), "-cf", layer, ".").CombinedOutput(); err != nil {
		return fmt.Errorf("tar layer: %v: %s", err, o)
	}
	f, err := os.Open(layer)
	if err != nil {
		return err
	}
	h := sha256.New()
	_, err = io.Copy(h, f)
	f.Close()
	if err != nil {
		return err
	}
	config := map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       map[string]any{"Cmd": []string{"/bin/sh"}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(h.Sum(nil))}},
	}
	cb, err := json.Marshal(config)
	if err != nil {
		return err
	}
	cs := sha256.Sum256(cb)
	configName := hex.EncodeToString(cs[:]) + ".json"
	if err := os.WriteFile(filepath.Join(work, configName), cb, 0o644); err != nil {
		return err
	}
	manifest := []map[string]any{{"Config": configName, "RepoTags": []string{name}, "Layers": []string{"layer.tar"}}}
	mb, err := json.Marshal(manifest)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(work, "manifest.json"), mb, 0o644); err != nil {
		return err
	}
	if o, err := exec.Command("tar", "-C", work, "-cf", out, "manifest.json", configName, "layer.tar").CombinedOutput(); err != nil {
		return fmt.Errorf("tar image: %v: %s", err, o)
	}
	return nil
}

// benchRuntime runs the scenario "ctr" or "exec".
func benchRuntime(g *globals, scenario, ref string, n int) (bench.Result, error) {
	if scenario == "ctr" {
		return benchCtr(g, ref, n)
	}
	return benchExec(g, ref, n)
}
