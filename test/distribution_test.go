package test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testutil"
)

// testCert writes a self-signed certificate for 127.0.0.1 and its key
// into dir and returns their paths.
func testCert(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "berth test registry"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// distributionRegistry starts Debian's docker-registry (the CNCF
// distribution registry) on 127.0.0.1 with TLS and htpasswd auth for
// user:pass, its own config and data directory, and returns its
// host:port and the certificate to trust. It is stopped after the test.
func distributionRegistry(t *testing.T, user, pass string) (host, cert string) {
	t.Helper()
	testutil.NeedTool(t, "docker-registry")
	testutil.NeedTool(t, "htpasswd")
	dir := t.TempDir()
	cert, key := testCert(t, dir)
	out, err := exec.Command("htpasswd", "-Bbn", user, pass).Output()
	if err != nil {
		t.Fatalf("htpasswd: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "htpasswd"), out, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host = l.Addr().String()
	l.Close()
	config := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: %s
  tls:
    certificate: %s
    key: %s
auth:
  htpasswd:
    realm: berth-test
    path: %s
`, filepath.Join(dir, "data"), host, cert, key, filepath.Join(dir, "htpasswd"))
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := exec.Command("docker-registry", "serve", filepath.Join(dir, "config.yml"))
	var log bytes.Buffer
	srv.Stdout, srv.Stderr = &log, &log
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Process.Kill()
		srv.Wait()
		if t.Failed() {
			t.Logf("docker-registry's log:\n%s", log.String())
		}
	})
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	waitFor(t, "docker-registry to listen", func() bool {
		resp, err := client.Get("https://" + host + "/v2/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusUnauthorized
	})
	return host, cert
}

// TestPullFromDistribution pulls over TLS with htpasswd credentials from
// docker login's config file what skopeo pushed to the distribution
// registry, and refuses a wrong password with one line.
func TestPullFromDistribution(t *testing.T) {
	host, cert := distributionRegistry(t, "alice", "s3cret")
	layout := ociLayout(t, testutilRootfs(t), "v1")
	ref := host + "/e2e/dist:v1"
	out, err := exec.Command("skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false",
		"--dest-creds", "alice:s3cret", "oci:"+layout+":v1", "docker://"+ref).CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo copy: %v\n%s", err, out)
	}
	dockerConfig := func(pass string) []string {
		dir := t.TempDir()
		auth := base64.StdEncoding.EncodeToString([]byte("alice:" + pass))
		if err := os.WriteFile(filepath.Join(dir, "config.json"), fmt.Appendf(nil, `{"auths":{%q:{"auth":%q}}}`, host, auth), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{"DOCKER_CONFIG=" + dir, "SSL_CERT_FILE=" + cert}
	}
	before := must(t, "image", "ls", "--format", "json")
	r := berthEnvIn(t, dockerConfig("wrong"), nil, "pull", ref)
	if r.code != 125 || !strings.HasPrefix(r.stderr, "berth pull: "+ref+": ") || !strings.Contains(r.stderr, "credentials") || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("pull with a wrong password: exit %d, stderr %q", r.code, r.stderr)
	}
	if after := must(t, "image", "ls", "--format", "json"); after != before {
		t.Fatalf("a refused pull changed the store")
	}
	r = berthEnvIn(t, dockerConfig("s3cret"), nil, "pull", "-q", ref)
	if r.code != 0 || r.stdout != ref+"\n" {
		t.Fatalf("pull: exit %d, stdout %q, stderr %s", r.code, r.stdout, r.stderr)
	}
	if out := must(t, "run", "--rm", "--pull", "never", ref, "echo", "from distribution"); out != "from distribution\n" {
		t.Fatalf("run: %q", out)
	}
	must(t, "image", "rm", ref)
}
