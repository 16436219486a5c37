// Package registry pulls images from OCI distribution registries (Docker
// Hub, the CNCF distribution registry, and every registry speaking that
// protocol) into berth's image store.
//
// go-containerregistry parses references with Docker's rules and
// authenticates (DOCKER_CONFIG or ~/.docker/config.json, credential
// helpers, the bearer token exchange, basic auth). berth reads manifests
// itself, bounded and verified against what pinned them, picks the
// platform from an index, and fetches blobs with its own fetcher (see
// fetch.go) into an image.Ingest, whose Commit hands them to the store as
// an import would: the store's checks, unpacking and naming are the same
// for pulled and imported images.
package registry

import (
	"fmt"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/image"
)

// Reference is an image reference resolved with Docker's rules: "busybox"
// is docker.io/library/busybox:latest; "name@sha256:..." pins a manifest.
type Reference struct {
	ref name.Reference
	// Name is the name the store gives the image ("busybox:latest",
	// "localhost:5000/app:v1"), or "" for a reference by digest, which
	// names no tag.
	Name string
	// Digest is the pinned digest, or "".
	Digest digest.Digest
}

// ParseReference parses s as Docker does.
func ParseReference(s string) (Reference, error) {
	ref, err := name.ParseReference(s, name.WithDefaultRegistry(name.DefaultRegistry))
	if err != nil {
		return Reference{}, fmt.Errorf("reference %q: %v: %w", s, err, errdefs.ErrInvalid)
	}
	r := Reference{ref: ref}
	repo := ref.Context().RegistryStr() + "/" + ref.Context().RepositoryStr()
	switch ref := ref.(type) {
	case name.Tag:
		if r.Name, err = image.NormalizeName(repo + ":" + ref.TagStr()); err != nil {
			return Reference{}, err
		}
	case name.Digest:
		r.Digest = digest.Digest(ref.DigestStr())
		if err := r.Digest.Validate(); err != nil {
			return Reference{}, fmt.Errorf("reference %q: %v: %w", s, err, errdefs.ErrInvalid)
		}
	}
	return r, nil
}

// String is the full reference as Docker prints it:
// "docker.io/library/busybox:latest".
func (r Reference) String() string {
	if r.Host() == name.DefaultRegistry {
		return "docker.io/" + strings.TrimPrefix(r.ref.Name(), name.DefaultRegistry+"/")
	}
	return r.ref.Name()
}

// Familiar is the short form Docker's messages use: "busybox:latest",
// "busybox@sha256:...".
func (r Reference) Familiar() string {
	if r.Name != "" {
		return r.Name
	}
	return r.familiarRepo() + "@" + r.Digest.String()
}

// familiarRepo is the repository without Docker Hub's host and
// "library/": "busybox", "user/app", "localhost:5000/app".
func (r Reference) familiarRepo() string {
	if r.Host() == name.DefaultRegistry {
		return strings.TrimPrefix(r.Repository(), "library/")
	}
	return r.Host() + "/" + r.Repository()
}

// Host is the registry's host[:port]: "index.docker.io", "localhost:5000".
func (r Reference) Host() string { return r.ref.Context().RegistryStr() }

// Repository is the repository path: "library/busybox".
func (r Reference) Repository() string { return r.ref.Context().RepositoryStr() }

// Identifier is the tag or the digest.
func (r Reference) Identifier() string { return r.ref.Identifier() }

// Pinned is how the store finds the image of the manifest d pulled
// through r: its name for a tag, repository@d for a digest.
func (r Reference) Pinned(d digest.Digest) string {
	if r.Name != "" {
		return r.Name
	}
	return r.familiarRepo() + "@" + d.String()
}

// HostPlatform is the platform of this host, the default of Pull.
func HostPlatform() ocispec.Platform {
	p := ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}
	if runtime.GOARCH == "arm64" {
		p.Variant = "v8"
	}
	return p
}

// ParsePlatform parses OS/ARCH[/VARIANT], as docker pull --platform.
func ParsePlatform(s string) (ocispec.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return ocispec.Platform{}, fmt.Errorf("platform %q: want OS/ARCH[/VARIANT]: %w", s, errdefs.ErrInvalid)
	}
	p := ocispec.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// platformString is "linux/arm64/v8".
func platformString(p ocispec.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// matches reports whether an index entry's platform is want: OS and
// architecture alike, and the variant when want names one (arm64's
// "v8" is its only variant, so an entry without one matches it).
func matches(want ocispec.Platform, got *ocispec.Platform) bool {
	if got == nil || got.OS != want.OS || got.Architecture != want.Architecture {
		return false
	}
	if want.Variant == "" || got.Variant == want.Variant {
		return true
	}
	return want.Architecture == "arm64" && want.Variant == "v8" && got.Variant == ""
}

// Repo is the repository as Docker's push names it:
// "docker.io/library/busybox", "localhost:5000/app".
func (r Reference) Repo() string {
	if r.Host() == name.DefaultRegistry {
		return "docker.io/" + r.Repository()
	}
	return r.Host() + "/" + r.Repository()
}
