package image

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/errdefs"
)

// Platform is the platform the store picks from multi-platform indexes.
var Platform = ocispec.Platform{OS: "linux", Architecture: "amd64"}

func platformOK(p *ocispec.Platform) bool {
	return p == nil || (p.OS == Platform.OS && p.Architecture == Platform.Architecture)
}

func isIndex(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == mediaTypeDockerManifestList
}

// importOCI reads an OCI image layout.
func (im *importer) importOCI() (*result, error) {
	if im.has(ocispec.ImageLayoutFile) {
		var l ocispec.ImageLayout
		if err := im.readJSON(ocispec.ImageLayoutFile, &l); err != nil {
			return nil, err
		}
		if !strings.HasPrefix(l.Version, "1.") {
			return nil, fmt.Errorf("oci-layout version %q: %w", l.Version, errdefs.ErrNotSupported)
		}
	}
	var idx ocispec.Index
	if err := im.readJSON(ocispec.ImageIndexFile, &idx); err != nil {
		return nil, err
	}
	top, names, err := im.pickTop(idx.Manifests)
	if err != nil {
		return nil, err
	}
	res := &result{names: names}
	res.manifest, res.id, err = im.stageManifest(top, 0)
	if err != nil {
		return nil, err
	}
	return res, nil
}

// refName returns the image name an index.json entry carries, normalised,
// or "".
func refName(d ocispec.Descriptor) string {
	for _, key := range []string{annotationContainerdName, ocispec.AnnotationRefName} {
		if n, err := NormalizeName(d.Annotations[key]); err == nil {
			return n
		}
	}
	return ""
}

// pickTop chooses the entry of index.json to import and returns it with
// the names the entries for its digest carry.
func (im *importer) pickTop(entries []ocispec.Descriptor) (ocispec.Descriptor, []string, error) {
	var cands []ocispec.Descriptor
	for _, d := range entries {
		if platformOK(d.Platform) {
			cands = append(cands, d)
		}
	}
	if len(cands) == 0 {
		return ocispec.Descriptor{}, nil, fmt.Errorf("index.json has no %s/%s image: %w", Platform.OS, Platform.Architecture, errdefs.ErrNotFound)
	}
	pick := cands[0].Digest
	if !allSame(cands) {
		var found []digest.Digest
		var refs []string
		for _, d := range cands {
			n := refName(d)
			refs = append(refs, n)
			if n != "" && n == im.want && !slices.Contains(found, d.Digest) {
				found = append(found, d.Digest)
			}
		}
		if len(found) != 1 {
			return ocispec.Descriptor{}, nil, fmt.Errorf("index.json holds %d images (names %q): name the one to import: %w", len(cands), refs, errdefs.ErrInvalid)
		}
		pick = found[0]
	}
	var top ocispec.Descriptor
	var names []string
	for _, d := range cands {
		if d.Digest == pick {
			top = d
			if n := refName(d); n != "" && !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	return top, names, nil
}

func allSame(ds []ocispec.Descriptor) bool {
	for _, d := range ds {
		if d.Digest != ds[0].Digest {
			return false
		}
	}
	return true
}

// stageManifest follows desc through nested indexes to the platform's
// manifest and stages it with its config and layers.
func (im *importer) stageManifest(desc ocispec.Descriptor, depth int) (manifest, id digest.Digest, err error) {
	if depth > 4 {
		return "", "", fmt.Errorf("index %s: nested too deep: %w", desc.Digest, errdefs.ErrInvalid)
	}
	data, err := im.stageJSON(desc)
	if err != nil {
		return "", "", err
	}
	var probe struct {
		MediaType string            `json:"mediaType"`
		Manifests []json.RawMessage `json:"manifests"`
	}
	if err := decodeJSON(data, &probe); err != nil {
		return "", "", fmt.Errorf("blob %s: %v: %w", desc.Digest, err, errdefs.ErrInvalid)
	}
	if !isIndex(desc.MediaType) && !isIndex(probe.MediaType) && probe.Manifests == nil {
		id, err := im.stageImage(desc, data)
		return desc.Digest, id, err
	}
	// An index is only a signpost: it is read but not kept.
	delete(im.staged, desc.Digest)
	var idx ocispec.Index
	if err := decodeJSON(data, &idx); err != nil {
		return "", "", fmt.Errorf("index %s: %v: %w", desc.Digest, err, errdefs.ErrInvalid)
	}
	var match []ocispec.Descriptor
	for _, d := range idx.Manifests {
		if d.Platform != nil && platformOK(d.Platform) {
			match = append(match, d)
		}
	}
	if len(match) == 0 && len(idx.Manifests) == 1 && idx.Manifests[0].Platform == nil {
		match = idx.Manifests
	}
	if len(match) == 0 {
		return "", "", fmt.Errorf("index %s has no %s/%s manifest: %w", desc.Digest, Platform.OS, Platform.Architecture, errdefs.ErrNotFound)
	}
	return im.stageManifest(match[0], depth+1)
}
