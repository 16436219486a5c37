package testutil

import (
	"archive/tar"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ImageOptions describes the image config and name of a test image.
type ImageOptions struct {
	// Ref is the image's name in the layout (the
	// org.opencontainers.image.ref.name annotation), e.g. "busybox:latest"
	// or "localhost/x:y". Empty means "latest".
	Ref        string
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	User       string
}

func (o ImageOptions) tag() string {
	if o.Ref == "" {
		return "latest"
	}
	return o.Ref
}

// run runs a tool and fails the test with its output when it fails.
func run(t testing.TB, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// OCILayout builds an OCI image layout directory with the real umoci tool:
// one layer holding rootfs (inserted at /), the config from opts, tagged
// opts.Ref. It skips the test when umoci is not installed.
func OCILayout(t testing.TB, rootfs string, opts ImageOptions) string {
	t.Helper()
	NeedTool(t, "umoci")
	dir := filepath.Join(t.TempDir(), "layout")
	image := dir + ":" + opts.tag()
	run(t, "umoci", "init", "--layout", dir)
	run(t, "umoci", "new", "--image", image)
	run(t, "umoci", "insert", "--image", image, rootfs, "/")
	args := []string{"config", "--image", image}
	if opts.Entrypoint != nil {
		if len(opts.Entrypoint) == 0 {
			args = append(args, "--clear=config.entrypoint")
		}
		for _, e := range opts.Entrypoint {
			args = append(args, "--config.entrypoint="+e)
		}
	}
	if opts.Cmd != nil {
		if len(opts.Cmd) == 0 {
			args = append(args, "--clear=config.cmd")
		}
		for _, c := range opts.Cmd {
			args = append(args, "--config.cmd="+c)
		}
	}
	for _, e := range opts.Env {
		args = append(args, "--config.env="+e)
	}
	if opts.WorkingDir != "" {
		args = append(args, "--config.workingdir="+opts.WorkingDir)
	}
	if opts.User != "" {
		args = append(args, "--config.user="+opts.User)
	}
	run(t, "umoci", args...)
	run(t, "umoci", "gc", "--layout", dir)
	return dir
}

// OCIArchive returns a tar file holding the OCI layout directory layoutDir
// (what `skopeo copy ... oci-archive:` and `podman save --format oci-archive`
// produce).
func OCIArchive(t testing.TB, layoutDir string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "oci.tar")
	if err := tarDir(layoutDir, out); err != nil {
		t.Fatalf("tar %s: %v", layoutDir, err)
	}
	return out
}

// DockerArchive converts the single tagged image of layoutDir into a
// `docker save` style archive with the real skopeo tool; ref becomes its
// RepoTags entry (empty: no tag). It skips the test when skopeo is missing.
func DockerArchive(t testing.TB, layoutDir, ref string) string {
	t.Helper()
	NeedTool(t, "skopeo")
	tags := LayoutRefs(t, layoutDir)
	if len(tags) != 1 {
		t.Fatalf("layout %s has refs %q, want exactly one", layoutDir, tags)
	}
	out := filepath.Join(t.TempDir(), "docker.tar")
	dst := "docker-archive:" + out
	if ref != "" {
		dst += ":" + ref
	}
	run(t, "skopeo", "--insecure-policy", "copy", "--quiet", "oci:"+layoutDir+":"+tags[0], dst)
	return out
}

// LayoutRefs returns the org.opencontainers.image.ref.name annotations of
// the layout's index.json, in order.
func LayoutRefs(t testing.TB, layoutDir string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(layoutDir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		t.Fatalf("index.json of %s: %v", layoutDir, err)
	}
	var refs []string
	for _, m := range idx.Manifests {
		if r := m.Annotations[ocispec.AnnotationRefName]; r != "" {
			refs = append(refs, r)
		}
	}
	return refs
}

// tarDir writes the tree under dir (regular files, directories, symlinks)
// into a tar file at out, with names relative to dir.
func tarDir(dir, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
