package registry

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/image"
)

var amd64 = v1.Platform{OS: "linux", Architecture: "amd64"}

func openStore(t *testing.T) *image.Store {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the store unpacks layers with their owners")
	}
	s, err := image.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// quick are options for tests: short waits between tries.
func quick() Options {
	return Options{Backoff: time.Millisecond, Stall: 200 * time.Millisecond, Platform: HostPlatform()}
}

// storeState is what a failed pull must not change: the files of the
// store but its locks, and what is left in its staging area.
func storeState(t *testing.T, s *image.Store) []string {
	t.Helper()
	var files []string
	filepath.Walk(s.Root(), func(p string, fi os.FileInfo, err error) error {
		rel, _ := filepath.Rel(s.Root(), p)
		if err != nil || rel == "lock" || strings.HasPrefix(rel, "locks") || strings.HasPrefix(rel, "leases") {
			return nil
		}
		files = append(files, rel)
		return nil
	})
	slices.Sort(files)
	return files
}

// sameStore fails the test when the store is not as storeState saw it.
func sameStore(t *testing.T, s *image.Store, before []string) {
	t.Helper()
	if after := storeState(t, s); !slices.Equal(before, after) {
		t.Fatalf("store changed:\n%q\n%q", before, after)
	}
}

func pullOK(t *testing.T, s *image.Store, ref string, o Options) *Result {
	t.Helper()
	res, err := Pull(context.Background(), s, ref, o)
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	if _, err := s.Layers(context.Background(), res.Image); err != nil {
		t.Fatalf("layers of the pulled image: %v", err)
	}
	return res
}

func TestPullFormats(t *testing.T) {
	reg := newTestRegistry(t)
	s := openStore(t)
	base := layerTar(t, map[string][]byte{"bin/sh": []byte("#!shell"), "etc/base": []byte("base")})
	top := layerTar(t, map[string][]byte{"etc/top": randomBytes(300 << 10)})
	for _, tc := range []struct {
		name string
		comp compression.Compression
		oci  bool
	}{
		{"docker-gzip", compression.GZip, false},
		{"oci-gzip", compression.GZip, true},
		{"oci-zstd", compression.ZStd, true},
		{"oci-uncompressed", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := reg.push(t, "formats/"+tc.name+":v1", testImage(t, [][]byte{base, top}, tc.comp, tc.oci, amd64))
			res := pullOK(t, s, ref, quick())
			if !res.Fresh || !slices.Contains(res.Image.Names, reg.host()+"/formats/"+tc.name+":v1") {
				t.Fatalf("pull: fresh %v, names %q", res.Fresh, res.Image.Names)
			}
			gets := reg.blobGets.Load()
			again := pullOK(t, s, ref, quick())
			if again.Fresh || again.Image.ID != res.Image.ID || reg.blobGets.Load() != gets {
				t.Fatalf("second pull: fresh %v, id %s (was %s), %d blob downloads", again.Fresh, again.Image.ID, res.Image.ID, reg.blobGets.Load()-gets)
			}
		})
	}
}

func TestPullSharedLayerAlreadyExists(t *testing.T) {
	reg := newTestRegistry(t)
	s := openStore(t)
	base := layerTar(t, map[string][]byte{"bin/sh": []byte("#!shell")})
	one := reg.push(t, "shared/one:v1", testImage(t, [][]byte{base}, compression.GZip, true, amd64))
	two := reg.push(t, "shared/two:v1", testImage(t, [][]byte{base, layerTar(t, map[string][]byte{"x": []byte("x")})}, compression.GZip, true, amd64))
	pullOK(t, s, one, quick())
	var mu sync.Mutex
	seen := map[digest.Digest]Status{}
	o := quick()
	o.Progress = func(e Event) {
		mu.Lock()
		defer mu.Unlock()
		if seen[e.Layer] != Exists {
			seen[e.Layer] = e.Status
		}
	}
	res := pullOK(t, s, two, o)
	if seen[res.Image.Layers[0]] != Exists || seen[res.Image.Layers[1]] != Done {
		t.Fatalf("statuses: %v", seen)
	}
}

