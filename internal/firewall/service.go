package firewall

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/errdefs"
)

// Service is one published port of a replicated service: packets to
// HostIP:HostPort over Proto are spread over the service's backends. As
// with Port, an invalid HostIP or 0.0.0.0 means every local address, and
// ListServices reports it as 0.0.0.0.
//
// Name (a compose project and service, "shop_web") names the service's
// objects in berth's table; it is 1 to 200 bytes of letters, digits,
// '_', '-' and '.', as compose's project and service names are. Two
// Services with one Name and different ports are two entries.
type Service struct {
	Name     string
	Proto    string // "tcp" or "udp"
	HostIP   netip.Addr
	HostPort uint16
}

// Backend is one replica's address and port behind a Service.
type Backend struct {
	Addr netip.Addr
	Port uint16
}

// String is "service shop_web tcp/0.0.0.0:8080".
func (s Service) String() string {
	return fmt.Sprintf("service %s %s", s.Name, s.hostSide().hostKey())
}

// String is "10.213.0.5:80".
func (b Backend) String() string { return netip.AddrPortFrom(b.Addr, b.Port).String() }

// hostSide is the Port whose host side is s's, with no destination, for
// the conflict checks ports and services share.
func (s Service) hostSide() Port {
	return Port{Proto: s.Proto, HostIP: s.HostIP, HostPort: s.HostPort}
}

// maxNameLen keeps a service's chain name ("svc/" NAME
// "/tcp/255.255.255.255/65535") within nf_tables' 255 bytes.
const maxNameLen = 200

// normalize checks s and returns it with its host address unmapped and
// every address spelt 0.0.0.0.
func (s Service) normalize() (Service, error) {
	if s.Name == "" || len(s.Name) > maxNameLen || strings.IndexFunc(s.Name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.')
	}) >= 0 {
		return s, fmt.Errorf("service %q: name must be 1 to %d letters, digits, '_', '-' or '.': %w", s.Name, maxNameLen, errdefs.ErrInvalid)
	}
	host, err := normalizeHost(s.String(), s.Proto, s.HostIP, s.HostPort)
	if err != nil {
		return s, err
	}
	s.HostIP = host
	return s, nil
}

// normalizeBackends checks the backends of s and returns them unmapped,
// in the order given. A backend listed twice is refused: it would take
// twice its share.
func normalizeBackends(s Service, backends []Backend) ([]Backend, error) {
	out := make([]Backend, 0, len(backends))
	for _, b := range backends {
		b.Addr = b.Addr.Unmap()
		switch {
		case !b.Addr.Is4() || b.Addr.IsUnspecified():
			return nil, fmt.Errorf("%s: backend %s is not an IPv4 address: %w", s, b, errdefs.ErrInvalid)
		case b.Port == 0:
			return nil, fmt.Errorf("%s: backend %s: port 0: %w", s, b, errdefs.ErrInvalid)
		case slices.Contains(out, b):
			return nil, fmt.Errorf("%s: backend %s is listed twice: %w", s, b, errdefs.ErrInvalid)
		}
		out = append(out, b)
	}
	return out, nil
}

// svcChainPrefix starts the name of every service chain. The name uses
// only characters nft's identifiers allow, so `nft list ruleset` reads
// back.
const svcChainPrefix = "svc/"

// chainName is the name of normalized s's chain:
// "svc/shop_web/tcp/0.0.0.0/8080".
func (s Service) chainName() string {
	return svcChainPrefix + s.Name + "/" + s.Proto + "/" + s.HostIP.String() + "/" + strconv.Itoa(int(s.HostPort))
}

// parseChainName reads back a name chainName made.
func parseChainName(name string) (Service, bool) {
	rest, ok := strings.CutPrefix(name, svcChainPrefix)
	if !ok {
		return Service{}, false
	}
	f := strings.Split(rest, "/")
	if len(f) != 4 {
		return Service{}, false
	}
	ip, err := netip.ParseAddr(f[2])
	if err != nil {
		return Service{}, false
	}
	port, err := strconv.ParseUint(f[3], 10, 16)
	if err != nil {
		return Service{}, false
	}
	s, err := Service{Name: f[0], Proto: f[1], HostIP: ip, HostPort: uint16(port)}.normalize()
	return s, err == nil && s.chainName() == name
}
