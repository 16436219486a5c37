package test

import (
	"bufio"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"

	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/testutil"
)

// localRegistry starts go-containerregistry's registry on 127.0.0.1 for
// the test and returns its host:port.
func localRegistry(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// skopeoPush copies the image tagged tag in an OCI layout to ref in a
// registry, with skopeo (another tool than berth).
func skopeoPush(t *testing.T, layout, tag, ref string) {
	t.Helper()
	testutil.NeedTool(t, "skopeo")
	out, err := exec.Command("skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false",
		"oci:"+layout+":"+tag, "docker://"+ref).CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo copy to %s: %v\n%s", ref, err, out)
	}
}

// TestPullAndRun pushes the demo image with skopeo to a local registry,
// pulls it with berth and runs it, as a container and as a VM.
func TestPullAndRun(t *testing.T) {
	host := localRegistry(t)
	layout := ociLayout(t, testutilRootfs(t), "v1")
	ref := host + "/e2e/busybox:v1"
	skopeoPush(t, layout, "v1", ref)

	r := berth(t, "pull", ref)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || lines[0] != "v1: Pulling from e2e/busybox" || !strings.Contains(r.stdout, ": Pull complete\n") ||
		!strings.Contains(r.stdout, "\nDigest: sha256:") || !strings.Contains(r.stdout, "\nStatus: Downloaded newer image for "+ref+"\n") ||
		lines[len(lines)-1] != ref {
		t.Fatalf("berth pull: exit %d\nstdout:\n%s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if out := must(t, "pull", ref); !strings.Contains(out, "Status: Image is up to date for "+ref+"\n") || strings.Contains(out, "Pull complete") {
		t.Fatalf("second pull:\n%s", out)
	}
	if out := must(t, "pull", "-q", ref); out != ref+"\n" {
		t.Fatalf("pull -q: %q", out)
	}
	if out := must(t, "run", "--rm", ref, "echo", "pulled"); out != "pulled\n" {
		t.Fatalf("run of the pulled image: %q", out)
	}

	// Tagging, and run pulling what the store lacks (its default
	// --pull missing), and refusing to with --pull never.
	other := host + "/e2e/other:v2"
	must(t, "image", "tag", ref, other)
	if out := must(t, "image", "ls"); !strings.Contains(out, other) || !strings.Contains(out, ref) {
		t.Fatalf("image ls after tag:\n%s", out)
	}
	lazy := host + "/e2e/lazy:v3"
	skopeoPush(t, layout, "v1", lazy)
	if r := berth(t, "run", "--rm", "--pull", "never", lazy, "true"); r.code != 125 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("run --pull never of a missing image: exit %d, stderr %s", r.code, r.stderr)
	}
	r = berth(t, "run", "--rm", lazy, "echo", "lazy")
	if r.code != 0 || r.stdout != "lazy\n" || !strings.Contains(r.stderr, "Unable to find image '"+lazy+"' locally") {
		t.Fatalf("run of a missing image: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}

	// Failures: one line naming the reference, exit 125, the store as it was.
	before := must(t, "image", "ls", "--format", "json")
	for _, bad := range []string{host + "/e2e/nothing:v1", host + "/e2e/busybox:nope", "127.0.0.1:1/e2e/busybox:v1"} {
		r := berth(t, "pull", bad)
		t.Logf("pull %s: %s", bad, strings.TrimSpace(r.stderr))
		if r.code != 125 || !strings.HasPrefix(r.stderr, "berth pull: "+bad+": ") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("pull %s: exit %d, stderr %q", bad, r.code, r.stderr)
		}
	}
	if after := must(t, "image", "ls", "--format", "json"); after != before {
		t.Fatalf("failed pulls changed the store:\n%s\n%s", before, after)
	}

	t.Run("vm", func(t *testing.T) {
		needVM(t)
		if out := must(t, "run", "--rm", "--vm", ref, "echo", "pulled in a vm"); out != "pulled in a vm\n" {
			t.Fatalf("run --vm of the pulled image: %q", out)
		}
	})
}

// slowBlobs passes requests to h, writing blob bodies in small pieces
// with pauses, so a pull can be killed in the middle of its downloads.
func slowBlobs(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			w = &slowWriter{ResponseWriter: w}
		}
		h.ServeHTTP(w, r)
	})
}

type slowWriter struct{ http.ResponseWriter }

func (s *slowWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), 32<<10)
		m, err := s.ResponseWriter.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		p = p[k:]
		time.Sleep(10 * time.Millisecond)
	}
	return n, nil
}

// slowImage pushes the demo image as repo (NAME:TAG) to a registry on
// 127.0.0.1 that serves blobs slowly (slowBlobs), for the test, and
// returns its reference.
func slowImage(t *testing.T, repo string) string {
	t.Helper()
	srv := httptest.NewServer(slowBlobs(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))))
	t.Cleanup(srv.Close)
	ref := strings.TrimPrefix(srv.URL, "http://") + "/" + repo
	skopeoPush(t, ociLayout(t, testutilRootfs(t), "v1"), "v1", ref)
	return ref
}

