package portmap

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/errdefs"
)

// Parse reads one -p/--publish value as Docker does,
// [IP:][HOSTPORT:]PORT[/PROTO], into its mappings, ranges expanded:
//
//   - "80": port 80 on a free host port, every address;
//   - "8080:80", "127.0.0.1:8080:80": a fixed host port;
//   - "127.0.0.1::80": a free host port on that address;
//   - "0:80": host port 0 is also a free one, as in Docker;
//   - "80-82": three ports, each on its own free host port;
//   - "8000-8002:80-82": ranges of equal length map one to one;
//   - "8000-8002:80": one container port and a host range: one free
//     host port picked from the range (HostPort 8000, HostPortEnd 8002);
//   - "8000:80-82": a container range with a host range of another
//     length is refused, as Docker refuses it.
//
// PROTO is tcp (the default) or udp, in any case. The host IP may be
// bracketed ("[127.0.0.1]::80"); an IPv6 one is refused with
// errdefs.ErrNotSupported, and so is sctp. Every other refusal wraps
// errdefs.ErrInvalid and names the value at fault.
func Parse(spec string) ([]Mapping, error) {
	fail := func(err error) ([]Mapping, error) {
		return nil, fmt.Errorf("publish %q: %w", spec, err)
	}
	ipPart, hostPart, portPart := splitSpec(spec)
	port, proto, _ := strings.Cut(portPart, "/")
	if port == "" {
		return fail(fmt.Errorf("no container port: %w", errdefs.ErrInvalid))
	}
	proto, err := parseProto(proto)
	if err != nil {
		return fail(err)
	}
	var ip netip.Addr
	if ipPart != "" {
		if ip, err = parseHostIP(ipPart); err != nil {
			return fail(err)
		}
	}
	first, last, err := parseRange("container port", port, false)
	if err != nil {
		return fail(err)
	}
	var hostFirst, hostLast uint16
	if hostPart != "" {
		if hostFirst, hostLast, err = parseRange("host port", hostPart, true); err != nil {
			return fail(err)
		}
		if first != last && hostLast-hostFirst != last-first {
			return fail(fmt.Errorf("host ports %s and container ports %s are ranges of different lengths: %w", hostPart, port, errdefs.ErrInvalid))
		}
	}
	ms := make([]Mapping, 0, int(last-first)+1)
	for i := 0; i <= int(last-first); i++ {
		m := Mapping{Proto: proto, HostIP: ip, Port: first + uint16(i)}
		switch {
		case hostPart == "":
		case first == last && hostFirst != hostLast:
			m.HostPort, m.HostPortEnd = hostFirst, hostLast
		default:
			m.HostPort = hostFirst + uint16(i)
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// ParseExposed turns an image config's ExposedPorts ("80/tcp", "53/udp",
// "8000-8001/tcp"; a key without protocol is tcp) into what -P publishes,
// as Docker does: every exposed port, ranges expanded, on a free host
// port on every address. The result is sorted by port, then protocol,
// and holds each port once.
func ParseExposed(exposed map[string]struct{}) ([]Mapping, error) {
	var ms []Mapping
	for key := range exposed {
		port, proto, _ := strings.Cut(key, "/")
		proto, err := parseProto(proto)
		if err != nil {
			return nil, fmt.Errorf("exposed port %q: %w", key, err)
		}
		if port == "" {
			return nil, fmt.Errorf("exposed port %q: no port: %w", key, errdefs.ErrInvalid)
		}
		first, last, err := parseRange("port", port, false)
		if err != nil {
			return nil, fmt.Errorf("exposed port %q: %w", key, err)
		}
		for p := int(first); p <= int(last); p++ {
			ms = append(ms, Mapping{Proto: proto, Port: uint16(p)})
		}
	}
	slices.SortFunc(ms, func(a, b Mapping) int {
		if a.Port != b.Port {
			return int(a.Port) - int(b.Port)
		}
		return strings.Compare(a.Proto, b.Proto)
	})
	return slices.Compact(ms), nil
}

// splitSpec cuts a -p value at its colons as Docker does: the last part
// is the container port, the one before it the host port, and all before
// that the host IP (so an unbracketed IPv6 address keeps its colons).
func splitSpec(spec string) (ip, hostPort, port string) {
	parts := strings.Split(spec, ":")
	n := len(parts)
	switch n {
	case 1:
		return "", "", parts[0]
	case 2:
		return "", parts[0], parts[1]
	default:
		return strings.Join(parts[:n-2], ":"), parts[n-2], parts[n-1]
	}
}

// parseProto is the protocol in lower case, tcp when empty.
func parseProto(proto string) (string, error) {
	switch p := strings.ToLower(proto); p {
	case "":
		return "tcp", nil
	case "tcp", "udp":
		return p, nil
	case "sctp":
		return "", fmt.Errorf("protocol sctp is not published by berth (tcp or udp only): %w", errdefs.ErrNotSupported)
	default:
		return "", fmt.Errorf("protocol %q is not tcp or udp: %w", proto, errdefs.ErrInvalid)
	}
}

// parseHostIP reads a host IP, bracketed or not; berth listens on IPv4
// only.
func parseHostIP(s string) (netip.Addr, error) {
	raw := s
	if strings.HasPrefix(raw, "[") && strings.HasSuffix(raw, "]") {
		raw = raw[1 : len(raw)-1]
	}
	ip, err := netip.ParseAddr(raw)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("host IP %q is not an IP address: %w", s, errdefs.ErrInvalid)
	}
	if !ip.Is4() {
		return netip.Addr{}, fmt.Errorf("host IP %s is IPv6; berth publishes on IPv4 only: %w", s, errdefs.ErrNotSupported)
	}
	return ip, nil
}

// parseRange reads "N" or "N-M" (N <= M), ports 1 to 65535. A lone "0"
// is taken when zeroOK (a host port: any free one).
func parseRange(what, s string, zeroOK bool) (first, last uint16, err error) {
	lo, hi, isRange := strings.Cut(s, "-")
	if first, err = parsePort(what, s, lo, zeroOK && !isRange); err != nil {
		return 0, 0, err
	}
	if !isRange {
		return first, first, nil
	}
	if last, err = parsePort(what, s, hi, false); err != nil {
		return 0, 0, err
	}
	if last < first {
		return 0, 0, fmt.Errorf("%s range %q ends before it starts: %w", what, s, errdefs.ErrInvalid)
	}
	return first, last, nil
}

// parsePort reads one port number n of the value s.
func parsePort(what, s, n string, zeroOK bool) (uint16, error) {
	if n == "" || strings.Trim(n, "0123456789") != "" {
		return 0, fmt.Errorf("%s %q is not a port number or range: %w", what, s, errdefs.ErrInvalid)
	}
	v, err := strconv.ParseUint(n, 10, 16)
	if err != nil || (v == 0 && !zeroOK) {
		return 0, fmt.Errorf("%s %q is out of range 1-65535: %w", what, s, errdefs.ErrInvalid)
	}
	return uint16(v), nil
}
