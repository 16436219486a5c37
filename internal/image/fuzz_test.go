package image

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/testutil"
)

// Fuzz targets for what berth reads from images it does not trust: layer
// tars, OCI layouts' JSON documents and docker-save manifests. Each writes
// only under t.TempDir().

// seedLayers are layer tars like real images': a small root file system
// with links, xattrs, devices and long names, an upper layer of whiteouts,
// and the hostile entries the unpacker refuses.
func seedLayers(f *testing.F) [][]byte {
	owned := testutil.File("home/app/.profile", "export PS1='$ '\n", 0o600)
	owned.Uid, owned.Gid = 1000, 1000
	owned.PAXRecords = map[string]string{"SCHILY.xattr.user.note": "hi", "SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}
	long := testutil.File("usr/share/"+strings.Repeat("long-name-", 12)+"/f", "x", 0o644)
	gnu := long
	gnu.Format = 0
	rootfs := []testutil.TarEntry{
		testutil.Dir("./", 0o755), testutil.Dir("bin", 0o755), testutil.File("bin/busybox", "\x7fELF\x02\x01\x01", 0o755),
		testutil.Symlink("bin/sh", "busybox"), testutil.Hardlink("bin/ash", "bin/busybox"),
		testutil.Dir("etc", 0o755), testutil.File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644),
		testutil.File("etc/group", "root:x:0:\n", 0o644), testutil.Symlink("etc/mtab", "/proc/self/mounts"),
		testutil.Dir("tmp", 0o1777), testutil.Dir("home/app", 0o755), owned, long,
		testutil.CharDev("dev/null", 1, 3), testutil.BlockDev("dev/loop0", 7, 0), testutil.Fifo("run/initctl"),
	}
	upper := []testutil.TarEntry{
		testutil.Whiteout("etc/group"), testutil.Opaque("home"), testutil.File("home/new", "n", 0o644),
		testutil.Whiteout("tmp"), testutil.Dir("tmp", 0o755), testutil.File("x", "1", 0o644), testutil.Whiteout("x"),
	}
	hostile := [][]testutil.TarEntry{
		{testutil.File("../escape", "x", 0o644)},
		{testutil.Symlink("evil", "/"), testutil.File("evil/etc/x", "x", 0o644)},
		{testutil.Symlink("evil", "../.."), testutil.Whiteout("evil/x"), testutil.Opaque("evil")},
		{testutil.Hardlink("l", "/etc/passwd")},
		{testutil.File("f", "x", 0o644), testutil.Hardlink("f", "f")},
		{testutil.File(".", "x", 0o644)},
		{testutil.File("a/.wh...", "", 0o644), testutil.File(".wh.", "", 0o644)},
		{testutil.Dir("d", 0), testutil.File("d/f", "x", 0o644)},
	}
	var out [][]byte
	for _, l := range []testutil.Layer{{Entries: rootfs}, {Entries: upper}, {Entries: rootfs, Compression: testutil.Gzip}, {Entries: upper, Compression: testutil.Zstd}} {
		out = append(out, testutil.LayerBlob(f, l).Data)
	}
	for _, h := range hostile {
		out = append(out, testutil.TarBytes(f, h))
	}
	return append(out, sparseLayer(f, 64<<20))
}

// FuzzUnpackLayer: any layer blob unpacks, or is refused, without writing
// outside the directory it unpacks into; what it unpacks has the digest of
// the whole uncompressed stream.
func FuzzUnpackLayer(f *testing.F) {
	for _, s := range seedLayers(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, blob []byte) {
		base := t.TempDir()
		sentinel := filepath.Join(base, "sentinel")
		if err := os.WriteFile(sentinel, []byte("safe"), 0o644); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(base, "fs")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		defer makeRemovable(dir)
		got, err := unpackLayer(context.Background(), bytes.NewReader(blob), dir, false)
		plain := !bytes.HasPrefix(blob, []byte{0x1f, 0x8b}) && !bytes.HasPrefix(blob, []byte{0x28, 0xb5, 0x2f, 0xfd})
		if err == nil && plain && got != digest.FromBytes(blob) {
			t.Fatalf("digest %s of an uncompressed layer, want %s", got, digest.FromBytes(blob))
		}
		// An uncompressed layer cannot unpack into more bytes than it has
		// (a sparse file's holes would).
		if n := fileBytes(dir); plain && n > int64(len(blob)) {
			t.Fatalf("a %d-byte layer unpacked into %d bytes of files", len(blob), n)
		}
		if data, rerr := os.ReadFile(sentinel); rerr != nil || string(data) != "safe" {
			t.Fatalf("sentinel next to the layer changed: %q %v", data, rerr)
		}
		ents, _ := os.ReadDir(base)
		if len(ents) != 2 {
			t.Fatalf("unpacking wrote beside its directory: %v", ents)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Fatalf("error of more than one line: %q", err)
		}
	})
}

