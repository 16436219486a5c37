package registry

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// faults is what the test registry does wrong, on blob downloads unless
// said otherwise.
type faults struct {
	// cuts is how many blob bodies are cut after cutAfter bytes.
	cuts     int
	cutAfter int64
	noRange  bool // answer a range request with the whole blob (200)
	badRange bool // answer it with a 206 of the whole blob
	unavail  int  // how many blob requests get a 503 first
	corrupt  bool // flip a byte of every blob
	endless  bool // blob bodies never end
	// stalls is how many blob bodies stop for a second after cutAfter
	// bytes (and then go on).
	stalls int
	// uploadCuts is how many blob uploads (PUTs) lose their connection
	// after cutAfter bytes; uploadUnavail how many get a 503.
	uploadCuts, uploadUnavail int
	// manifest faults: a Docker-Content-Digest that lies, a body past
	// every bound.
	lyingDigest, hugeManifest bool
	// user and pass, when set, are required through a bearer token
	// (token) or basic auth.
	user, pass string
	token      bool
}

// testRegistry is go-containerregistry's in-process registry behind a
// handler that injects faults, on an httptest server on 127.0.0.1.
type testRegistry struct {
	mu       sync.Mutex
	f        faults
	srv      *httptest.Server
	inner    http.Handler
	blobGets atomic.Int64 // blob GETs that reached the registry
	ranges   atomic.Int64 // of which with a Range header
}

