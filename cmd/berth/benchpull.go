package main

import (
	"bufio"
	"bytes"

	"fmt"
	"io"

	"os"
	"os/exec"
	"path/filepath"

	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/bench"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/regcli"
)

// pullResult is the pull scenario's comparison and berth's peak memory.
type pullResult struct {
	bench.Result
	// PeakRSS is the largest maximum resident set of a berth pull, KiB.
	PeakRSS int64 `json:"berth_peak_rss_kib"`
}

func (p pullResult) Print(w io.Writer) {
	p.Result.Print(w)
	fmt.Fprintf(w, "  berth pull's peak RSS: %d KiB (goal <= 65536)\n", p.PeakRSS)
}

// benchPull starts a registry on 127.0.0.1 (berth-registry serve-bench:
// go-containerregistry's, its blobs on disk, holding a five-layer image of
// 108 MiB) and times `berth pull` into an empty data root against `skopeo
// copy docker://... oci:...` and, when containerd is installed, `ctr
// image pull` through a containerd of the bench's own, alternately, each
// starting from nothing every time.
func benchPull(n int) (pullResult, error) {
	skopeo, err := exec.LookPath("skopeo")
	if err != nil {
		return pullResult{}, fmt.Errorf("skopeo is not installed: %w", errdefs.ErrUnavailable)
	}
	self, err := os.Executable()
	if err != nil {
		return pullResult{}, err
	}
	helper, err := registryHelper()
	if err != nil {
		return pullResult{}, err
	}
	tmp, err := os.MkdirTemp("", "berth-bench-pull-")
	if err != nil {
		return pullResult{}, err
	}
	defer os.RemoveAll(tmp)
	if err := os.Mkdir(filepath.Join(tmp, "registry"), 0o700); err != nil {
		return pullResult{}, err
	}
	// The registry serves until its standard input ends: when this
	// function returns, or berth ends.
	srv := exec.Command(helper, regcli.ServeBench, filepath.Join(tmp, "registry"))
	stdin, err := srv.StdinPipe()
	if err != nil {
		return pullResult{}, err
	}
	var srvErr bytes.Buffer
	srv.Stderr = &srvErr
	stdout, err := srv.StdoutPipe()
	if err != nil {
		return pullResult{}, err
	}
	if err := srv.Start(); err != nil {
		return pullResult{}, err
	}
	defer srv.Wait()
	defer stdin.Close()
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	ref := strings.TrimSpace(line)
	if ref == "" {
		return pullResult{}, fmt.Errorf("the bench registry: %s", strings.TrimSpace(srvErr.String()))
	}

	root, layout := filepath.Join(tmp, "root"), filepath.Join(tmp, "oci")
	var mu sync.Mutex
	var peak int64
	berthPull := bench.Subject{
		Name: "berth pull",
		Run: func() error {
			cmd := exec.Command(self, "--root", root, "pull", "-q", ref)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				return err
			}
			// The child's own high-water mark (VmHWM), read while it runs:
			// its rusage would count the bench's memory, which the child
			// shares between fork and exec.
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					hwm, err := vmHWM(cmd.Process.Pid)
					if err != nil {
						return
					}
					mu.Lock()
					peak = max(peak, hwm)
					mu.Unlock()
					time.Sleep(5 * time.Millisecond)
				}
			}()
			err := cmd.Wait()
			<-done
			if err != nil {
				return fmt.Errorf("%v: %s", err, bytes.TrimSpace(out.Bytes()))
			}
			return nil
		},
		Label: func() (string, error) { return "", os.RemoveAll(root) },
	}
	skopeoCopy := bench.Subject{
		Name:  "skopeo copy",
		Argv:  []string{skopeo, "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false", "docker://" + ref, "oci:" + layout + ":v1"},
		Label: func() (string, error) { return "", os.RemoveAll(layout) },
	}
	ctrPull, stop, err := ctrPullSubject(tmp, ref)
	if err != nil {
		return pullResult{}, err
	}
	defer stop()
	var more []bench.Subject
	note := "berth pulls into an empty data root (download, verify, unpack); skopeo copies into an empty OCI layout (no unpacking)"
	if ctrPull != nil {
		more = append(more, *ctrPull)
		note += "; ctr pulls into an empty containerd (download, verify, unpack into overlayfs snapshots)"
	} else {
		note += "; containerd or ctr is not installed: no ctr peer"
	}
	r, err := bench.Compare("pull: a five-layer image of 108 MiB from a registry on 127.0.0.1", berthPull, skopeoCopy, n, more...)
	if err != nil {
		return pullResult{}, err
	}
	r.Pairs = [][2]string{{berthPull.Name, skopeoCopy.Name}}
	if ctrPull != nil {
		r.Pairs = append(r.Pairs, [2]string{berthPull.Name, ctrPull.Name})
	}
	r.Note = note + "; goal: berth <= 0.8 of the faster peer"
	return pullResult{Result: r, PeakRSS: peak}, nil
}

// ctrPullSubject starts a containerd of the bench's own, in a short
// directory under tmp, and returns the subject that pulls ref with ctr
// (plain HTTP) and, untimed, removes the image with all its content and
// snapshots; and what stops the daemon. It returns no subject when
// containerd or ctr is not installed.
func ctrPullSubject(tmp, ref string) (*bench.Subject, func(), error) {
	containerd, err1 := exec.LookPath("containerd")
	ctr, err2 := exec.LookPath("ctr")
	if err1 != nil || err2 != nil {
		return nil, func() {}, nil
	}
	// Not under tmp: containerd's socket paths must stay short.
	dir, err := os.MkdirTemp("", "bbp-")
	if err != nil {
		return nil, nil, err
	}
	cd, err := startContainerd(containerd, ctr, dir)
	if err != nil {
		cleanupDaemonDir(dir)
		return nil, nil, err
	}
	c := cd.ctr
	stop := func() {
		run(c("image", "rm", "--sync", ref)...)
		cd.stop()
		cleanupDaemonDir(dir)
	}
	return &bench.Subject{
		Name: "ctr image pull",
		Argv: c("image", "pull", "--plain-http", ref),
		Label: func() (string, error) {
			if out, err := exec.Command(c("image", "rm", "--sync", ref)[0], c("image", "rm", "--sync", ref)[1:]...).CombinedOutput(); err != nil {
				return "", fmt.Errorf("ctr image rm: %v: %s", err, bytes.TrimSpace(out))
			}
			return "", nil
		},
	}, stop, nil
}

// vmHWM is the peak resident set of process pid (VmHWM), in KiB; an
// error once the process is gone (or a zombie, which has no memory).
func vmHWM(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("process %d: no VmHWM", pid)
}
