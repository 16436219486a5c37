package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testutil"
)

// TestSaveLoadRun saves an image in both formats, loads each archive into
// another data root (from a file and from standard input) and runs it
// there as a container, and the OCI archive's as a VM too.
func TestSaveLoadRun(t *testing.T) {
	layout := ociLayout(t, testutilRootfs(t), "v1")
	name := "e2e/saved:v1"
	must(t, "image", "import", "--name", name, layout)
	t.Cleanup(func() { berth(t, "image", "rm", name) })
	dir := t.TempDir()
	for _, format := range []string{"docker-archive", "oci"} {
		t.Run(format, func(t *testing.T) {
			file := filepath.Join(dir, format+".tar")
			must(t, "image", "save", "--format", format, "-o", file, name)
			if ents, _ := os.ReadDir(dir); len(ents) != 1 && format == "docker-archive" {
				t.Fatalf("save left %d files", len(ents))
			}
			// Another tool reads it: skopeo, as docker-archive or oci-archive.
			testutil.NeedTool(t, "skopeo")
			src := "docker-archive:" + file
			if format == "oci" {
				src = "oci-archive:" + file + ":v1"
			}
			if out, err := exec.Command("skopeo", "--insecure-policy", "copy", "--quiet", src, "oci:"+filepath.Join(t.TempDir(), "copy")+":v1").CombinedOutput(); err != nil {
				t.Fatalf("skopeo copy %s: %v\n%s", src, err, out)
			}
			other := t.TempDir()
			r := berth(t, "--root", other, "image", "load", "-i", file)
			if r.code != 0 || r.stdout != "Loaded image: "+name+"\n" {
				t.Fatalf("load: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
			if out := must(t, "--root", other, "run", "--rm", name, "echo", "loaded"); out != "loaded\n" {
				t.Fatalf("run of the loaded image: %q", out)
			}
			if format == "oci" {
				// VM mode runs a loaded image as an imported one.
				t.Run("vm", func(t *testing.T) {
					needVM(t)
					if out := must(t, "--root", other, "run", "--rm", "--vm", name, "echo", "loaded in a vm"); out != "loaded in a vm\n" {
						t.Fatalf("run --vm of the loaded image: %q", out)
					}
				})
			}
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			third := t.TempDir()
			if r := berthIn(t, data, "--root", third, "image", "load"); r.code != 0 || r.stdout != "Loaded image: "+name+"\n" {
				t.Fatalf("load from stdin: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
		})
	}
	// skopeo's docker-archive loads too, named by its RepoTags.
	t.Run("skopeo", func(t *testing.T) {
		archive := testutil.DockerArchive(t, layout, "e2e/skopeo:v2")
		other := t.TempDir()
		r := berth(t, "--root", other, "image", "load", "-i", archive)
		if r.code != 0 || r.stdout != "Loaded image: e2e/skopeo:v2\n" {
			t.Fatalf("load: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		if out := must(t, "--root", other, "run", "--rm", "e2e/skopeo:v2", "echo", "skopeo"); out != "skopeo\n" {
			t.Fatalf("run: %q", out)
		}
	})
	r := berth(t, "image", "save", "-o", filepath.Join(dir, "none.tar"), "e2e/absent:v1")
	if r.code != 125 || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("save of a missing image: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "none.tar")); err == nil {
		t.Fatal("a failed save left its file")
	}
}

// TestLoadHostileRefused refuses an archive whose layer escapes its root,
// and garbage, with one line each and the store unchanged.
func TestLoadHostileRefused(t *testing.T) {
	busybox(t)
	ls := imageNames(t)
	layout := testutil.RawLayout(t, []testutil.Layer{{Entries: busyboxEntries(t)}, {Entries: []testutil.TarEntry{testutil.File("../../escape", "x", 0o644)}}},
		testutil.ImageOptions{Ref: "latest", Cmd: []string{"true"}})
	wantOneLine(t, berthWithin(t, "image", "load", "-i", testutil.OCIArchive(t, layout)), 125, "layer entry")
	wantOneLine(t, berthIn(t, []byte("not an archive at all"), "image", "load"), 125, "berth image: ")
	if after := imageNames(t); after != ls {
		t.Fatalf("image ls changed:\n%s\nwas:\n%s", after, ls)
	}
}