func newTestRegistry(t *testing.T) *testRegistry {
	r := &testRegistry{inner: ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

// host is "127.0.0.1:PORT".
func (r *testRegistry) host() string { return strings.TrimPrefix(r.srv.URL, "http://") }

func (r *testRegistry) set(f func(*faults)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(&r.f)
}

func (r *testRegistry) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	f := r.f
	r.mu.Unlock()
	if req.URL.Path == "/token" {
		u, p, ok := req.BasicAuth()
		if !ok || u != f.user || p != f.pass {
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`, http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, `{"token":"good-token"}`)
		return
	}
	if f.user != "" && !r.authorized(w, req, &f) {
		return
	}
	if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/manifests/") && (f.lyingDigest || f.hugeManifest) {
		rec := httptest.NewRecorder()
		r.inner.ServeHTTP(rec, req)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		if f.lyingDigest {
			w.Header().Set("Docker-Content-Digest", "sha256:"+strings.Repeat("0", 64))
		}
		w.Header().Del("Content-Length")
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
		if f.hugeManifest {
			w.Write(bytes.Repeat([]byte(" "), maxManifest+10))
		}
		return
	}
	if req.Method == http.MethodPut && strings.Contains(req.URL.Path, "/blobs/uploads/") && f.uploadUnavail > 0 {
		r.set(func(f *faults) { f.uploadUnavail-- })
		io.Copy(io.Discard, req.Body)
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	if req.Method == http.MethodPut && strings.Contains(req.URL.Path, "/blobs/uploads/") && f.uploadCuts > 0 && req.ContentLength > f.cutAfter {
		r.set(func(f *faults) { f.uploadCuts-- })
		io.CopyN(io.Discard, req.Body, f.cutAfter)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	if req.Method != http.MethodGet || !strings.Contains(req.URL.Path, "/blobs/") {
		r.inner.ServeHTTP(w, req)
		return
	}
	r.blobGets.Add(1)
	if f.unavail > 0 {
		r.set(func(f *faults) { f.unavail-- })
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	plain := req.Clone(req.Context())
	plain.Header.Del("Range")
	rec := httptest.NewRecorder()
	r.inner.ServeHTTP(rec, plain)
	if rec.Code != http.StatusOK {
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
		return
	}
	body := rec.Body.Bytes()
	if f.corrupt {
		body = bytes.Clone(body)
		body[len(body)/2] ^= 0xff
	}
	if f.endless {
		w.WriteHeader(http.StatusOK)
		for range 1 << 10 { // 64 MiB at most
			if _, err := w.Write(make([]byte, 64<<10)); err != nil {
				return
			}
		}
		return
	}
	start := int64(0)
	if rg := req.Header.Get("Range"); rg != "" {
		r.ranges.Add(1)
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"), 10, 64)
		if err != nil || n >= int64(len(body)) {
			http.Error(w, "bad range", http.StatusRequestedRangeNotSatisfiable)
			return
		}
		switch {
		case f.noRange:
		case f.badRange:
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", len(body)-1, len(body)))
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(body)
			return
		default:
			start = n
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", n, len(body)-1, len(body)))
		}
	}
	part := body[start:]
	w.Header().Set("Content-Length", strconv.Itoa(len(part)))
	if start > 0 {
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	if f.stalls > 0 && f.cutAfter < int64(len(part)) {
		r.set(func(f *faults) { f.stalls-- })
		w.Write(part[:f.cutAfter])
		w.(http.Flusher).Flush()
		select {
		case <-time.After(time.Second):
		case <-req.Context().Done():
			return
		}
		w.Write(part[f.cutAfter:])
		return
	}
	if f.cuts > 0 && f.cutAfter < int64(len(part)) {
		r.set(func(f *faults) { f.cuts-- })
		w.Write(part[:f.cutAfter])
		// Returning short of Content-Length makes the server drop the
		// connection: the client sees the body end early.
		return
	}
	w.Write(part)
}

// authorized checks a request's credentials and challenges it when they
// are missing or wrong.
func (r *testRegistry) authorized(w http.ResponseWriter, req *http.Request, f *faults) bool {
	if f.token {
		if req.Header.Get("Authorization") == "Bearer good-token" {
			return true
		}
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="test"`, r.srv.URL))
	} else {
		if u, p, ok := req.BasicAuth(); ok && u == f.user && p == f.pass {
			return true
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
	return false
}

// dockerConfig points DOCKER_CONFIG at a config.json with user and pass
// for host.
func dockerConfig(t *testing.T, host, user, pass string) {
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, auth)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
}

// layerTar is a tar holding files name -> content, and /bin/sh so that
// it looks like a root file system.
func layerTar(t *testing.T, files map[string][]byte) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for n, c := range files {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(c)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(c)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// testImage makes an image of the given layers, compressed with comp
// ("" for uncompressed), OCI media types when oci, for platform p.
func testImage(t *testing.T, layers [][]byte, comp compression.Compression, oci bool, p v1.Platform) v1.Image {
	img := empty.Image
	if oci {
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	}
	for _, data := range layers {
		data := data
		var l v1.Layer
		var err error
		if comp == "" {
			mt := types.DockerUncompressedLayer
			if oci {
				mt = types.OCIUncompressedLayer
			}
			l = static.NewLayer(data, mt)
		} else {
			opts := []tarball.LayerOption{tarball.WithCompression(comp)}
			if oci && comp == compression.ZStd {
				opts = append(opts, tarball.WithMediaType(types.OCILayerZStd))
			} else if oci {
				opts = append(opts, tarball.WithMediaType(types.OCILayer))
			}
			l, err = tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }, opts...)
			if err != nil {
				t.Fatal(err)
			}
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Variant = p.OS, p.Architecture, p.Variant
	cfg.Config.Cmd = []string{"/bin/sh"}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// push writes img to the registry as ref (repository:tag) and returns
// the full reference.
func (r *testRegistry) push(t *testing.T, repoTag string, img v1.Image) string {
	ref, err := name.ParseReference(r.host() + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	defer r.withoutFaults()()
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	return ref.String()
}

// withoutFaults turns the faults off and returns what turns them on again.
func (r *testRegistry) withoutFaults() (restore func()) {
	var saved faults
	r.set(func(f *faults) { saved, *f = *f, faults{} })
	return func() { r.set(func(f *faults) { *f = saved }) }
}

// pushIndex writes an index of imgs (one per platform) as repoTag.
func (r *testRegistry) pushIndex(t *testing.T, repoTag string, imgs map[string]v1.Image) string {
	ref, err := name.ParseReference(r.host() + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	var idx v1.ImageIndex = empty.Index
	for plat, img := range imgs {
		p, err := v1.ParsePlatform(plat)
		if err != nil {
			t.Fatal(err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: p}})
	}
	defer r.withoutFaults()()
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	return ref.String()
}

// randomBytes is n bytes that do not compress.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
