package test

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testutil"
)

// skopeoManifestDigest copies ref from a registry into an OCI layout with
// skopeo and returns the digest of the manifest it got.
func skopeoManifestDigest(t *testing.T, ref string, extra ...string) string {
	t.Helper()
	testutil.NeedTool(t, "skopeo")
	dir := filepath.Join(t.TempDir(), "oci")
	args := append([]string{"--insecure-policy", "copy", "--quiet", "--src-tls-verify=false"}, extra...)
	out, err := exec.Command("skopeo", append(args, "docker://"+ref, "oci:"+dir+":got")...).CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo copy from %s: %v\n%s", ref, err, out)
	}
	var idx struct {
		Manifests []struct{ Digest string } `json:"manifests"`
	}
	data, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil || json.Unmarshal(data, &idx) != nil || len(idx.Manifests) != 1 {
		t.Fatalf("skopeo's layout index: %v\n%s", err, data)
	}
	return idx.Manifests[0].Digest
}

// pushDigest checks berth push's output as Docker prints it and returns
// the digest of its last line.
func pushDigest(t *testing.T, r result, repo, tag, layerStatus string) string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	last := lines[len(lines)-1]
	if r.code != 0 || lines[0] != "The push refers to repository ["+repo+"]" || !strings.Contains(r.stdout, ": Preparing\n") ||
		!strings.Contains(r.stdout, ": "+layerStatus+"\n") || !strings.HasPrefix(last, tag+": digest: sha256:") || !strings.Contains(last, " size: ") {
		t.Fatalf("berth push: exit %d\nstdout:\n%s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	return strings.Fields(last)[2]
}

// TestPushThenSkopeoPull pushes an imported image with berth to a local
// registry, and skopeo pulls the very manifest berth reported.
func TestPushThenSkopeoPull(t *testing.T) {
	host := localRegistry(t)
	layout := ociLayout(t, testutilRootfs(t), "v1")
	ref := host + "/e2e/pushed:v1"
	must(t, "image", "import", "--name", ref, layout)
	t.Cleanup(func() { berth(t, "image", "rm", ref) })
	d := pushDigest(t, berth(t, "push", ref), host+"/e2e/pushed", "v1", "Pushed")
	if got := skopeoManifestDigest(t, ref); got != d {
		t.Fatalf("skopeo got manifest %s, berth pushed %s", got, d)
	}
	if again := pushDigest(t, berth(t, "push", ref), host+"/e2e/pushed", "v1", "Layer already exists"); again != d {
		t.Fatalf("second push: %s, first %s", again, d)
	}
	if out := must(t, "push", "-q", ref); out != ref+"\n" {
		t.Fatalf("push -q: %q", out)
	}
	for _, bad := range []string{host + "/e2e/absent:v1", ref + "@" + d, "127.0.0.1:1/e2e/pushed:v1"} {
		r := berth(t, "push", bad)
		if r.code != 125 || !strings.HasPrefix(r.stderr, "berth push: ") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("push %s: exit %d, stderr %q", bad, r.code, r.stderr)
		}
	}
}

// TestLoginPushDistribution logs in to Debian's docker-registry (TLS and
// htpasswd) as docker login does, pushes two repositories (the second's
// layers mounted from the first), lets skopeo pull, and logs out.
func TestLoginPushDistribution(t *testing.T) {
	host, _ := distributionRegistry(t, "alice", "s3cret")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.json")
	orig := `{"psFormat":"table {{.ID}}","auths":{"other.example":{"auth":"eDp5"}}}`
	if err := os.WriteFile(cfg, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"DOCKER_CONFIG=" + dir}

	r := berthEnvIn(t, env, []byte("wrong\n"), "login", "-u", "alice", "--password-stdin", host)
	if r.code != 125 || !strings.HasPrefix(r.stderr, "berth login: ") || !strings.Contains(r.stderr, "credentials") || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("login with a wrong password: exit %d, stderr %q", r.code, r.stderr)
	}
	if data, _ := os.ReadFile(cfg); string(data) != orig {
		t.Fatalf("a refused login changed the config:\n%s", data)
	}
	r = berthEnvIn(t, env, []byte("s3cret\n"), "login", "-u", "alice", "--password-stdin", host)
	if r.code != 0 || r.stdout != "Login Succeeded\n" {
		t.Fatalf("login: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	var got struct {
		PsFormat string                       `json:"psFormat"`
		Auths    map[string]map[string]string `json:"auths"`
	}
	data, _ := os.ReadFile(cfg)
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("config after login: %v\n%s", err, data)
	}
	if got.Auths[host]["auth"] != base64.StdEncoding.EncodeToString([]byte("alice:s3cret")) || got.Auths["other.example"]["auth"] != "eDp5" || got.PsFormat != "table {{.ID}}" {
		t.Fatalf("config after login:\n%s", data)
	}
	if fi, err := os.Stat(cfg); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config mode after login: %v, %v", fi.Mode(), err)
	}

	layout := ociLayout(t, testutilRootfs(t), "v1")
	first, second := host+"/e2e/first:v1", host+"/e2e/second:v2"
	must(t, "image", "import", "--name", first, layout)
	must(t, "image", "tag", first, second)
	t.Cleanup(func() { berth(t, "image", "rm", first); berth(t, "image", "rm", second) })
	d := pushDigest(t, berthEnvIn(t, env, nil, "push", first), host+"/e2e/first", "v1", "Pushed")
	d2 := pushDigest(t, berthEnvIn(t, env, nil, "push", second), host+"/e2e/second", "v2", "Mounted from e2e/first")
	if d2 != d {
		t.Fatalf("second repository's manifest %s, first's %s", d2, d)
	}
	if got := skopeoManifestDigest(t, second, "--src-creds", "alice:s3cret"); got != d {
		t.Fatalf("skopeo got manifest %s, berth pushed %s", got, d)
	}

	if r := berthEnvIn(t, env, nil, "logout", host); r.code != 0 || r.stdout != "Removing login credentials for "+host+"\n" {
		t.Fatalf("logout: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	data, _ = os.ReadFile(cfg)
	if strings.Contains(string(data), host) || !strings.Contains(string(data), "other.example") || !strings.Contains(string(data), "psFormat") {
		t.Fatalf("config after logout:\n%s", data)
	}
	if r := berthEnvIn(t, env, nil, "logout", host); r.code != 0 || r.stdout != "Not logged in to "+host+"\n" {
		t.Fatalf("second logout: exit %d, stdout %q", r.code, r.stdout)
	}
	r = berthEnvIn(t, env, nil, "push", first)
	if r.code != 125 || !strings.Contains(r.stderr, "credentials") || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("push after logout: exit %d, stderr %q", r.code, r.stderr)
	}
}
