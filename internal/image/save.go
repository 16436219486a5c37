package image

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/errdefs"
)

// OpenBlob opens blob d of the store for reading (push, save).
func (s *Store) OpenBlob(d digest.Digest) (*os.File, error) {
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("blob %q: %v: %w", d, err, errdefs.ErrInvalid)
	}
	f, err := os.Open(s.blobPath(d))
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", d, errdefs.ErrNotFound)
	}
	return f, nil
}

// Manifest returns the manifest the store keeps for img: its bytes (as
// pulled or imported, so its digest is img.Manifest), its media type and
// its decoded form.
func (s *Store) Manifest(img Image) ([]byte, string, ocispec.Manifest, error) {
	var m ocispec.Manifest
	data, err := s.readBlob(img.Manifest)
	if err != nil {
		return nil, "", m, err
	}
	if err := decodeJSON(data, &m); err != nil {
		return nil, "", m, fmt.Errorf("manifest %s: %v: %w", img.Manifest, err, errdefs.ErrInvalid)
	}
	mt := m.MediaType
	if mt == "" {
		mt = ocispec.MediaTypeImageManifest
	}
	return data, mt, m, nil
}

// FullName spells a store name (NormalizeName's form) with its registry
// and Docker Hub's "library/": "busybox:latest" is
// "docker.io/library/busybox:latest".
func FullName(name string) string {
	first, rest, ok := strings.Cut(name, "/")
	if ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return name
	}
	if !ok {
		return "docker.io/library/" + name
	}
	return "docker.io/" + first + "/" + rest
}

// saved is one image of a Save, with the name it is saved under.
type saved struct {
	img      Image
	name     string // "" for an image saved by ID
	manifest ocispec.Descriptor
	m        ocispec.Manifest
}

// Save writes the images refs name to w as a tar: with docker true, a
// docker-archive as `docker save` writes it since Docker 25 (manifest.json
// naming the config and layer blobs, beside an OCI layout), else an OCI
// archive (the OCI image layout alone). Blobs stream from the store; each
// image is leased while it is written.
func (s *Store) Save(ctx context.Context, w io.Writer, refs []string, docker bool) error {
	var imgs []saved
	for _, ref := range refs {
		img, err := s.Resolve(ref)
		if err != nil {
			return err
		}
		l, err := s.Use(img)
		if err != nil {
			return err
		}
		defer l.Release()
		sv := saved{img: img}
		if n, err := NormalizeName(ref); err == nil && slices.Contains(img.Names, n) {
			sv.name = n
		}
		data, mt, m, err := s.Manifest(img)
		if err != nil {
			return err
		}
		sv.manifest = ocispec.Descriptor{MediaType: mt, Digest: img.Manifest, Size: int64(len(data))}
		sv.m = m
		imgs = append(imgs, sv)
	}
	tw := tar.NewWriter(w)
	now := time.Unix(0, 0)
	dir := func(name string) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: now})
	}
	file := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: now}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := dir("blobs/"); err != nil {
		return err
	}
	if err := dir("blobs/sha256/"); err != nil {
		return err
	}
	written := map[digest.Digest]bool{}
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	var entries []dockerEntry
	for _, sv := range imgs {
		for _, b := range append([]ocispec.Descriptor{sv.manifest, sv.m.Config}, sv.m.Layers...) {
			if written[b.Digest] {
				continue
			}
			written[b.Digest] = true
			if err := s.writeBlob(ctx, tw, b, now); err != nil {
				return err
			}
		}
		d := sv.manifest
		e := dockerEntry{Config: blobMember(sv.m.Config.Digest), RepoTags: []string{}}
		if sv.name != "" {
			_, tag, _ := strings.Cut(sv.name[strings.LastIndexByte(sv.name, '/')+1:], ":")
			d.Annotations = map[string]string{annotationContainerdName: FullName(sv.name), ocispec.AnnotationRefName: tag}
			e.RepoTags = []string{sv.name}
		}
		idx.Manifests = append(idx.Manifests, d)
		for _, l := range sv.m.Layers {
			e.Layers = append(e.Layers, blobMember(l.Digest))
		}
		entries = append(entries, e)
	}
	layout, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err := file(ocispec.ImageLayoutFile, layout); err != nil {
		return err
	}
	data, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	if err := file(ocispec.ImageIndexFile, data); err != nil {
		return err
	}
	if docker {
		if data, err = json.Marshal(entries); err != nil {
			return err
		}
		if err := file("manifest.json", data); err != nil {
			return err
		}
	}
	return tw.Close()
}

func blobMember(d digest.Digest) string {
	return "blobs/" + d.Algorithm().String() + "/" + d.Encoded()
}

// writeBlob copies blob b from the store into tw.
func (s *Store) writeBlob(ctx context.Context, tw *tar.Writer, b ocispec.Descriptor, mtime time.Time) error {
	f, err := s.OpenBlob(b.Digest)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() != b.Size {
		return fmt.Errorf("blob %s: %d bytes in the store, manifest says %d: %w", b.Digest, fi.Size(), b.Size, errdefs.ErrInvalid)
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: blobMember(b.Digest), Mode: 0o644, Size: b.Size, ModTime: mtime}); err != nil {
		return err
	}
	_, err = io.Copy(tw, &ctxReader{ctx: ctx, r: f})
	return err
}

// Load imports every image of the archive r streams (a docker-archive,
// as docker save or skopeo write it, or an OCI archive; plain or gzip),
// as Import would each: blobs verified, layers unpacked and checked, and
// nothing stored of an image that fails. It returns the images loaded.
func (s *Store) Load(ctx context.Context, r io.Reader) ([]Image, error) {
	_ = s.GC()
	st, err := s.newStage("load-")
	if err != nil {
		return nil, err
	}
	defer st.close()
	dir := filepath.Join(st.dir, "in")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	src, err := readTarSource(ctx, r, "archive", dir)
	if err != nil {
		return nil, err
	}
	names, err := archiveNames(src)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	var imgs []Image
	for _, name := range names {
		ist, err := s.newStage("import-")
		if err != nil {
			return imgs, err
		}
		img, err := s.importFrom(ctx, ist, src, nil, name)
		ist.close()
		if err != nil {
			if name != "" {
				return imgs, fmt.Errorf("load %s: %w", name, err)
			}
			return imgs, fmt.Errorf("load: %w", err)
		}
		imgs = append(imgs, img)
	}
	return imgs, nil
}

// archiveNames lists the names of the images an archive holds, one per
// image to import: [""] when it holds one image (imported with every
// name it carries).
func archiveNames(src source) ([]string, error) {
	im := &importer{src: src}
	var names []string
	switch {
	case im.has(ocispec.ImageIndexFile):
		var idx ocispec.Index
		if err := im.readJSON(ocispec.ImageIndexFile, &idx); err != nil {
			return nil, err
		}
		if allSame(idx.Manifests) {
			return []string{""}, nil
		}
		for _, d := range idx.Manifests {
			if n := refName(d); !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	case im.has("manifest.json"):
		var entries []dockerEntry
		if err := im.readJSON("manifest.json", &entries); err != nil {
			return nil, err
		}
		if len(entries) <= 1 {
			return []string{""}, nil
		}
		for _, e := range entries {
			n := ""
			if ns := dockerNames(e.RepoTags); len(ns) > 0 {
				n = ns[0]
			}
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	default:
		return []string{""}, nil // importFrom says what is wrong
	}
	return names, nil
}
