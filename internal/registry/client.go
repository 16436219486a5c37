package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/errdefs"
)

// maxManifest bounds a manifest or index read from a registry.
const maxManifest = 4 << 20

// Media types of Docker's image format (schema 2).
const (
	mediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// acceptManifests is the Accept header of a manifest request: the types
// berth reads, never schema 1.
var acceptManifests = strings.Join([]string{
	ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
	mediaTypeDockerManifest, mediaTypeDockerManifestList,
}, ", ")

// client talks to one repository of a registry on an authenticated
// transport.
type client struct {
	http *http.Client
	host string // host[:port] of the registry, for errors
	// base is "https://HOST/v2/REPO"; the transport switches the scheme
	// to what the registry answered on (plain HTTP where allowed).
	base string
}

// registryOf is r's registry, marked insecure (plain HTTP tried after
// HTTPS) when the user lists it.
func registryOf(host string, o *Options) (name.Registry, error) {
	var opts []name.Option
	if listed(host, o.Insecure) {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(host, opts...)
	if err != nil {
		return name.Registry{}, fmt.Errorf("registry %q: %v: %w", host, err, errdefs.ErrInvalid)
	}
	return reg, nil
}

// authTransport pings reg and returns a transport authenticated with auth
// for scopes, over the guard of o's insecure registries.
func authTransport(ctx context.Context, reg name.Registry, auth authn.Authenticator, o *Options, scopes []string) (http.RoundTripper, error) {
	rt, err := transport.NewWithContext(ctx, reg, auth, newGuard(o.Transport, o.Insecure), scopes)
	if err != nil {
		return nil, classify(reg.RegistryStr(), err)
	}
	return rt, nil
}

// newClient pings the registry of r, authenticates with the keychain for
// scopes of its repository (pulling when none), and returns a client
// for it.
func newClient(ctx context.Context, r Reference, o *Options, scopes ...string) (*client, error) {
	reg, err := registryOf(r.Host(), o)
	if err != nil {
		return nil, err
	}
	repo := reg.Repo(r.Repository())
	auth, err := authn.Resolve(ctx, o.keychain(), repo)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", r.Host(), err)
	}
	if len(scopes) == 0 {
		scopes = []string{repo.Scope(transport.PullScope)}
	}
	rt, err := authTransport(ctx, reg, auth, o, scopes)
	if err != nil {
		return nil, err
	}
	return &client{
		http: &http.Client{Transport: rt},
		host: r.Host(),
		base: "https://" + r.Host() + "/v2/" + r.Repository(),
	}, nil
}

// classify turns a transport error into one line a user understands.
func classify(host string, err error) error {
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return fmt.Errorf("unknown host %s: %w", host, errdefs.ErrNotFound)
	}
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("%s refused the credentials: %s: %w", host, diagnostic(te), errdefs.ErrInvalid)
		case http.StatusNotFound:
			return fmt.Errorf("%s: %w", diagnostic(te), errdefs.ErrNotFound)
		}
		return fmt.Errorf("%s: %s: %w", host, diagnostic(te), errdefs.ErrUnavailable)
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return fmt.Errorf("cannot reach %s: %v: %w", host, op.Err, errdefs.ErrUnavailable)
	}
	return err
}

// diagnostic is what the registry said, without the request line.
func diagnostic(te *transport.Error) string {
	if len(te.Errors) > 0 {
		var parts []string
		for _, d := range te.Errors {
			parts = append(parts, d.String())
		}
		return strings.Join(parts, "; ")
	}
	return fmt.Sprintf("%d %s", te.StatusCode, http.StatusText(te.StatusCode))
}

