package registry

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/image"
)

// Options tune a pull. The zero value pulls the host's platform, three
// layers at a time, with the user's Docker credentials.
type Options struct {
	// Platform is the platform taken from a multi-platform index; the
	// zero value is the host's (HostPlatform).
	Platform ocispec.Platform
	// Jobs is how many layers download at once (default 3, as Docker).
	Jobs int
	// Insecure lists registries (host or host:port) reached over plain
	// HTTP besides the loopback ones.
	Insecure []string
	// Keychain finds credentials; default authn.DefaultKeychain
	// (DOCKER_CONFIG or ~/.docker/config.json, credential helpers).
	Keychain authn.Keychain
	// Transport is the HTTP transport under authentication; default a
	// copy of http.DefaultTransport (proxies from the environment).
	Transport http.RoundTripper
	// Attempts bounds the tries of a blob that make no progress (default
	// 5), of a download or an upload; Backoff is the first wait between
	// them (default 200ms).
	Attempts int
	Backoff  time.Duration
	// Stall is how long a blob request may receive nothing before it is
	// dropped and tried again (default 30s).
	Stall time.Duration
	// Progress, when set, is told how each layer's download goes. It is
	// called from several goroutines at once.
	Progress func(Event)
}

// attempts bounds the tries of a blob (see Options.Attempts).
func (o *Options) attempts() int {
	if o.Attempts <= 0 {
		return 5
	}
	return o.Attempts
}

// backoff is the first wait between two tries of a blob.
func (o *Options) backoff() time.Duration {
	if o.Backoff <= 0 {
		return 200 * time.Millisecond
	}
	return o.Backoff
}

func (o *Options) keychain() authn.Keychain {
	if o.Keychain == nil {
		return authn.DefaultKeychain
	}
	return o.Keychain
}

// Status is where a layer's download stands.
type Status int

const (
	Waiting     Status = iota // queued, or waiting for another pull of it
	Exists                    // the store has it already
	Downloading               // Current of Total bytes are here
	Retrying                  // a try failed; another follows
	Verifying                 // all bytes are here; checking the digest
	Done                      // verified
)

func (s Status) String() string {
	return [...]string{"Waiting", "Already exists", "Downloading", "Retrying", "Verifying Checksum", "Download complete"}[s]
}

// Event is news of one layer.
type Event struct {
	Layer          digest.Digest
	Status         Status
	Current, Total int64
}

// Result is what a pull did.
type Result struct {
	Ref Reference
	// Digest is the digest the reference resolved to: the index's for a
	// multi-platform image, else the manifest's.
	Digest digest.Digest
	Image  image.Image
	// Fresh is false when the store already had the image under this
	// reference (Docker's "Image is up to date").
	Fresh bool
}

// Pull pulls ref from its registry into the store s. On failure the
// store is as it was; the error names ref and what was wrong.
func Pull(ctx context.Context, s *image.Store, ref string, o Options) (*Result, error) {
	r, err := ParseReference(ref)
	if err != nil {
		return nil, err
	}
	res, err := pull(ctx, s, r, o)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	return res, nil
}

func pull(ctx context.Context, s *image.Store, r Reference, o Options) (*Result, error) {
	if o.Platform.OS == "" {
		o.Platform = HostPlatform()
	}
	c, err := newClient(ctx, r, &o)
	if err != nil {
		return nil, err
	}
	top, desc, data, m, err := c.resolve(ctx, r, o.Platform)
	if err != nil {
		return nil, err
	}
	res := &Result{Ref: r, Digest: top}
	if img, ok := s.HasManifest(desc.Digest, r.Name); ok {
		res.Image = img
		return res, nil
	}
	in, err := s.NewIngest()
	if err != nil {
		return nil, err
	}
	defer in.Close()
	// Progress speaks of layers, as Docker's does, not of the config.
	report := func(e Event) {
		if o.Progress != nil && e.Layer != m.Config.Digest {
			o.Progress(e)
		}
	}
	blobs := append([]ocispec.Descriptor{m.Config}, m.Layers...)
	var ds []digest.Digest
	for _, b := range blobs {
		ds = append(ds, b.Digest)
		report(Event{Layer: b.Digest, Status: Waiting, Total: b.Size})
	}
	if err := in.LockBlobs(ctx, ds); err != nil {
		return nil, err
	}
	if img, ok := s.HasManifest(desc.Digest, r.Name); ok {
		// Another pull of it finished while this one waited.
		res.Image = img
		return res, nil
	}
	if err := os.WriteFile(in.BlobPath(desc.Digest), data, 0o600); err != nil {
		return nil, err
	}
	in.Verified(desc.Digest) // resolve hashed it
	f := &fetcher{c: c, attempts: o.attempts(), backoff: o.backoff(), stall: o.Stall}
	if f.stall <= 0 {
		f.stall = 30 * time.Second
	}
	jobs := o.Jobs
	if jobs <= 0 {
		jobs = 3
	}
	if err := fetchAll(ctx, f, in, blobs, jobs, report); err != nil {
		return nil, err
	}
	img, err := in.Commit(ctx, desc, r.Name)
	if err != nil {
		return nil, err
	}
	res.Image, res.Fresh = img, true
	return res, nil
}

// fetchAll downloads the blobs the store lacks (blobs[0] is the config,
// the others layers), jobs at a time, and stops them all at the first
// failure.
func fetchAll(ctx context.Context, f *fetcher, in *image.Ingest, blobs []ocispec.Descriptor, jobs int, report func(Event)) error {
	return eachBlob(ctx, blobs, jobs, func(ctx context.Context, b ocispec.Descriptor) error {
		if in.Reuse(b.Digest) {
			report(Event{Layer: b.Digest, Status: Exists, Current: b.Size, Total: b.Size})
			return nil
		}
		// Layers unpack as they download; the config is only stored.
		var consume func(io.Reader) error
		if b.Digest != blobs[0].Digest {
			consume = func(r io.Reader) error { return in.Unpack(ctx, b, r) }
		}
		err := f.fetch(ctx, b, in.Partial(b.Digest), in.BlobPath(b.Digest), func(st Status, n int64) {
			report(Event{Layer: b.Digest, Status: st, Current: n, Total: b.Size})
		}, consume)
		if err != nil {
			return err
		}
		in.Verified(b.Digest)
		report(Event{Layer: b.Digest, Status: Done, Current: b.Size, Total: b.Size})
		return nil
	})
}

// eachBlob runs work on each distinct blob, jobs at a time, and stops
// them all at the first failure, which it returns.
func eachBlob(ctx context.Context, blobs []ocispec.Descriptor, jobs int, work func(context.Context, ocispec.Descriptor) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, jobs)
	var wg sync.WaitGroup
	done := map[digest.Digest]bool{}
	for _, b := range blobs {
		if done[b.Digest] {
			continue
		}
		done[b.Digest] = true
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := work(ctx, b); err != nil {
				cancel(err)
			}
		}()
	}
	wg.Wait()
	return context.Cause(ctx)
}
