package test

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testutil"
)

// hostileDeadline is how long a command of these tests may take before it
// counts as hung (well inside the harness's two minutes).
const hostileDeadline = time.Minute

// berthWithin runs berth and fails the test, killing berth, when it has
// not ended within hostileDeadline.
func berthWithin(t *testing.T, args ...string) result {
	t.Helper()
	return berthLimit(t, hostileDeadline, nil, nil, args...)
}

// busyboxEntries is a minimal busybox root file system as tar entries,
// with regular /etc/passwd and /etc/group.
func busyboxEntries(t *testing.T) []testutil.TarEntry {
	t.Helper()
	bin, err := os.ReadFile(testutil.BusyboxPath)
	if err != nil {
		t.Skipf("needs busybox-static at %s: %v", testutil.BusyboxPath, err)
	}
	entries := []testutil.TarEntry{
		testutil.Dir("bin", 0o755), testutil.File("bin/busybox", string(bin), 0o755),
		testutil.Dir("etc", 0o755), testutil.Dir("tmp", 0o1777), testutil.Dir("root", 0o700),
		testutil.File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/tmp:/bin/sh\n", 0o644),
		testutil.File("etc/group", "root:x:0:\napp:x:1000:\n", 0o644),
	}
	for _, a := range []string{"sh", "true", "cat", "id", "echo"} {
		entries = append(entries, testutil.Symlink("bin/"+a, "busybox"))
	}
	return entries
}

// importHostile imports, as ref, an image of two layers: busybox, and
// upper (which replaces what it names).
func importHostile(t *testing.T, ref string, upper ...testutil.TarEntry) {
	t.Helper()
	layers := []testutil.Layer{{Entries: busyboxEntries(t)}, {Entries: upper, Compression: testutil.Gzip}}
	layout := testutil.RawLayout(t, layers, testutil.ImageOptions{Ref: "latest", Cmd: []string{"true"}})
	if r := berthWithin(t, "image", "import", "--name", ref, layout); r.code != 0 {
		t.Fatalf("import %s: exit %d: %s", ref, r.code, r.stderr)
	}
	t.Cleanup(func() { berthWithin(t, "image", "rm", ref) })
}

func wantOneLine(t *testing.T, r result, code int, want string) {
	t.Helper()
	msg := strings.TrimSpace(r.stderr)
	if r.code != code || !strings.Contains(msg, want) || strings.Contains(msg, "\n") {
		t.Fatalf("exit %d, stderr %q; want %d and one line saying %q", r.code, r.stderr, code, want)
	}
}

// An image whose /etc/passwd or /etc/group is a device, a FIFO or a huge
// file makes berth run fail at once with one line naming the file, instead
// of reading /dev/zero until the host runs out of memory or blocking on
// the FIFO for ever. A symlink is not followed on the host (the file reads
// as missing); in the container's root it is, with the same checks.
func TestHostileUserFiles(t *testing.T) {
	busybox(t)
	huge := testutil.File("etc/passwd", strings.Repeat("u:x:5:5::/:/bin/sh\n", (5<<20)/19), 0o644)
	cases := []struct {
		name  string
		entry testutil.TarEntry
		want  string
	}{
		{"passwd-zero", testutil.CharDev("etc/passwd", 1, 5), "image's /etc/passwd is a character device, not a regular file"},
		{"passwd-fifo", testutil.Fifo("etc/passwd"), "image's /etc/passwd is a FIFO, not a regular file"},
		{"group-zero", testutil.CharDev("etc/group", 1, 5), "image's /etc/group is a character device, not a regular file"},
		{"group-fifo", testutil.Fifo("etc/group"), "image's /etc/group is a FIFO, not a regular file"},
		{"passwd-huge", huge, "image's /etc/passwd is larger than 4 MiB"},
		{"passwd-link-zero", testutil.Symlink("etc/passwd", "/dev/zero"), "container's /etc/passwd is a character device, not a regular file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ref := "hostile-" + tc.name
			importHostile(t, ref, tc.entry)
			wantOneLine(t, berthWithin(t, "run", "--rm", ref, "true"), 125, tc.want)
			if strings.HasPrefix(tc.want, "image's") {
				// Resolving a named user reads the files the same way.
				wantOneLine(t, berthWithin(t, "run", "--rm", "-u", "app", ref, "true"), 125, tc.want)
			}
		})
	}
	// A symlink to a regular file of the image: the host reads the file
	// as missing (root needs no entry), the container follows it.
	t.Run("passwd-link-file", func(t *testing.T) {
		importHostile(t, "hostile-passwd-link-file",
			testutil.File("etc/passwd.real", "root:x:0:0:root:/root:/bin/sh\n", 0o644), testutil.Symlink("etc/passwd", "passwd.real"))
		r := berthWithin(t, "run", "--rm", "hostile-passwd-link-file", "sh", "-c", "id -u; echo $HOME")
		if r.code != 0 || r.stdout != "0\n/root\n" {
			t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})
}