// manifest fetches the manifest or index id (a tag or a digest) and
// checks it against what names it: the digest of a pinned reference, the
// digest and size of the index entry want (when not nil), the registry's
// own Docker-Content-Digest. It returns the manifest's descriptor and
// content.
func (c *client) manifest(ctx context.Context, id string, want *ocispec.Descriptor) (ocispec.Descriptor, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/manifests/"+id, nil)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	req.Header.Set("Accept", acceptManifests)
	resp, err := c.http.Do(req)
	if err != nil {
		return ocispec.Descriptor{}, nil, classify(c.host, err)
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		return ocispec.Descriptor{}, nil, classify(c.host, err)
	}
	limit := int64(maxManifest)
	if want != nil && want.Size < limit {
		limit = want.Size
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return ocispec.Descriptor{}, nil, fmt.Errorf("manifest %s: %v: %w", id, err, errdefs.ErrUnavailable)
	}
	if int64(len(data)) > limit {
		return ocispec.Descriptor{}, nil, fmt.Errorf("manifest %s: larger than %d bytes: %w", id, limit, errdefs.ErrInvalid)
	}
	alg := digest.Canonical
	pinned := digest.Digest("")
	if want != nil {
		pinned = want.Digest
	} else if d := digest.Digest(id); d.Validate() == nil {
		pinned = d
	}
	if pinned != "" {
		alg = pinned.Algorithm()
	}
	got := alg.FromBytes(data)
	if pinned != "" && got != pinned {
		return ocispec.Descriptor{}, nil, fmt.Errorf("manifest %s: content has digest %s: %w", pinned, got, errdefs.ErrInvalid)
	}
	if want != nil && int64(len(data)) != want.Size {
		return ocispec.Descriptor{}, nil, fmt.Errorf("manifest %s: %d bytes, index says %d: %w", pinned, len(data), want.Size, errdefs.ErrInvalid)
	}
	if h := digest.Digest(resp.Header.Get("Docker-Content-Digest")); h != "" && h.Algorithm() == got.Algorithm() && h != got {
		return ocispec.Descriptor{}, nil, fmt.Errorf("manifest %s: registry says digest %s, content has %s: %w", id, h, got, errdefs.ErrInvalid)
	}
	var probe struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return ocispec.Descriptor{}, nil, fmt.Errorf("manifest %s: not JSON: %w", id, errdefs.ErrInvalid)
	}
	mt := probe.MediaType
	if mt == "" {
		mt, _, _ = strings.Cut(resp.Header.Get("Content-Type"), ";")
	}
	if probe.SchemaVersion != 2 {
		return ocispec.Descriptor{}, nil, fmt.Errorf("manifest %s: schema version %d (only schema 2 and OCI are supported): %w", id, probe.SchemaVersion, errdefs.ErrNotSupported)
	}
	return ocispec.Descriptor{MediaType: mt, Digest: got, Size: int64(len(data))}, data, nil
}

// resolve follows r to the manifest of platform p: the manifest r names,
// or through an index (two levels at most) the entry for p. It returns
// the digest r names (an index's, for a multi-platform image) and the
// platform's manifest.
func (c *client) resolve(ctx context.Context, r Reference, p ocispec.Platform) (top digest.Digest, desc ocispec.Descriptor, data []byte, m ocispec.Manifest, err error) {
	desc, data, err = c.manifest(ctx, r.Identifier(), nil)
	if err != nil {
		return "", desc, nil, m, err
	}
	top = desc.Digest
	for depth := 0; isIndex(desc.MediaType, data); depth++ {
		if depth == 2 {
			return "", desc, nil, m, fmt.Errorf("index %s: nested too deep: %w", desc.Digest, errdefs.ErrInvalid)
		}
		var idx ocispec.Index
		if err := json.Unmarshal(data, &idx); err != nil {
			return "", desc, nil, m, fmt.Errorf("index %s: %v: %w", desc.Digest, err, errdefs.ErrInvalid)
		}
		var pick *ocispec.Descriptor
		for i, d := range idx.Manifests {
			if matches(p, d.Platform) {
				pick = &idx.Manifests[i]
				break
			}
		}
		if pick == nil {
			return "", desc, nil, m, fmt.Errorf("no %s image in the index %s (it has %s): %w", platformString(p), desc.Digest, platformsOf(idx), errdefs.ErrNotFound)
		}
		if pick.Digest == desc.Digest {
			return "", desc, nil, m, fmt.Errorf("index %s names itself: %w", desc.Digest, errdefs.ErrInvalid)
		}
		if err := pick.Digest.Validate(); err != nil {
			return "", desc, nil, m, fmt.Errorf("index %s: entry digest %q: %v: %w", desc.Digest, pick.Digest, err, errdefs.ErrInvalid)
		}
		if desc, data, err = c.manifest(ctx, pick.Digest.String(), pick); err != nil {
			return "", desc, nil, m, err
		}
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return "", desc, nil, m, fmt.Errorf("manifest %s: %v: %w", desc.Digest, err, errdefs.ErrInvalid)
	}
	if desc.MediaType == "" {
		desc.MediaType = ocispec.MediaTypeImageManifest
	}
	for _, l := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
		if err := l.Digest.Validate(); err != nil || l.Size < 0 {
			return "", desc, nil, m, fmt.Errorf("manifest %s: blob %q of size %d: %w", desc.Digest, l.Digest, l.Size, errdefs.ErrInvalid)
		}
	}
	return top, desc, data, m, nil
}

func isIndex(mt string, data []byte) bool {
	if mt == ocispec.MediaTypeImageIndex || mt == mediaTypeDockerManifestList {
		return true
	}
	var probe struct {
		Manifests json.RawMessage `json:"manifests"`
		Layers    json.RawMessage `json:"layers"`
	}
	return json.Unmarshal(data, &probe) == nil && probe.Manifests != nil && probe.Layers == nil
}

func platformsOf(idx ocispec.Index) string {
	var ps []string
	for _, d := range idx.Manifests {
		if d.Platform != nil && d.Platform.OS != "unknown" {
			ps = append(ps, platformString(*d.Platform))
		}
	}
	if len(ps) == 0 {
		return "none named"
	}
	return strings.Join(ps, ", ")
}

// blobURL is where blob d is fetched from.
func (c *client) blobURL(d digest.Digest) string { return c.base + "/blobs/" + d.String() }
