package registry

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/errdefs"
)

// fetcher downloads blobs of one repository: each streams into its own
// partial file, hashed on the way, and is renamed to its destination
// only once its size and digest are right. A cut download resumes from
// where it stopped with an HTTP range when the registry honours it, and
// otherwise asks for the whole blob again and skips what it has;
// failures that may pass (a cut connection, 429, 5xx) are retried a
// bounded number of times, the others end the fetch at once.
type fetcher struct {
	c *client
	// attempts bounds the tries of one blob in a row that make no
	// progress; three times as many end it whatever they made.
	attempts int
	// backoff is the first wait between tries; it doubles after each.
	backoff time.Duration
	// stall is how long a request may receive nothing.
	stall time.Duration
}

// retryable marks an error after which another try may succeed.
type retryable struct{ err error }

func (r retryable) Error() string { return r.err.Error() }
func (r retryable) Unwrap() error { return r.err }

// download is one blob's download in progress.
type download struct {
	d    ocispec.Descriptor
	file *blobFile
	hash hash.Hash
	have int64 // bytes received, all hashed and given to file
	// noRange is set once the registry answered a range wrongly.
	noRange bool
	// sink, when not nil, is given every byte once, in order, as it
	// arrives; sinkGone is set once it takes no more.
	sink     *io.PipeWriter
	sinkGone bool
	// report is told of the bytes so far.
	report func(Status, int64)
	// alive is called whenever bytes arrive.
	alive func()
}

// errStalled ends a request that received nothing for too long.
var errStalled = errors.New("no data received for too long")

// stalled is err, or errStalled when that is why ctx ended.
func stalled(ctx context.Context, err error) error {
	if context.Cause(ctx) == errStalled {
		return errStalled
	}
	return err
}

// fetch downloads d into partial and renames it to dst once verified.
// When consume is not nil, it reads the blob's bytes as they arrive (in
// order, each once, whatever tries the download takes) while they are
// written: a layer unpacks as it downloads. Its error is the fetch's only
// once the blob proved to be d; a corrupt download is reported as such.
func (f *fetcher) fetch(ctx context.Context, d ocispec.Descriptor, partial, dst string, report func(Status, int64), consume func(io.Reader) error) error {
	if !d.Digest.Algorithm().Available() {
		return fmt.Errorf("blob %s: unsupported digest algorithm: %w", d.Digest, errdefs.ErrNotSupported)
	}
	file, err := createBlobFile(partial)
	if err != nil {
		return err
	}
	defer file.close()
	dl := &download{d: d, file: file, hash: d.Digest.Algorithm().Hash(), report: report}
	var consumed chan error
	if consume != nil {
		pr, pw := io.Pipe()
		dl.sink, consumed = pw, make(chan error, 1)
		go func() {
			err := consume(pr)
			pr.CloseWithError(errConsumed) // the download goes on without it
			consumed <- err
		}()
	}
	err = f.tries(ctx, dl)
	var cerr error
	if consume != nil {
		dl.sink.CloseWithError(err) // nil: the end of the blob
		cerr = <-consumed
	}
	if err != nil {
		return err
	}
	report(Verifying, dl.have)
	if dl.digest() != d.Digest {
		return fmt.Errorf("blob %s: content has digest %s: %w", d.Digest, dl.digest(), errdefs.ErrInvalid)
	}
	if cerr != nil {
		return fmt.Errorf("layer %s: %w", d.Digest, cerr)
	}
	// Sync it now, while other blobs download: the commit's sync of it
	// then has nothing left to do.
	if err := file.finish(); err != nil {
		return err
	}
	return os.Rename(partial, dst)
}

// errConsumed ends the writes to a consumer that returned.
var errConsumed = errors.New("the consumer of the blob returned")