// A VM run resolves the user on the host the same way: refused before any
// guest boots.
func TestHostileUserFilesVM(t *testing.T) {
	needVM(t)
	busybox(t)
	importHostile(t, "hostile-vm-passwd-fifo", testutil.Fifo("etc/passwd"))
	wantOneLine(t, berthWithin(t, "run", "--rm", "--vm", "hostile-vm-passwd-fifo", "true"), 125, "image's /etc/passwd is a FIFO, not a regular file")
}

// A workload that turns its /etc/passwd into a FIFO cannot make a later
// exec hang: the exec reads the container's file only if it is regular.
func TestExecWithWorkloadFIFOPasswd(t *testing.T) {
	img := busybox(t)
	id := strings.TrimSpace(must(t, "run", "-d", img, "sleep", "300"))
	defer berth(t, "rm", "-f", id)
	must(t, "exec", id, "sh", "-c", "rm /etc/passwd && mknod /etc/passwd p")
	wantOneLine(t, berthWithin(t, "exec", id, "true"), 125, "container's /etc/passwd is a FIFO, not a regular file")
}

// A bind mount onto a FIFO or device of the image mounts over it without
// opening it (opening the FIFO blocked the start for ever).
func TestBindOverHostileMountpoint(t *testing.T) {
	busybox(t)
	src := filepath.Join(t.TempDir(), "conf")
	if err := os.WriteFile(src, []byte("from host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, entry := range map[string]testutil.TarEntry{
		"fifo": testutil.Fifo("etc/conf"),
		"zero": testutil.CharDev("etc/conf", 1, 5),
	} {
		t.Run(name, func(t *testing.T) {
			ref := "hostile-mountpoint-" + name
			importHostile(t, ref, entry)
			r := berthWithin(t, "run", "--rm", "-v", src+":/etc/conf:ro", ref, "cat", "/etc/conf")
			if r.code != 0 || r.stdout != "from host\n" {
				t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
		})
	}
}

// imageNames is what image ls lists, names and IDs (not the ages).
func imageNames(t *testing.T) string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(must(t, "image", "ls"), "\n") {
		if f := strings.Fields(line); len(f) >= 2 {
			out = append(out, f[0]+" "+f[1])
		}
	}
	return strings.Join(out, "\n")
}

// treeList lists the paths under dir, sorted.
func treeList(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	_ = filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			out = append(out, p)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// A layer that a run would refuse is refused by image import already: one
// line, 125, image ls unchanged, and nothing stored (no blob, no snapshot,
// no staging leftover).
func TestHostileLayerRefusedAtImport(t *testing.T) {
	busybox(t)
	layers := map[string][]testutil.TarEntry{
		"dotdot":        {testutil.File("../../escape", "x", 0o644)},
		"symlink write": {testutil.Symlink("evil", "/tmp"), testutil.File("evil/pwned", "x", 0o644)},
		"hardlink out":  {testutil.Hardlink("link", "/etc/shadow")},
		"bad whiteout":  {testutil.Symlink("evil", "/etc"), testutil.Whiteout("evil/passwd")},
		"file root":     {testutil.File(".", "x", 0o644)},
	}
	for name, entries := range layers {
		t.Run(name, func(t *testing.T) {
			ls := imageNames(t)
			store := filepath.Join(berthRoot, "image")
			before := map[string][]string{}
			for _, d := range []string{"blobs", "snapshots", "tmp"} {
				before[d] = treeList(t, filepath.Join(store, d))
			}
			layout := testutil.RawLayout(t, []testutil.Layer{{Entries: busyboxEntries(t)}, {Entries: entries}}, testutil.ImageOptions{Ref: "latest", Cmd: []string{"true"}})
			for _, src := range []string{layout, testutil.OCIArchive(t, layout)} {
				r := berthWithin(t, "image", "import", "--name", "hostile-import", src)
				wantOneLine(t, r, 125, "layer entry")
				if after := imageNames(t); after != ls {
					t.Fatalf("image ls changed:\n%s\nwas:\n%s", after, ls)
				}
				for d, was := range before {
					if now := treeList(t, filepath.Join(store, d)); strings.Join(now, "\n") != strings.Join(was, "\n") {
						t.Fatalf("the refused import left %s changed: %q, was %q", d, now, was)
					}
				}
			}
		})
	}
}
