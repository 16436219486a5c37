package image

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/errdefs"
)

// dockerEntry is one image of a docker save archive's manifest.json.
type dockerEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// importDocker reads a docker save archive and builds the OCI manifest the
// store keeps for it.
func (im *importer) importDocker() (*result, error) {
	var entries []dockerEntry
	if err := im.readJSON("manifest.json", &entries); err != nil {
		return nil, err
	}
	e, err := im.pickDocker(entries)
	if err != nil {
		return nil, err
	}
	cfgData, err := im.readFile(e.Config)
	if err != nil {
		return nil, err
	}
	id, err := im.stageBytes(cfgData)
	if err != nil {
		return nil, err
	}
	cfg, err := parseConfig(id, cfgData, len(e.Layers))
	if err != nil {
		return nil, err
	}
	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: id, Size: int64(len(cfgData))},
		Layers:    []ocispec.Descriptor{},
	}
	for i, name := range e.Layers {
		d, err := im.stageDockerLayer(i, name, cfg.RootFS.DiffIDs[i])
		if err != nil {
			return nil, err
		}
		m.Layers = append(m.Layers, d)
	}
	im.layers, im.diffIDs = m.Layers, cfg.RootFS.DiffIDs
	mdata, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	md, err := im.stageBytes(mdata)
	if err != nil {
		return nil, err
	}
	return &result{id: id, manifest: md, names: dockerNames(e.RepoTags)}, nil
}

func dockerNames(tags []string) []string {
	var names []string
	for _, t := range tags {
		if n, err := NormalizeName(t); err == nil && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names
}

// pickDocker chooses the manifest.json entry to import.
func (im *importer) pickDocker(entries []dockerEntry) (dockerEntry, error) {
	switch len(entries) {
	case 0:
		return dockerEntry{}, fmt.Errorf("manifest.json lists no image: %w", errdefs.ErrInvalid)
	case 1:
		return entries[0], nil
	}
	var tags []string
	for _, e := range entries {
		if im.want != "" && slices.Contains(dockerNames(e.RepoTags), im.want) {
			return e, nil
		}
		tags = append(tags, e.RepoTags...)
	}
	return dockerEntry{}, fmt.Errorf("manifest.json holds %d images (tags %q): name the one to import: %w", len(entries), tags, errdefs.ErrInvalid)
}

// stageDockerLayer stages layer i; an uncompressed layer's digest must be
// its diffID (compressed ones are checked when unpacked, later in the
// import).
func (im *importer) stageDockerLayer(i int, name string, diffID digest.Digest) (ocispec.Descriptor, error) {
	rc, err := im.open(name)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("layer: %w", err)
	}
	defer rc.Close()
	br := bufio.NewReader(&ctxReader{ctx: im.ctx, r: rc})
	head, _ := br.Peek(4)
	mt := sniffMediaType(head)
	p := filepath.Join(im.dir, "layer-"+strconv.Itoa(i))
	d, n, err := writeHashed(p, br, digest.SHA256)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("layer %s: %w", name, err)
	}
	if mt == ocispec.MediaTypeImageLayer && d != diffID {
		return ocispec.Descriptor{}, fmt.Errorf("layer %s: digest %s does not match diff_id %s: %w", name, d, diffID, errdefs.ErrInvalid)
	}
	final := filepath.Join(im.dir, d.Algorithm().String()+"-"+d.Encoded())
	if err := os.Rename(p, final); err != nil {
		return ocispec.Descriptor{}, err
	}
	im.staged[d] = final
	return ocispec.Descriptor{MediaType: mt, Digest: d, Size: n}, nil
}