func TestPullPlatforms(t *testing.T) {
	reg := newTestRegistry(t)
	s := openStore(t)
	l := layerTar(t, map[string][]byte{"bin/sh": []byte("#!shell")})
	ref := reg.pushIndex(t, "multi:v1", map[string]v1.Image{
		"linux/amd64":    testImage(t, [][]byte{l}, compression.GZip, true, amd64),
		"linux/arm64/v8": testImage(t, [][]byte{l}, compression.GZip, true, v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}),
	})
	for _, tc := range []struct{ platform, arch string }{{"linux/amd64", "amd64"}, {"linux/arm64", "arm64"}, {"linux/arm64/v8", "arm64"}} {
		p, err := ParsePlatform(tc.platform)
		if err != nil {
			t.Fatal(err)
		}
		o := quick()
		o.Platform = p
		res := pullOK(t, s, ref, o)
		if res.Image.Config.Architecture != tc.arch || res.Digest == res.Image.Manifest {
			t.Fatalf("--platform %s: got %s, index digest %s, manifest %s", tc.platform, res.Image.Config.Architecture, res.Digest, res.Image.Manifest)
		}
	}
	before := storeState(t, s)
	o := quick()
	o.Platform = ocispecPlatform("linux", "s390x")
	_, err := Pull(context.Background(), s, ref, o)
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "no linux/s390x image") || !strings.Contains(err.Error(), ref) {
		t.Fatalf("pull of a platform the index lacks: %v", err)
	}
	sameStore(t, s, before)
}

func TestPullByDigest(t *testing.T) {
	reg := newTestRegistry(t)
	s := openStore(t)
	ref := reg.push(t, "pinned:v1", testImage(t, [][]byte{layerTar(t, map[string][]byte{"bin/sh": nil})}, compression.GZip, true, amd64))
	tagged := pullOK(t, s, ref, quick())
	if err := s.Remove(tagged.Image.ID.String()); err != nil {
		t.Fatal(err)
	}
	byDigest := reg.host() + "/pinned@" + tagged.Digest.String()
	res := pullOK(t, s, byDigest, quick())
	if len(res.Image.Names) != 0 || res.Image.ID != tagged.Image.ID {
		t.Fatalf("pull by digest: names %q id %s", res.Image.Names, res.Image.ID)
	}
	if img, err := s.Resolve(res.Ref.Pinned(res.Image.Manifest)); err != nil || img.ID != res.Image.ID {
		t.Fatalf("resolve %s: %v", res.Ref.Pinned(res.Image.Manifest), err)
	}
	wrong := reg.host() + "/pinned@sha256:" + strings.Repeat("1", 64)
	if _, err := Pull(context.Background(), s, wrong, quick()); !errors.Is(err, errdefs.ErrNotFound) && !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("pull of a digest the registry lacks: %v", err)
	}
}

func TestPullResumes(t *testing.T) {
	for _, tc := range []struct {
		name       string
		f          faults
		wantRanges bool
	}{
		{"range", faults{cuts: 2, cutAfter: 100 << 10}, true},
		{"no-range-support", faults{cuts: 2, cutAfter: 100 << 10, noRange: true}, true},
		{"wrong-content-range", faults{cuts: 1, cutAfter: 100 << 10, badRange: true}, true},
		{"503-then-ok", faults{unavail: 2}, false},
		{"stalled", faults{stalls: 2, cutAfter: 100 << 10}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := newTestRegistry(t)
			s := openStore(t)
			ref := reg.push(t, "cut:v1", testImage(t, [][]byte{layerTar(t, map[string][]byte{"big": randomBytes(1 << 20)})}, compression.GZip, true, amd64))
			reg.set(func(f *faults) { *f = tc.f })
			pullOK(t, s, ref, quick())
			if got := reg.ranges.Load() > 0; got != tc.wantRanges {
				t.Fatalf("range requests: %d", reg.ranges.Load())
			}
		})
	}
}

func TestPullAuth(t *testing.T) {
	for _, token := range []bool{true, false} {
		t.Run(map[bool]string{true: "bearer", false: "basic"}[token], func(t *testing.T) {
			reg := newTestRegistry(t)
			s := openStore(t)
			ref := reg.push(t, "private:v1", testImage(t, [][]byte{layerTar(t, map[string][]byte{"bin/sh": nil})}, compression.GZip, true, amd64))
			reg.set(func(f *faults) { f.user, f.pass, f.token = "alice", "secret", token })
			dockerConfig(t, reg.host(), "alice", "wrong")
			before := storeState(t, s)
			_, err := Pull(context.Background(), s, ref, quick())
			if err == nil || !strings.Contains(err.Error(), ref) {
				t.Fatalf("pull with a wrong password: %v", err)
			}
			t.Logf("wrong password: %v", err)
			sameStore(t, s, before)
			dockerConfig(t, reg.host(), "alice", "secret")
			pullOK(t, s, ref, quick())
		})
	}
}

