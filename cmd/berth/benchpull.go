package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/internal/bench"
	"github.com/berth-dev/berth/internal/errdefs"
)

// benchPullLayers are the sizes of the bench image's layers: 108 MiB in
// five layers, the largest first as in a base image.
var benchPullLayers = []int64{48 << 20, 32 << 20, 16 << 20, 8 << 20, 4 << 20}

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

// benchPull starts a registry on 127.0.0.1 (go-containerregistry's, its
// blobs on disk), pushes a five-layer image of 108 MiB (gzip) to it, and times
// `berth pull` into an empty data root against `skopeo copy docker://...
// oci:...`, alternately, each starting from nothing every time.
func benchPull(n int) (pullResult, error) {
	skopeo, err := exec.LookPath("skopeo")
	if err != nil {
		return pullResult{}, fmt.Errorf("skopeo is not installed: %w", errdefs.ErrUnavailable)
	}
	self, err := os.Executable()
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
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return pullResult{}, err
	}
	srv := &http.Server{Handler: ggcrregistry.New(
		ggcrregistry.Logger(log.New(io.Discard, "", 0)),
		ggcrregistry.WithBlobHandler(ggcrregistry.NewDiskBlobHandler(filepath.Join(tmp, "registry"))),
	)}
	go srv.Serve(l)
	defer srv.Close()
	ref := l.Addr().String() + "/bench/pull:v1"
	if err := pushBenchImage(ref); err != nil {
		return pullResult{}, fmt.Errorf("push the bench image: %w", err)
	}
	debug.FreeOSMemory() // the layers made for the push are garbage now

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
	r, err := bench.Compare("pull: a five-layer image of 108 MiB from a registry on 127.0.0.1", berthPull, skopeoCopy, n)
	if err != nil {
		return pullResult{}, err
	}
	r.Note = "berth pulls into an empty data root (download, verify, unpack); skopeo copies into an empty OCI layout (no unpacking); goal: ratio <= 0.8"
	return pullResult{Result: r, PeakRSS: peak}, nil
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

// pushBenchImage pushes an image of random layers (one file each, sizes
// benchPullLayers) to ref.
func pushBenchImage(ref string) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	var adds []mutate.Addendum
	for _, size := range benchPullLayers {
		layer, err := random.Layer(size, types.OCILayer)
		if err != nil {
			return err
		}
		adds = append(adds, mutate.Addendum{Layer: layer, MediaType: types.OCILayer})
	}
	img, err := mutate.Append(mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1), adds...)
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Created = "linux", runtime.GOARCH, v1.Time{Time: time.Now()}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err = remote.Write(tag, img, remote.WithContext(ctx))
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("the local registry took more than 5 minutes")
	}
	return err
}
