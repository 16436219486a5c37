package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/image"
)

// PushStatus is where a layer's upload stands.
type PushStatus int

const (
	Preparing     PushStatus = iota // queued
	Pushing                         // Current of Total bytes sent
	PushRetrying                    // an upload failed; another follows
	Pushed                          // the registry has it from this push (and what follows: done)
	AlreadyExists                   // the registry had it
	Mounted                         // the registry took it from another repository (From)
)

func (s PushStatus) String() string {
	return [...]string{"Preparing", "Pushing", "Retrying", "Pushed", "Layer already exists", "Mounted from"}[s]
}

// PushEvent is news of one layer's upload.
type PushEvent struct {
	Layer          digest.Digest
	Status         PushStatus
	Current, Total int64
	From           string // the repository a Mounted layer came from
}

// PushResult is what a push did.
type PushResult struct {
	Ref    Reference
	Digest digest.Digest // the manifest's
	Size   int64         // the manifest's
}

// Push pushes the image the store names ref to the registry and tag ref
// names. Blobs stream from the store; a blob the repository has is not
// sent, and one another repository of the registry has (an image's other
// name there) is mounted from it. o.Progress is not used: progress goes
// to progress, when set (from several goroutines at once).
func Push(ctx context.Context, s *image.Store, ref string, o Options, progress func(PushEvent)) (*PushResult, error) {
	r, err := ParseReference(ref)
	if err != nil {
		return nil, err
	}
	if r.Name == "" {
		return nil, fmt.Errorf("%s: push a tag, not a digest: %w", ref, errdefs.ErrInvalid)
	}
	img, err := s.Resolve(r.Name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	lease, err := s.Use(img)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	defer lease.Release()
	res, err := push(ctx, s, r, img, o, progress)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	return res, nil
}

func push(ctx context.Context, s *image.Store, r Reference, img image.Image, o Options, progress func(PushEvent)) (*PushResult, error) {
	if progress == nil {
		progress = func(PushEvent) {}
	}
	data, mt, m, err := s.Manifest(img)
	if err != nil {
		return nil, err
	}
	// Other repositories of this registry that hold the image (its other
	// names there) lend their blobs: the registry mounts them.
	var from []string
	for _, n := range img.Names {
		if o, err := ParseReference(n); err == nil && o.Host() == r.Host() && o.Repository() != r.Repository() && !slices.Contains(from, o.Repository()) {
			from = append(from, o.Repository())
		}
	}
	reg, err := registryOf(r.Host(), &o)
	if err != nil {
		return nil, err
	}
	scopes := []string{reg.Repo(r.Repository()).Scope(transport.PushScope)}
	for _, f := range from {
		scopes = append(scopes, reg.Repo(f).Scope(transport.PullScope))
	}
	c, err := newClient(ctx, r, &o, scopes...)
	if err != nil {
		return nil, err
	}
	// Docker shows the layers topmost first.
	layers := slices.Clone(m.Layers)
	slices.Reverse(layers)
	for _, l := range layers {
		progress(PushEvent{Layer: l.Digest, Status: Preparing, Total: l.Size})
	}
	jobs := o.Jobs
	if jobs <= 0 {
		jobs = 5 // Docker's max-concurrent-uploads
	}
	report := func(e PushEvent) {
		if e.Layer != m.Config.Digest {
			progress(e)
		}
	}
	err = eachBlob(ctx, append(layers, m.Config), jobs, func(ctx context.Context, b ocispec.Descriptor) error {
		if err := c.pushBlob(ctx, s, b, from, &o, report); err != nil {
			return fmt.Errorf("blob %s: %w", b.Digest, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.base+"/manifests/"+r.Identifier(), strings.NewReader(string(data)))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", mt)
	if err := c.do(req, http.StatusCreated, http.StatusOK, http.StatusAccepted); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return &PushResult{Ref: r, Digest: img.Manifest, Size: int64(len(data))}, nil
}

// do sends req and checks its status, draining and closing the body.
func (c *client) do(req *http.Request, want ...int) error {
	resp, err := c.http.Do(req)
	if err != nil {
		return classify(c.host, err)
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, want...); err != nil {
		return classify(c.host, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return nil
}

// pushBlob makes sure the repository has blob b: it has it already (a
// HEAD finds it), or the registry mounts it from a repository of from, or
// berth uploads it from the store in one streamed PUT, tried again from
// the start in a new session after a cut connection, 429 or 5xx, up to
// o.attempts() times.
func (c *client) pushBlob(ctx context.Context, s *image.Store, b ocispec.Descriptor, from []string, o *Options, report func(PushEvent)) error {
	ev := PushEvent{Layer: b.Digest, Total: b.Size, Current: b.Size}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, c.blobURL(b.Digest), nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return classify(c.host, err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		ev.Status = AlreadyExists
		report(ev)
		return nil
	}
	var location string
	for i := 0; i <= len(from); i++ {
		q := url.Values{}
		if i < len(from) {
			q.Set("mount", b.Digest.String())
			q.Set("from", from[i])
		}
		loc, mounted, err := c.startUpload(ctx, q)
		if err != nil {
			return err
		}
		if mounted {
			ev.Status, ev.From = Mounted, from[i]
			report(ev)
			return nil
		}
		location = loc
		if i < len(from) {
			c.cancelUpload(ctx, loc)
		}
	}
	wait := o.backoff()
	for tries := 1; ; tries++ {
		err := c.upload(ctx, s, b, location, report)
		if err == nil {
			break
		}
		var r retryable
		if !errors.As(err, &r) || ctx.Err() != nil {
			return err
		}
		if tries >= o.attempts() {
			return fmt.Errorf("%d tries failed, the last: %w", tries, r.err)
		}
		report(PushEvent{Layer: b.Digest, Status: PushRetrying, Total: b.Size})
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		wait = min(2*wait, 5*time.Second)
		// What the registry took of the cut upload is unknown: start over
		// in a session of its own.
		if location, _, err = c.startUpload(ctx, nil); err != nil {
			return err
		}
	}
	ev.Status = Pushed
	report(ev)
	return nil
}

// upload sends blob b from the store in one streamed PUT to the upload
// session at location. A cut connection, 429 and 5xx are retryable.
func (c *client) upload(ctx context.Context, s *image.Store, b ocispec.Descriptor, location string, report func(PushEvent)) error {
	f, err := s.OpenBlob(b.Digest)
	if err != nil {
		return err
	}
	defer f.Close()
	u, err := url.Parse(location)
	if err != nil {
		return fmt.Errorf("upload location %q: %v: %w", location, err, errdefs.ErrInvalid)
	}
	q := u.Query()
	q.Set("digest", b.Digest.String())
	u.RawQuery = q.Encode()
	body := &countingReader{r: io.LimitReader(f, b.Size), report: func(n int64) {
		report(PushEvent{Layer: b.Digest, Status: Pushing, Current: n, Total: b.Size})
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), body)
	if err != nil {
		return err
	}
	req.ContentLength = b.Size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // not the request line again
		}
		return retryable{fmt.Errorf("upload cut after sending %d of %d bytes: %w", body.n, b.Size, classify(c.host, err))}
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusCreated); err != nil {
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
			return retryable{classify(c.host, err)}
		}
		return classify(c.host, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return nil
}

// startUpload starts an upload session (with q's mount request, if any)
// and returns where to send the blob, or that the registry mounted it.
func (c *client) startUpload(ctx context.Context, q url.Values) (location string, mounted bool, err error) {
	u := c.base + "/blobs/uploads/"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return "", false, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return "", false, classify(c.host, err)
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusCreated, http.StatusAccepted); err != nil {
		return "", false, classify(c.host, err)
	}
	if resp.StatusCode == http.StatusCreated {
		return "", true, nil
	}
	loc, err := resp.Location()
	if err != nil {
		return "", false, fmt.Errorf("%s started an upload without a Location: %w", c.host, errdefs.ErrInvalid)
	}
	return loc.String(), false, nil
}

// cancelUpload ends an upload session berth will not use.
func (c *client) cancelUpload(ctx context.Context, location string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, location, nil)
	if err == nil {
		if resp, err := c.http.Do(req); err == nil {
			resp.Body.Close()
		}
	}
}

// countingReader reports how many bytes were read through it.
type countingReader struct {
	r      io.Reader
	n      int64
	report func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if n > 0 {
		c.report(c.n)
	}
	return n, err
}