// TestPullFailures pulls through each fault that no retry mends: the
// pull fails naming the reference and the store is as it was.
func TestPullFailures(t *testing.T) {
	reg := newTestRegistry(t)
	s := openStore(t)
	ref := reg.push(t, "bad:v1", testImage(t, [][]byte{layerTar(t, map[string][]byte{"big": randomBytes(256 << 10)})}, compression.GZip, true, amd64))
	hostile := reg.push(t, "hostile:v1", testImage(t, [][]byte{layerTar(t, map[string][]byte{"../escape": []byte("x")})}, compression.GZip, true, amd64))
	for _, tc := range []struct {
		name, ref string
		f         faults
		want      string
	}{
		{"corrupt-blob", ref, faults{corrupt: true}, "content has digest"},
		{"endless-blob", ref, faults{endless: true}, "longer than"},
		{"cut-for-ever", ref, faults{cuts: 1000, cutAfter: 10}, "tries failed"},
		{"always-busy", ref, faults{unavail: 1000}, "tries failed"},
		{"lying-manifest-digest", ref, faults{lyingDigest: true}, "registry says digest"},
		{"huge-manifest", ref, faults{hugeManifest: true}, "larger than"},
		{"unknown-tag", reg.host() + "/bad:nope", faults{}, "not found"},
		{"unknown-repository", reg.host() + "/nothing:v1", faults{}, "not found"},
		{"hostile-layer", hostile, faults{}, "escape"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := storeState(t, s)
			reg.set(func(f *faults) { *f = tc.f })
			_, err := Pull(context.Background(), s, tc.ref, quick())
			reg.set(func(f *faults) { *f = faults{} })
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), tc.ref+": ") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("got %v, want one line naming %s and %q", err, tc.ref, tc.want)
			}
			t.Logf("%v", err)
			sameStore(t, s, before)
		})
	}
}

func TestConcurrentPullsFetchEachBlobOnce(t *testing.T) {
	reg := newTestRegistry(t)
	s := openStore(t)
	ref := reg.push(t, "twice:v1", testImage(t, [][]byte{
		layerTar(t, map[string][]byte{"a": randomBytes(512 << 10)}),
		layerTar(t, map[string][]byte{"b": randomBytes(512 << 10)}),
	}, compression.GZip, true, amd64))
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = Pull(context.Background(), s, ref, quick())
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if n := reg.blobGets.Load(); n != 3 { // config and two layers
		t.Fatalf("%d blob downloads for 3 blobs", n)
	}
}

func TestParseReference(t *testing.T) {
	for in, want := range map[string][2]string{
		"busybox":                      {"busybox:latest", "docker.io/library/busybox:latest"},
		"library/busybox:1.36":         {"busybox:1.36", "docker.io/library/busybox:1.36"},
		"docker.io/user/app":           {"user/app:latest", "docker.io/user/app:latest"},
		"localhost:5000/app:v1":        {"localhost:5000/app:v1", "localhost:5000/app:v1"},
		"ghcr.io/org/app/sub:tag":      {"ghcr.io/org/app/sub:tag", "ghcr.io/org/app/sub:tag"},
		"busybox@sha256:" + hex64('a'): {"", "docker.io/library/busybox@sha256:" + hex64('a')},
	} {
		r, err := ParseReference(in)
		if err != nil || r.Name != want[0] || r.String() != want[1] {
			t.Errorf("ParseReference(%q) = %q, %q, %v; want %q", in, r.Name, r.String(), err, want)
		}
	}
	for _, bad := range []string{"", "UPPER/case", "a@sha256:short", "a:b:c", "-x"} {
		if _, err := ParseReference(bad); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("ParseReference(%q): %v, want ErrInvalid", bad, err)
		}
	}
	for _, bad := range []string{"linux", "/amd64", "linux/", "a/b/c/d"} {
		if _, err := ParsePlatform(bad); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("ParsePlatform(%q): %v", bad, err)
		}
	}
}

func hex64(c byte) string { return strings.Repeat(string(c), 64) }

func ocispecPlatform(os, arch string) ocispec.Platform {
	return ocispec.Platform{OS: os, Architecture: arch}
}