// TestPullKilled kills berth pull with SIGKILL twenty times, at moments
// spread over a whole pull (its downloads, unpacking and commit), in a data
// root of its own: each time `image ls` shows no image unless the pull
// had completed, and the store's GC keeps exactly what the images listed
// need (no blob, snapshot, marker or stage of the killed pull); the pull
// after them all completes and its image runs.
func TestPullKilled(t *testing.T) {
	ref := slowImage(t, "e2e/killed:v1")
	root := t.TempDir()
	berthAt := func(args ...string) *exec.Cmd {
		return exec.Command(berthBin, append([]string{"--root", root}, args...)...)
	}
	mustAt := func(args ...string) string {
		t.Helper()
		out, err := berthAt(args...).CombinedOutput()
		if err != nil {
			t.Fatalf("berth %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// One whole pull first: the kills spread over its length.
	start := time.Now()
	mustAt("pull", "-q", ref)
	whole := time.Since(start)
	mustAt("image", "rm", ref)
	t.Logf("a whole pull took %v", whole)
	store, err := image.Open(filepath.Join(root, "image"))
	if err != nil {
		t.Fatal(err)
	}
	completed := 0
	for i := range 20 {
		cmd := berthAt("pull", "-q", ref)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rand.Int64N(int64(whole) * 11 / 10)))
		cmd.Process.Kill()
		cmd.Wait()
		listed := strings.Contains(mustAt("image", "ls"), strings.TrimSuffix(ref, ":v1"))
		if err := store.GC(); err != nil {
			t.Fatal(err)
		}
		imgs, err := store.List()
		if err != nil {
			t.Fatal(err)
		}
		if listed != (len(imgs) == 1) || len(imgs) > 1 {
			t.Fatalf("kill %d: image ls lists the image: %v; the store holds %d images", i, listed, len(imgs))
		}
		gcKeepsOnly(t, root, imgs)
		if listed {
			// A pull that finished before the kill.
			completed++
			mustAt("image", "rm", ref)
			gcKeepsOnly(t, root, nil)
		}
	}
	t.Logf("%d of 20 kills came after the pull completed", completed)
	mustAt("pull", ref)
	if out := mustAt("run", "--rm", ref, "echo", "survived"); out != "survived\n" {
		t.Fatalf("run: %q", out)
	}
}

// gcKeepsOnly checks that the image store under root holds what imgs
// need and nothing else: their blobs, their snapshots (with or without
// the marker of an unsynced one), no stage and no blob lock.
func gcKeepsOnly(t *testing.T, root string, imgs []image.Image) {
	t.Helper()
	want := map[string]bool{}
	for _, img := range imgs {
		want["blobs/sha256/"+img.Manifest.Encoded()] = true
		want["blobs/sha256/"+img.ID.Encoded()] = true
		for _, l := range img.Layers {
			want["blobs/sha256/"+l.Encoded()] = true
		}
		for _, d := range img.DiffIDs {
			want["snapshots/"+d.Encoded()] = true
		}
	}
	got := map[string]bool{}
	for _, dir := range []string{"blobs/sha256", "snapshots", "unsynced", "tmp", "locks"} {
		ents, _ := os.ReadDir(filepath.Join(root, "image", dir))
		for _, e := range ents {
			got[dir+"/"+e.Name()] = true
		}
	}
	for p := range got {
		if hex, ok := strings.CutPrefix(p, "unsynced/"); ok && want["snapshots/"+hex] {
			continue
		}
		if !want[p] {
			t.Errorf("the store keeps %s, which no image listed needs", p)
		}
	}
	for p := range want {
		if !got[p] {
			t.Errorf("the store lacks %s, which a listed image needs", p)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// TestRunPullCancelled sends SIGTERM to berth run while berth-registry
// pulls the image run lacks: berth exits 143 at once, as for any start
// cancelled before its record, and the helper stops too, leaving no image
// and nothing staged in the store.
func TestRunPullCancelled(t *testing.T) {
	ref := slowImage(t, "e2e/cancelled:v1")
	cmd := exec.Command(berthBin, "--root", berthRoot, "run", "--rm", ref, "true")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(stderr).ReadString('\n')
	if !strings.Contains(line, "Unable to find image") {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("berth run's first line: %q", line)
	}
	helper := helperPID(t, ref)
	cmd.Process.Signal(syscall.SIGTERM)
	go io.Copy(io.Discard, stderr)
	if err := cmd.Wait(); cmd.ProcessState.ExitCode() != 143 {
		t.Fatalf("berth run after SIGTERM: %v", err)
	}
	for deadline := time.Now().Add(10 * time.Second); helper != 0 && syscall.Kill(helper, 0) == nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			syscall.Kill(helper, syscall.SIGKILL)
			t.Fatalf("berth-registry %d still runs 10 s after berth run ended", helper)
		}
	}
	if out := must(t, "image", "ls"); strings.Contains(out, ref) {
		t.Fatalf("the cancelled pull stored the image:\n%s", out)
	}
	if ents, err := os.ReadDir(filepath.Join(berthRoot, "image", "tmp")); err != nil || len(ents) != 0 {
		t.Fatalf("staging after the cancelled pull: %v %v", ents, err)
	}
}

// helperPID is the pid of the berth-registry that pulls ref, 0 if there
// is none (the pull ended already).
func helperPID(t *testing.T, ref string) int {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(data), "\x00")
		if args[0] == "berth-registry" && slices.Contains(args, "run-pull") && slices.Contains(args, ref) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			return pid
		}
	}
	t.Logf("no berth-registry pulling %s", ref)
	return 0
}
