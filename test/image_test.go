package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testutil"
)

// Hostile images are refused with one line naming the entry, and nothing
// is written outside berth's root.
func TestHostileImagesRefused(t *testing.T) {
	outside := t.TempDir()
	sentinel := filepath.Join(outside, "sentinel")
	if err := os.WriteFile(sentinel, []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := map[string][]testutil.TarEntry{
		"dotdot":        {testutil.File("../../../../.."+sentinel, "pwned", 0o644)},
		"symlink write": {testutil.Symlink("escape", outside), testutil.File("escape/sentinel", "pwned", 0o644)},
		"hardlink out":  {testutil.Hardlink("link", sentinel)},
	}
	for name, entries := range cases {
		t.Run(name, func(t *testing.T) {
			layout := testutil.RawLayout(t, []testutil.Layer{{Entries: entries}}, testutil.ImageOptions{Ref: "latest", Cmd: []string{"/x"}})
			ref := "hostile-" + strings.ReplaceAll(name, " ", "-")
			r := berth(t, "image", "import", "--name", ref, layout)
			if r.code == 0 {
				// Import may defer unpacking to first use; running must then refuse.
				r = berth(t, "run", "--rm", ref)
				berth(t, "image", "rm", ref)
			}
			if r.code == 0 {
				t.Fatalf("hostile image %s was accepted", name)
			}
			if strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
				t.Errorf("error is not one line: %q", r.stderr)
			}
			if b, _ := os.ReadFile(sentinel); string(b) != "untouched" {
				t.Fatalf("the hostile image wrote outside berth's root: sentinel is %q", b)
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 1 {
				t.Fatalf("the hostile image created files outside berth's root: %v", ents)
			}
			if out := must(t, "image", "ls"); strings.Contains(out, ref) {
				t.Fatalf("a refused image is listed:\n%s", out)
			}
		})
	}
}

func TestImageCommands(t *testing.T) {
	busybox(t)
	ls := must(t, "image", "ls")
	if !strings.Contains(ls, "busybox") || !strings.Contains(ls, "localhost/cfgimage:v1") {
		t.Fatalf("image ls:\n%s", ls)
	}
	if out := must(t, "image", "inspect", "busybox"); !strings.Contains(out, "sha256:") {
		t.Fatalf("image inspect: %s", out)
	}
	if r := berth(t, "image", "inspect", "nope"); r.code != 125 || !strings.Contains(r.stderr, "nope") {
		t.Fatalf("inspect of a missing image: exit %d %q", r.code, r.stderr)
	}
	notImage := filepath.Join(t.TempDir(), "notes.txt")
	os.WriteFile(notImage, []byte("just some text, not a tar\n"), 0o644)
	if r := berth(t, "image", "import", notImage); r.code != 125 || !strings.Contains(r.stderr, "not an OCI image layout or docker-save archive") {
		t.Fatalf("import of a text file: exit %d %q", r.code, r.stderr)
	}
}
