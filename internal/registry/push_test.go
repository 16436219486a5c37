package registry

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/compression"
	digest "github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/errdefs"
)

// TestPushThenPull pushes a pulled image to another registry (with
// credentials), pulls it from there into another store, and pushes it
// again: every layer is then already there.
func TestPushThenPull(t *testing.T) {
	src, dst := newTestRegistry(t), newTestRegistry(t)
	dst.set(func(f *faults) { f.user, f.pass, f.token = "alice", "pw", true })
	dockerConfig(t, dst.host(), "alice", "pw")
	a := openStore(t)
	base := layerTar(t, map[string][]byte{"bin/sh": []byte("#!shell")})
	top := layerTar(t, map[string][]byte{"etc/top": randomBytes(200 << 10)})
	ref := src.push(t, "push/src:v1", testImage(t, [][]byte{base, top}, compression.GZip, false, amd64))
	res := pullOK(t, a, ref, quick())
	target := dst.host() + "/push/dst:v2"
	if _, err := a.Tag(ref, target); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	last := map[digest.Digest]PushStatus{}
	progress := func(e PushEvent) {
		mu.Lock()
		defer mu.Unlock()
		last[e.Layer] = e.Status
	}
	pr, err := Push(context.Background(), a, target, quick(), progress)
	if err != nil {
		t.Fatal(err)
	}
	if pr.Digest != res.Image.Manifest || pr.Size <= 0 {
		t.Fatalf("push result %+v, manifest %s", pr, res.Image.Manifest)
	}
	for _, l := range res.Image.Layers {
		if last[l] != Pushed {
			t.Fatalf("layer %s: %v", l, last[l])
		}
	}
	if len(last) != 2 {
		t.Fatalf("events of %d blobs, want the 2 layers", len(last))
	}
	b := openStore(t)
	again := pullOK(t, b, target, quick())
	if again.Image.ID != res.Image.ID || again.Digest != res.Image.Manifest {
		t.Fatalf("pulled back %s (manifest %s), pushed %s (%s)", again.Image.ID, again.Digest, res.Image.ID, res.Image.Manifest)
	}
	clear(last)
	if _, err := Push(context.Background(), a, target, quick(), progress); err != nil {
		t.Fatal(err)
	}
	for _, l := range res.Image.Layers {
		if last[l] != AlreadyExists {
			t.Fatalf("second push, layer %s: %v", l, last[l])
		}
	}
	// Refusals: a name the store lacks, a digest, wrong credentials.
	if _, err := Push(context.Background(), a, dst.host()+"/push/none:v1", quick(), nil); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("push of a missing image: %v", err)
	}
	if _, err := Push(context.Background(), a, target+"@"+res.Image.Manifest.String(), quick(), nil); err == nil {
		t.Fatal("push by digest succeeded")
	}
	dockerConfig(t, dst.host(), "alice", "wrong")
	if _, err := Push(context.Background(), a, target, quick(), nil); err == nil || !strings.Contains(err.Error(), "refused the credentials") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("push with a wrong password: %v", err)
	}
}

func TestLogin(t *testing.T) {
	for _, token := range []bool{false, true} {
		reg := newTestRegistry(t)
		reg.set(func(f *faults) { f.user, f.pass, f.token = "bob", "s3cret", token })
		if err := Login(context.Background(), reg.host(), "bob", "s3cret", Options{}); err != nil {
			t.Fatalf("token %v: %v", token, err)
		}
		err := Login(context.Background(), reg.host(), "bob", "wrong", Options{})
		if err == nil || !strings.Contains(err.Error(), "refused the credentials") || strings.Contains(err.Error(), "\n") {
			t.Fatalf("token %v, wrong password: %v", token, err)
		}
	}
}

// TestPushRetriesCutUploads pushes through uploads that lose their
// connection midway or get a 503: each is tried again from the start in
// a new session, and what arrives pulls back whole. A registry that cuts
// every upload is given up on, with the manifest not pushed.
func TestPushRetriesCutUploads(t *testing.T) {
	src := newTestRegistry(t)
	s := openStore(t)
	ref := src.push(t, "push/src:v1", testImage(t, [][]byte{layerTar(t, map[string][]byte{"big": randomBytes(1 << 20)})}, compression.GZip, false, amd64))
	res := pullOK(t, s, ref, quick())
	for _, tc := range []struct {
		name string
		f    faults
		want string // the error, or "" for a push that succeeds
	}{
		{"cut", faults{uploadCuts: 2, cutAfter: 100 << 10}, ""},
		{"503", faults{uploadUnavail: 2}, ""},
		{"cut-for-ever", faults{uploadCuts: 1000, cutAfter: 10}, "tries failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := newTestRegistry(t)
			target := dst.host() + "/push/dst:v1"
			if _, err := s.Tag(ref, target); err != nil {
				t.Fatal(err)
			}
			dst.set(func(f *faults) { *f = tc.f })
			retried := false
			_, err := Push(context.Background(), s, target, quick(), func(e PushEvent) {
				retried = retried || e.Status == PushRetrying
			})
			dst.set(func(f *faults) { *f = faults{} })
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("push: %v, want one line with %q", err, tc.want)
				}
				t.Logf("%v", err)
				if _, err := Pull(context.Background(), openStore(t), target, quick()); !errors.Is(err, errdefs.ErrNotFound) {
					t.Fatalf("a failed push left a manifest: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !retried {
				t.Fatal("no layer was reported retrying")
			}
			if again := pullOK(t, openStore(t), target, quick()); again.Image.ID != res.Image.ID {
				t.Fatalf("pulled back %s, pushed %s", again.Image.ID, res.Image.ID)
			}
		})
	}
}
