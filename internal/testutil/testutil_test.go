package testutil

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestBusyboxRootfs(t *testing.T) {
	root := BusyboxRootfs(t)
	for _, p := range []string{"bin/busybox", "bin/sh", "bin/[", "etc/passwd", "etc/group", "tmp", "home/app", "proc", "dev", "sys"} {
		if _, err := os.Lstat(filepath.Join(root, p)); err != nil {
			t.Errorf("missing %s: %v", p, err)
		}
	}
	st, err := os.Stat(filepath.Join(root, "tmp"))
	if err != nil || st.Mode()&os.ModeSticky == 0 || st.Mode().Perm() != 0o777 {
		t.Errorf("tmp mode = %v, want sticky 0777", st.Mode())
	}
	group, _ := os.ReadFile(filepath.Join(root, "etc", "group"))
	if !strings.Contains(string(group), "staff:x:50:app") {
		t.Errorf("etc/group lacks staff with app:\n%s", group)
	}
}

func TestOCILayoutAndArchives(t *testing.T) {
	opts := ImageOptions{Ref: "localhost/test:v1", Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"echo hi"},
		Env: []string{"A=1"}, WorkingDir: "/tmp", User: "1000:1000"}
	dir := OCILayout(t, BusyboxRootfs(t), opts)
	if refs := LayoutRefs(t, dir); !slices.Equal(refs, []string{"localhost/test:v1"}) {
		t.Fatalf("refs = %q", refs)
	}
	var idx ocispec.Index
	ReadJSON(t, filepath.Join(dir, "index.json"), &idx)
	var m ocispec.Manifest
	ReadJSON(t, filepath.Join(dir, "blobs", "sha256", idx.Manifests[0].Digest.Encoded()), &m)
	var cfg ocispec.Image
	ReadJSON(t, filepath.Join(dir, "blobs", "sha256", m.Config.Digest.Encoded()), &cfg)
	c := cfg.Config
	if !slices.Equal(c.Entrypoint, opts.Entrypoint) || !slices.Equal(c.Cmd, opts.Cmd) || c.WorkingDir != "/tmp" || c.User != "1000:1000" || !slices.Contains(c.Env, "A=1") {
		t.Errorf("config = %+v", c)
	}
	if len(m.Layers) != 1 || len(cfg.RootFS.DiffIDs) != 1 {
		t.Fatalf("layers %d diffIDs %d, want 1", len(m.Layers), len(cfg.RootFS.DiffIDs))
	}

	names := tarNames(t, OCIArchive(t, dir))
	if !slices.Contains(names, "index.json") || !slices.Contains(names, "oci-layout") {
		t.Errorf("oci archive members %q", names)
	}
	names = tarNames(t, DockerArchive(t, dir, "localhost/test:v1"))
	if !slices.Contains(names, "manifest.json") {
		t.Errorf("docker archive members %q", names)
	}
}

func tarNames(t *testing.T, p string) []string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
}

func TestRawLayout(t *testing.T) {
	layers := []Layer{
		{Entries: []TarEntry{Dir("etc", 0o755), File("etc/x", "hello", 0o644)}, Compression: Gzip},
		{Entries: []TarEntry{Whiteout("etc/x"), Symlink("l", "/etc")}, Compression: Zstd},
		{Entries: []TarEntry{File("../evil", "x", 0o644)}},
	}
	b := NewLayout(t)
	desc := b.AddImage(layers, ImageOptions{Cmd: []string{"sh"}})
	b.Tag(desc, "raw:1")
	dir := b.Write()
	var m ocispec.Manifest
	ReadJSON(t, b.BlobPath(desc.Digest), &m)
	if len(m.Layers) != 3 {
		t.Fatalf("manifest layers = %d", len(m.Layers))
	}
	wantMT := []string{ocispec.MediaTypeImageLayerGzip, ocispec.MediaTypeImageLayerZstd, ocispec.MediaTypeImageLayer}
	for i, l := range m.Layers {
		data, err := os.ReadFile(b.BlobPath(l.Digest))
		if err != nil {
			t.Fatal(err)
		}
		if digest.FromBytes(data) != l.Digest || l.MediaType != wantMT[i] {
			t.Errorf("layer %d: digest or media type wrong: %v", i, l)
		}
	}
	raw := TarBytes(t, layers[2].Entries)
	h, err := tar.NewReader(bytes.NewReader(raw)).Next()
	if err != nil || h.Name != "../evil" {
		t.Errorf("hostile name not kept: %v %v", h, err)
	}
	if refs := LayoutRefs(t, dir); !slices.Equal(refs, []string{"raw:1"}) {
		t.Errorf("refs = %q", refs)
	}
}