// fileBytes is the total size of the regular files under dir, each hard
// linked file counted once.
func fileBytes(dir string) int64 {
	var n int64
	seen := map[uint64]bool{}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		var st unix.Stat_t
		if err == nil && d.Type().IsRegular() && unix.Lstat(p, &st) == nil && !seen[st.Ino] {
			seen[st.Ino] = true
			n += st.Size
		}
		return nil
	})
	return n
}

// makeRemovable gives the owner access to every directory under dir, so
// that t.TempDir's cleanup can remove a layer's mode-0 directories when
// the test does not run as root.
func makeRemovable(dir string) {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if d != nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
}

// memSource is an archive held in memory.
type memSource map[string][]byte

func (m memSource) open(name string) (io.ReadCloser, error) {
	data, ok := m[cleanArchivePath(name)]
	if !ok {
		return nil, errdefs.ErrNotFound
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

// fuzzLayer is the one layer blob the fuzzed documents may refer to.
var fuzzLayer = []byte("layer blob")

// fill replaces the placeholders @NAME@ (digest) and @NAME_SIZE@ (size)
// of the documents each document refers to, so the fuzzer mutates the
// documents while their references stay right.
func fill(doc []byte, refs map[string][]byte) []byte {
	for name, target := range refs {
		doc = bytes.ReplaceAll(doc, []byte("@"+name+"_SIZE@"), []byte(strconv.Itoa(len(target))))
		doc = bytes.ReplaceAll(doc, []byte("@"+name+"@"), []byte(digest.FromBytes(target)))
	}
	return doc
}

// put stores doc as a blob of src.
func put(src memSource, doc []byte) {
	d := digest.FromBytes(doc)
	src["blobs/"+d.Algorithm().String()+"/"+d.Encoded()] = doc
}

// fuzzImporter is an importer over src that stages blobs in a temporary
// directory.
func fuzzImporter(t *testing.T, src source, want string) *importer {
	return &importer{ctx: context.Background(), src: src, dir: t.TempDir(), staged: map[digest.Digest]string{}, want: want}
}

// checkResult checks what an import that succeeded returns: the image's
// config, manifest and layers are staged and agree.
func checkResult(t *testing.T, im *importer, res *result, err error) {
	t.Helper()
	if err != nil {
		if strings.Contains(err.Error(), "\n") {
			t.Fatalf("error of more than one line: %q", err)
		}
		return
	}
	for _, d := range []digest.Digest{res.id, res.manifest} {
		if _, ok := im.staged[d]; !ok {
			t.Fatalf("%s is not staged", d)
		}
	}
	if len(im.layers) != len(im.diffIDs) {
		t.Fatalf("%d layers, %d diff_ids", len(im.layers), len(im.diffIDs))
	}
	for _, l := range im.layers {
		if _, ok := im.staged[l.Digest]; !ok {
			t.Fatalf("layer %s is not staged", l.Digest)
		}
	}
	for _, n := range res.names {
		if norm, nerr := NormalizeName(n); nerr != nil || norm != n {
			t.Fatalf("name %q is not normal: %v", n, nerr)
		}
	}
}

func marshal(f *testing.F, v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		f.Fatal(err)
	}
	return data
}

// FuzzImportOCI: any index.json, nested index, manifest and config of an
// OCI layout. The documents may name each other and the one layer blob
// by placeholder: @CONFIG@, @MANIFEST@, @NESTED@, @LAYER@, and their sizes
// as @CONFIG_SIZE@ and so on.
func FuzzImportOCI(f *testing.F) {
	cfg := marshal(f, testutil.ImageConfig(testutil.ImageOptions{Cmd: []string{"/bin/sh"}, User: "app", Env: []string{"PATH=/bin"}}, []digest.Digest{"@DIFFID@"}))
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"@CONFIG@","size":@CONFIG_SIZE@},` +
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"@LAYER@","size":@LAYER_SIZE@}]}`)
	nested := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[` +
		`{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"@MANIFEST@","size":@MANIFEST_SIZE@,"platform":{"architecture":"arm64","os":"linux"}},` +
		`{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"@MANIFEST@","size":@MANIFEST_SIZE@,"platform":{"architecture":"amd64","os":"linux"}}]}`)
	direct := []byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"@MANIFEST@","size":@MANIFEST_SIZE@,` +
		`"annotations":{"org.opencontainers.image.ref.name":"latest","io.containerd.image.name":"docker.io/library/busybox:latest"}}]}`)
	viaNested := []byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"@NESTED@","size":@NESTED_SIZE@}]}`)
	f.Add(direct, nested, manifest, cfg)
	f.Add(viaNested, nested, manifest, cfg)
	f.Add([]byte(`{"manifests":[{"digest":"@MANIFEST@","size":@MANIFEST_SIZE@,"annotations":{"org.opencontainers.image.ref.name":"a"}},{"digest":"@NESTED@","size":@NESTED_SIZE@,"annotations":{"org.opencontainers.image.ref.name":"b"}}]}`), nested, manifest, cfg)
	f.Add([]byte(`{"manifests":[{"digest":"sha256:zz","size":-1}]}`), []byte(`{"manifests":null}`), []byte(`{"schemaVersion":1}`), []byte(`{"rootfs":{"type":"layers","diff_ids":[7]}}`))
	f.Fuzz(func(t *testing.T, index, nested, manifest, config []byte) {
		layer := fuzzLayer
		config = fill(config, map[string][]byte{"DIFFID": layer})
		manifest = fill(manifest, map[string][]byte{"CONFIG": config, "LAYER": layer})
		nested = fill(nested, map[string][]byte{"MANIFEST": manifest})
		index = fill(index, map[string][]byte{"MANIFEST": manifest, "NESTED": nested})
		src := memSource{"oci-layout": []byte(`{"imageLayoutVersion":"1.0.0"}`), "index.json": index}
		for _, doc := range [][]byte{config, manifest, nested, layer} {
			put(src, doc)
		}
		for _, want := range []string{"", "a:latest"} {
			im := fuzzImporter(t, src, want)
			res, err := im.importOCI()
			checkResult(t, im, res, err)
		}
	})
}

// FuzzImportDocker: any manifest.json and config of a docker-save
// archive, whose members are "config.json", "layer.tar" and "layer.tar.gz"
// (@DIFFID@ in the config is the layers' diffID).
func FuzzImportDocker(f *testing.F) {
	cfg := marshal(f, testutil.ImageConfig(testutil.ImageOptions{Cmd: []string{"/bin/sh"}}, []digest.Digest{"@DIFFID@"}))
	two := marshal(f, testutil.ImageConfig(testutil.ImageOptions{}, []digest.Digest{"@DIFFID@", "@DIFFID@"}))
	f.Add([]byte(`[{"Config":"config.json","RepoTags":["busybox:latest","localhost/x:1"],"Layers":["layer.tar"]}]`), cfg)
	f.Add([]byte(`[{"Config":"config.json","RepoTags":null,"Layers":["layer.tar","./layer.tar.gz"]}]`), two)
	f.Add([]byte(`[{"Config":"config.json","RepoTags":["a:1"],"Layers":[]},{"Config":"../config.json","RepoTags":["a:latest"],"Layers":["/layer.tar"]}]`), cfg)
	f.Add([]byte(`[{"Config":"config.json","Layers":["nope"]}]`), []byte(`{"rootfs":{"type":"layers"}}`))
	layer := testutil.TarBytes(f, []testutil.TarEntry{testutil.File("f", "x", 0o644)})
	gz := testutil.LayerBlob(f, testutil.Layer{Entries: []testutil.TarEntry{testutil.File("f", "x", 0o644)}, Compression: testutil.Gzip}).Data
	f.Fuzz(func(t *testing.T, manifest, config []byte) {
		config = fill(config, map[string][]byte{"DIFFID": layer})
		src := memSource{"manifest.json": manifest, "config.json": config, "layer.tar": layer, "layer.tar.gz": gz}
		for _, want := range []string{"", "a:latest"} {
			im := fuzzImporter(t, src, want)
			res, err := im.importDocker()
			checkResult(t, im, res, err)
			if err == nil && len(im.layers) > 0 && im.layers[0].MediaType == ocispec.MediaTypeImageLayer && im.layers[0].Digest != im.diffIDs[0] {
				t.Fatalf("uncompressed layer %s accepted for diff_id %s", im.layers[0].Digest, im.diffIDs[0])
			}
		}
	})
}

// FuzzTarSource: any archive given to image import as a tar. Its members
// are staged under flat names in one directory, and links between them
// resolve inside the archive.
func FuzzTarSource(f *testing.F) {
	f.Add(testutil.TarBytes(f, []testutil.TarEntry{
		testutil.Dir("blobs/", 0o755), testutil.File("index.json", "{}", 0o644), testutil.File("blobs/sha256/ab", "x", 0o644),
		testutil.Symlink("manifest.json", "blobs/sha256/ab"), testutil.Hardlink("oci-layout", "index.json"),
		testutil.Symlink("loop", "loop"), testutil.Symlink("up", "../../etc/passwd"), testutil.File("../../x", "y", 0o644),
	}))
	f.Add(sparseLayer(f, 64<<20))
	f.Fuzz(func(t *testing.T, archive []byte) {
		base := t.TempDir()
		p := filepath.Join(base, "archive.tar")
		if err := os.WriteFile(p, archive, 0o644); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(base, "in")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		src, err := openTarSource(context.Background(), p, dir)
		// A plain archive's members cannot take more room than it has (a
		// sparse member's holes would).
		if n := fileBytes(dir); !bytes.HasPrefix(archive, []byte{0x1f, 0x8b}) && n > int64(len(archive)) {
			t.Fatalf("a %d-byte archive staged %d bytes", len(archive), n)
		}
		if err != nil {
			return
		}
		for name := range src.files {
			rc, err := src.open(name)
			if err != nil {
				t.Fatalf("member %q listed but not opened: %v", name, err)
			}
			rc.Close()
		}
		for name := range src.links {
			if rc, err := src.open(name); err == nil {
				rc.Close()
			}
		}
		if ents, _ := os.ReadDir(base); len(ents) != 2 {
			t.Fatalf("staging wrote beside its directory: %v", ents)
		}
	})
}
