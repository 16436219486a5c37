package test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	imagespecs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/testutil"
)

// healthImage imports an image whose config has a Docker HEALTHCHECK
// (which the OCI image types do not carry: the config is written by
// hand): healthy while /tmp/ok exists.
func healthImage(t *testing.T) string {
	t.Helper()
	bb, err := os.ReadFile(testutil.BusyboxPath)
	if err != nil {
		t.Skipf("needs busybox-static at %s: %v", testutil.BusyboxPath, err)
	}
	entries := []testutil.TarEntry{testutil.Dir("bin", 0o755), testutil.File("bin/busybox", string(bb), 0o755), testutil.Dir("tmp", 0o1777)}
	for _, a := range []string{"sh", "test", "touch", "rm", "sleep"} {
		entries = append(entries, testutil.Symlink("bin/"+a, "busybox"))
	}
	layer := testutil.LayerBlob(t, testutil.Layer{Entries: entries, Compression: testutil.Gzip})
	b := testutil.NewLayout(t)
	ld := b.AddBlob(layer.Data, layer.Desc.MediaType)
	cfg := map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{
			"Cmd": []string{"sh", "-c", "touch /tmp/ok; exec sleep 1000"},
			"Healthcheck": map[string]any{
				"Test": []string{"CMD-SHELL", "test -e /tmp/ok"}, "Interval": 1_000_000_000, "Retries": 1,
			},
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layer.DiffID.String()}},
	}
	cd := b.AddJSON(cfg, ocispec.MediaTypeImageConfig)
	md := b.AddJSON(ocispec.Manifest{Versioned: imagespecs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: []ocispec.Descriptor{ld}}, ocispec.MediaTypeImageManifest)
	b.Tag(md, "hc")
	if r := berth(t, "image", "import", "--name", "healthimg", b.Write()); r.code != 0 {
		t.Fatalf("import: %s", r.stderr)
	}
	return "healthimg"
}

// TestHealthFromImage: the image's HEALTHCHECK is run without any flag,
// turns the instance healthy and, when its file goes, unhealthy;
// --no-healthcheck turns it off.
func TestHealthFromImage(t *testing.T) {
	img := healthImage(t)
	id := strings.TrimSpace(must(t, "run", "-d", img))
	defer berth(t, "rm", "-f", id)
	status := func() string {
		var out []struct {
			Health *struct {
				Status string `json:"status"`
			} `json:"health"`
		}
		if json.Unmarshal([]byte(must(t, "inspect", id)), &out) != nil || len(out) != 1 || out[0].Health == nil {
			return ""
		}
		return out[0].Health.Status
	}
	waitFor(t, "healthy from the image's HEALTHCHECK", func() bool { return status() == "healthy" })
	must(t, "exec", id, "rm", "/tmp/ok")
	waitFor(t, "unhealthy once /tmp/ok is gone", func() bool { return status() == "unhealthy" })
	off := strings.TrimSpace(must(t, "run", "-d", "--no-healthcheck", img))
	defer berth(t, "rm", "-f", off)
	if s := inspect(t, off)["healthcheck"]; s != nil {
		t.Errorf("--no-healthcheck: healthcheck %v", s)
	}
}
