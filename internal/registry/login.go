package registry

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/berth-dev/berth/internal/atomicfile"
	"github.com/berth-dev/berth/internal/errdefs"
)

// DockerHubKey is the key under which Docker keeps Docker Hub's
// credentials in config.json.
const DockerHubKey = "https://index.docker.io/v1/"

// ServerKey turns what the user names a registry by ("docker.io",
// "https://ghcr.io/", "localhost:5000", "" for Docker Hub) into the
// host[:port] to reach and the key of its credentials in config.json, as
// Docker writes them.
func ServerKey(server string) (host, key string, err error) {
	s := strings.TrimPrefix(strings.TrimPrefix(server, "https://"), "http://")
	s, _, _ = strings.Cut(s, "/")
	switch s {
	case "", "docker.io", "index.docker.io", "registry-1.docker.io":
		return "index.docker.io", DockerHubKey, nil
	}
	if strings.ContainsAny(s, " @") {
		return "", "", fmt.Errorf("registry %q: want HOST[:PORT]: %w", server, errdefs.ErrInvalid)
	}
	return s, s, nil
}

// Login checks user and pass against the registry at host (host[:port])
// as docker login does: the registry must accept them for its /v2/
// endpoint (basic auth, or a bearer token exchange without a scope).
func Login(ctx context.Context, host, user, pass string, o Options) error {
	reg, err := registryOf(host, &o)
	if err != nil {
		return err
	}
	rt, err := authTransport(ctx, reg, &authn.Basic{Username: user, Password: pass}, &o, nil)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return classify(host, err)
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		return classify(host, err)
	}
	return nil
}

// DockerConfig is docker's config.json: the file under DOCKER_CONFIG, or
// ~/.docker/config.json. Keys berth does not know are kept as they are.
type DockerConfig struct {
	Path string
	raw  map[string]json.RawMessage
}

// LoadDockerConfig reads the config file (a missing one is empty).
func LoadDockerConfig() (*DockerConfig, error) {
	dir := os.Getenv("DOCKER_CONFIG")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return nil, fmt.Errorf("docker config: %w", err)
		}
		dir = filepath.Join(home, ".docker")
	}
	c := &DockerConfig{Path: filepath.Join(dir, "config.json"), raw: map[string]json.RawMessage{}}
	data, err := os.ReadFile(c.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("docker config: %w", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return c, nil
	}
	if err := json.Unmarshal(data, &c.raw); err != nil {
		return nil, fmt.Errorf("docker config %s: %v: %w", c.Path, err, errdefs.ErrInvalid)
	}
	if c.raw == nil {
		c.raw = map[string]json.RawMessage{}
	}
	return c, nil
}

// auths decodes the "auths" object, entries kept raw.
func (c *DockerConfig) auths() (map[string]json.RawMessage, error) {
	auths := map[string]json.RawMessage{}
	if a, ok := c.raw["auths"]; ok && string(a) != "null" {
		if err := json.Unmarshal(a, &auths); err != nil {
			return nil, fmt.Errorf("docker config %s: auths: %v: %w", c.Path, err, errdefs.ErrInvalid)
		}
	}
	return auths, nil
}

// helper names the credential helper for key: credHelpers' entry for the
// key or its host, else credsStore; "" when credentials live in the file.
func (c *DockerConfig) helper(key string) string {
	var helpers map[string]string
	if h, ok := c.raw["credHelpers"]; ok {
		_ = json.Unmarshal(h, &helpers)
	}
	host, _, _ := ServerKey(key)
	for _, k := range []string{key, host} {
		if h := helpers[k]; h != "" {
			return h
		}
	}
	var store string
	if s, ok := c.raw["credsStore"]; ok {
		_ = json.Unmarshal(s, &store)
	}
	return store
}

// Store records user and pass for the registry key: through the
// credential helper that the file configures for it, else in "auths" as
// base64 "user:pass"; the file is then written atomically with mode 0600.
func (c *DockerConfig) Store(key, user, pass string) error {
	auths, err := c.auths()
	if err != nil {
		return err
	}
	entry := map[string]json.RawMessage{}
	if old, ok := auths[key]; ok {
		_ = json.Unmarshal(old, &entry)
	}
	delete(entry, "auth")
	delete(entry, "username")
	delete(entry, "password")
	delete(entry, "identitytoken")
	if h := c.helper(key); h != "" {
		in, _ := json.Marshal(map[string]string{"ServerURL": key, "Username": user, "Secret": pass})
		if err := runHelper(h, "store", in); err != nil {
			return err
		}
	} else {
		entry["auth"], _ = json.Marshal(base64.StdEncoding.EncodeToString([]byte(user + ":" + pass)))
	}
	auths[key], _ = json.Marshal(entry)
	return c.writeAuths(auths)
}

// Erase removes the credentials of key, from its helper and from the
// file, and reports whether there were any in the file or the helper.
func (c *DockerConfig) Erase(key string) (bool, error) {
	auths, err := c.auths()
	if err != nil {
		return false, err
	}
	_, found := auths[key]
	if h := c.helper(key); h != "" {
		if err := runHelper(h, "erase", []byte(key)); err == nil {
			found = true
		} else if !found {
			return false, nil
		}
	}
	if !found {
		return false, nil
	}
	delete(auths, key)
	return true, c.writeAuths(auths)
}

func (c *DockerConfig) writeAuths(auths map[string]json.RawMessage) error {
	a, err := json.Marshal(auths)
	if err != nil {
		return err
	}
	c.raw["auths"] = a
	data, err := json.MarshalIndent(c.raw, "", "\t")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(c.Path), 0o700); err != nil {
		return fmt.Errorf("docker config: %w", err)
	}
	p := c.Path
	if real, err := filepath.EvalSymlinks(p); err == nil {
		p = real // a linked config.json stays linked, as Docker keeps it
	}
	if err := atomicfile.WriteDurable(p, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("docker config %s: %w", c.Path, err)
	}
	return nil
}

// runHelper runs docker-credential-NAME VERB with in on its standard
// input, as Docker's credential helper protocol says.
func runHelper(name, verb string, in []byte) error {
	cmd := exec.Command("docker-credential-"+name, verb)
	cmd.Stdin = bytes.NewReader(in)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("credential helper docker-credential-%s %s: %s", name, verb, strings.ReplaceAll(msg, "\n", "; "))
	}
	return nil
}
