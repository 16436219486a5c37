package registry

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readConfig(t *testing.T, p string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("%s: %v\n%s", p, err, data)
	}
	return m
}

func TestServerKey(t *testing.T) {
	for in, want := range map[string][2]string{
		"":                            {"index.docker.io", DockerHubKey},
		"docker.io":                   {"index.docker.io", DockerHubKey},
		"https://index.docker.io/v1/": {"index.docker.io", DockerHubKey},
		"localhost:5000":              {"localhost:5000", "localhost:5000"},
		"https://ghcr.io/":            {"ghcr.io", "ghcr.io"},
	} {
		h, k, err := ServerKey(in)
		if err != nil || h != want[0] || k != want[1] {
			t.Errorf("ServerKey(%q) = %q, %q, %v", in, h, k, err)
		}
	}
}

// TestDockerConfigStoreErase writes credentials as Docker does: base64
// user:pass under auths, other keys and entries kept, mode 0600; erase
// removes only that registry's entry.
func TestDockerConfigStoreErase(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("DOCKER_CONFIG", dir)
	p := filepath.Join(dir, "config.json")
	orig := `{"auths":{"other.example":{"auth":"b3RoZXI6cHc="}},"psFormat":"table {{.ID}}","proxies":{"default":{"httpProxy":"http://p:3128"}}}`
	if err := os.WriteFile(p, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := LoadDockerConfig()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Store(DockerHubKey, "alice", "pa:ss"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config mode: %v %v", fi.Mode(), err)
	}
	m := readConfig(t, p)
	auths := m["auths"].(map[string]any)
	got := auths[DockerHubKey].(map[string]any)["auth"].(string)
	if dec, _ := base64.StdEncoding.DecodeString(got); string(dec) != "alice:pa:ss" {
		t.Fatalf("auth %q decodes to %q", got, dec)
	}
	if auths["other.example"].(map[string]any)["auth"] != "b3RoZXI6cHc=" || m["psFormat"] != "table {{.ID}}" || m["proxies"] == nil {
		t.Fatalf("other keys lost: %v", m)
	}
	c, _ = LoadDockerConfig()
	if found, err := c.Erase(DockerHubKey); !found || err != nil {
		t.Fatalf("erase: %v %v", found, err)
	}
	if found, err := c.Erase(DockerHubKey); found || err != nil {
		t.Fatalf("second erase: %v %v", found, err)
	}
	m = readConfig(t, p)
	if _, ok := m["auths"].(map[string]any)[DockerHubKey]; ok || m["auths"].(map[string]any)["other.example"] == nil {
		t.Fatalf("after erase: %v", m)
	}
	// No temporary file is left beside it.
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("%d files in the config directory", len(ents))
	}
}

// TestDockerConfigHelper stores through a credential helper's protocol
// (docker-credential-NAME store/erase, JSON on stdin) and keeps the
// secret out of the file.
func TestDockerConfigHelper(t *testing.T) {
	dir := t.TempDir()
	bin := t.TempDir()
	log := filepath.Join(dir, "helper.log")
	script := "#!/bin/sh\necho \"$1 $(cat)\" >> " + log + "\n"
	if err := os.WriteFile(filepath.Join(bin, "docker-credential-fake"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	t.Setenv("DOCKER_CONFIG", dir)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"credHelpers":{"reg.example:5000":"fake"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadDockerConfig()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Store("reg.example:5000", "bob", "secret"); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	if strings.Contains(string(data), "c2VjcmV0") || strings.Contains(string(data), "secret") {
		t.Fatalf("secret in the file: %s", data)
	}
	if found, err := c.Erase("reg.example:5000"); !found || err != nil {
		t.Fatalf("erase: %v %v", found, err)
	}
	out, _ := os.ReadFile(log)
	want := `store {"Secret":"secret","ServerURL":"reg.example:5000","Username":"bob"}` + "\nerase reg.example:5000\n"
	if string(out) != want {
		t.Fatalf("helper saw:\n%s\nwant:\n%s", out, want)
	}
}