// tries downloads the whole blob, trying again after the failures that
// may pass.
func (f *fetcher) tries(ctx context.Context, dl *download) error {
	d := dl.d
	wait := f.backoff
	for failures, tries := 0, 1; ; tries++ {
		before := dl.have
		err := f.try(ctx, dl)
		if err == nil {
			return nil
		}
		var r retryable
		if !errors.As(err, &r) || ctx.Err() != nil {
			return fmt.Errorf("blob %s: %w", d.Digest, err)
		}
		if dl.have > before {
			failures, wait = 0, f.backoff // it moved on: a fresh budget
		}
		// Tries that make progress get a fresh budget, up to a bound
		// of their own: a registry that cuts every body is given up on.
		if failures++; failures >= f.attempts || tries >= 3*f.attempts {
			return fmt.Errorf("blob %s: %d tries failed, the last: %w", d.Digest, tries, r.err)
		}
		dl.report(Retrying, dl.have)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func (dl *download) digest() digest.Digest {
	return digest.NewDigestFromEncoded(dl.d.Digest.Algorithm(), hex.EncodeToString(dl.hash.Sum(nil)))
}

// skip reads and drops the first n bytes of body, which are here
// already: the registry sent the whole blob again.
func (dl *download) skip(ctx context.Context, body io.Reader, n int64) error {
	if _, err := io.CopyBuffer(aliveWriter{dl}, io.LimitReader(body, n), dl.file.space()); err != nil {
		return retryable{fmt.Errorf("cut while skipping the %d bytes already here: %w", n, stalled(ctx, err))}
	}
	return nil
}

// aliveWriter drops what it is given and tells the download that bytes
// arrived.
type aliveWriter struct{ dl *download }

func (w aliveWriter) Write(p []byte) (int, error) {
	w.dl.alive()
	return len(p), nil
}

// try makes one request for the rest of the blob and copies what comes.
func (f *fetcher) try(parent context.Context, dl *download) error {
	// A request that receives nothing for f.stall is given up on and
	// tried again: a connection can hang without ever breaking.
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	watchdog := time.AfterFunc(f.stall, func() { cancel(errStalled) })
	defer watchdog.Stop()
	dl.alive = func() { watchdog.Reset(f.stall) }
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.c.blobURL(dl.d.Digest), nil)
	if err != nil {
		return err
	}
	if dl.have > 0 && !dl.noRange {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(dl.have, 10)+"-")
	}
	resp, err := f.c.http.Do(req)
	if err != nil {
		if parent.Err() != nil {
			return parent.Err()
		}
		return retryable{stalled(ctx, err)}
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK && dl.have > 0:
		// The whole blob again (the registry ignored the range, or was
		// not asked): skip what is here.
		if err := dl.skip(ctx, resp.Body, dl.have); err != nil {
			return err
		}
	case resp.StatusCode == http.StatusPartialContent && dl.have > 0:
		if !strings.HasPrefix(resp.Header.Get("Content-Range"), "bytes "+strconv.FormatInt(dl.have, 10)+"-") {
			// Not the part asked for: ask for the whole blob from now on.
			dl.noRange = true
			return retryable{fmt.Errorf("the registry answered the range with %q", resp.Header.Get("Content-Range"))}
		}
	case resp.StatusCode != http.StatusOK:
		err := transport.CheckError(resp, http.StatusOK)
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
			return retryable{classify(f.c.host, err)}
		}
		return classify(f.c.host, err)
	}
	rest := dl.d.Size - dl.have
	body := io.LimitReader(resp.Body, rest+1)
	var n int64
	for {
		p := dl.file.space()
		k, rerr := body.Read(p)
		n += int64(k)
		if werr := dl.took(p[:k]); werr != nil {
			return werr // the disk, not the network
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if parent.Err() != nil {
				return parent.Err()
			}
			return retryable{fmt.Errorf("cut after %d of %d bytes: %w", dl.have, dl.d.Size, stalled(ctx, rerr))}
		}
	}
	if n > rest {
		return fmt.Errorf("longer than the %d bytes its descriptor says: %w", dl.d.Size, errdefs.ErrInvalid)
	}
	if n < rest {
		return retryable{fmt.Errorf("body ended after %d of %d bytes", dl.have, dl.d.Size)}
	}
	return nil
}

// took hashes p, just received into the file's space, gives it to the
// sink and the file, and reports it.
func (dl *download) took(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	dl.hash.Write(p)
	if dl.sink != nil && !dl.sinkGone {
		if _, err := dl.sink.Write(p); err != nil {
			dl.sinkGone = true // it returned; its error, if any, comes later
		}
	}
	if err := dl.file.filled(len(p)); err != nil {
		return err
	}
	dl.have += int64(len(p))
	dl.report(Downloading, dl.have)
	dl.alive()
	return nil
}
