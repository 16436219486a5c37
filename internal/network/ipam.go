package network

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/berth-dev/berth/internal/errdefs"
)

// An address is held by the file ROOT/networks/NAME/ips/ADDR, created
// with O_EXCL and holding the instance's ID: two starts can never share
// one, whichever processes they run in.

func (s *Store) ipPath(n *Network, ip netip.Addr) string {
	return filepath.Join(s.dir, n.Name, "ips", ip.String())
}

// Stale, when set, says whether the instance id that holds an address is
// gone or stopped, so its address may be taken back (its owner died
// before releasing it, and no reconcile has run since).
type Stale func(id string) bool

// Claim takes an address on n for instance id: want when valid (it must
// be in the subnet and free), else the next free one after the last
// handed out, so a freed address is not reused at once (a peer's ARP
// cache may still name the old holder).
func (s *Store) Claim(n *Network, id string, want netip.Addr, stale Stale) (netip.Addr, error) {
	if err := os.MkdirAll(filepath.Join(s.dir, n.Name, "ips"), 0o700); err != nil {
		return netip.Addr{}, fmt.Errorf("network %s: %w", n.Name, err)
	}
	if want.IsValid() {
		if !want.Is4() || !n.Subnet.Contains(want) || want == n.Subnet.Addr() || want == broadcast(n.Subnet) {
			return netip.Addr{}, fmt.Errorf("--ip %s: not an address of network %s (%s): %w", want, n.Name, n.Subnet, errdefs.ErrInvalid)
		}
		if want == n.Gateway {
			return netip.Addr{}, fmt.Errorf("--ip %s: the gateway of network %s: %w", want, n.Name, errdefs.ErrConflict)
		}
		ok, err := s.take(n, want, id, stale)
		if err != nil {
			return netip.Addr{}, err
		}
		if !ok {
			return netip.Addr{}, fmt.Errorf("--ip %s: already in use on network %s: %w", want, n.Name, errdefs.ErrConflict)
		}
		return want, nil
	}
	hint := filepath.Join(s.dir, n.Name, "next")
	start := n.Subnet.Addr().Next()
	if b, err := os.ReadFile(hint); err == nil {
		if a, err := netip.ParseAddr(strings.TrimSpace(string(b))); err == nil && n.Subnet.Contains(a) {
			start = a
		}
	}
	last := broadcast(n.Subnet)
	size := 1 << (32 - n.Subnet.Bits())
	a := start
	for i := 0; i < size; i++ {
		if a == last || !n.Subnet.Contains(a) {
			a = n.Subnet.Addr().Next()
		}
		if a != n.Gateway {
			ok, err := s.take(n, a, id, stale)
			if err != nil {
				return netip.Addr{}, err
			}
			if ok {
				_ = os.WriteFile(hint, []byte(a.Next().String()+"\n"), 0o600)
				return a, nil
			}
		}
		a = a.Next()
	}
	return netip.Addr{}, fmt.Errorf("network %s: every address of %s is in use: %w", n.Name, n.Subnet, errdefs.ErrUnavailable)
}

// take claims ip for id, taking it back from a stale holder.
func (s *Store) take(n *Network, ip netip.Addr, id string, stale Stale) (bool, error) {
	p := s.ipPath(n, ip)
	for try := 0; try < 2; try++ {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			_, werr := f.WriteString(id)
			if cerr := f.Close(); werr == nil {
				werr = cerr
			}
			if werr != nil {
				os.Remove(p)
				return false, fmt.Errorf("network %s: claim %s: %w", n.Name, ip, werr)
			}
			return true, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return false, fmt.Errorf("network %s: claim %s: %w", n.Name, ip, err)
		}
		holder, rerr := os.ReadFile(p)
		if rerr != nil || try > 0 || stale == nil || len(holder) == 0 || string(holder) == id || !stale(string(holder)) {
			return string(holder) == id, nil
		}
		// Take it back only if it still names the stale holder.
		if cur, _ := os.ReadFile(p); string(cur) == string(holder) {
			os.Remove(p)
		}
	}
	return false, nil
}

// Release gives back ip on n if id holds it.
func (s *Store) Release(n *Network, ip netip.Addr, id string) {
	p := s.ipPath(n, ip)
	if b, err := os.ReadFile(p); err == nil && string(b) == id {
		os.Remove(p)
	}
}

// holders lists the instances that hold addresses on n (short IDs),
// giving back the claims of those stale says are gone.
func (s *Store) holders(n *Network, stale Stale) []string {
	var ids []string
	for id, ip := range s.Holders(n) {
		if stale != nil && stale(id) {
			s.Release(n, ip, id)
			continue
		}
		if len(id) > 12 {
			id = id[:12]
		}
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Holders lists the instances (full IDs) that hold an address on n.
func (s *Store) Holders(n *Network) map[string]netip.Addr {
	dir := filepath.Join(s.dir, n.Name, "ips")
	ents, _ := os.ReadDir(dir)
	out := map[string]netip.Addr{}
	for _, e := range ents {
		a, err := netip.ParseAddr(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil && len(b) > 0 {
			out[string(b)] = a
		}
	}
	return out
}
