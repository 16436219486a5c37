package image

import (
	"fmt"
	"regexp"
	"strings"
	"sync"

	"github.com/berth-dev/berth/internal/errdefs"
)

// The grammar of names, compiled on first use: every berth process (the
// container init among them) links this package, few parse names.
var (
	domainRE    = lazyRegexp(`^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?$`)
	componentRE = lazyRegexp(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)
	tagRE       = lazyRegexp(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
)

func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}

// NormalizeName returns the canonical form of an image name the way Docker
// spells it for humans: a missing tag becomes "latest" and the default
// registry prefixes "docker.io/" and "docker.io/library/" are dropped, so
// "busybox", "busybox:latest" and "docker.io/library/busybox:latest" are all
// "busybox:latest", while "localhost/x:y" stays as it is. Digest references
// (name@sha256:...) are not names and are refused.
func NormalizeName(ref string) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("image name %q: %s: %w", ref, why, errdefs.ErrInvalid)
	}
	if ref == "" {
		return bad("empty")
	}
	if strings.Contains(ref, "@") {
		return bad("digest references are not names")
	}
	repo, tag := ref, "latest"
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		repo, tag = ref[:i], ref[i+1:]
		if !tagRE().MatchString(tag) {
			return bad("invalid tag")
		}
	}
	parts := strings.Split(repo, "/")
	domain := ""
	if len(parts) > 1 && (strings.ContainsAny(parts[0], ".:") || parts[0] == "localhost") {
		domain, parts = parts[0], parts[1:]
		if !domainRE().MatchString(domain) {
			return bad("invalid registry host")
		}
	}
	for _, p := range parts {
		if !componentRE().MatchString(p) {
			return bad("invalid repository component " + fmt.Sprintf("%q", p))
		}
	}
	if domain == "docker.io" || domain == "index.docker.io" {
		domain = ""
		if len(parts) == 2 && parts[0] == "library" {
			parts = parts[1:]
		}
	}
	name := strings.Join(parts, "/")
	if domain != "" {
		name = domain + "/" + name
	}
	if len(name) > 255 {
		return bad("longer than 255 characters")
	}
	return name + ":" + tag, nil
}
