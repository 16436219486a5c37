// Package network owns berth's networks: their records under the data
// root (ROOT/networks), the addresses handed out on each, the bridge that
// embodies each on the host, and the wiring of an instance's network
// namespace to it (a veth whose inner end is the namespace's eth0).
//
// One model serves both kinds of instance: a container's processes live
// in the namespace; a VM's QEMU runs there and takes eth0 over for its
// guest (internal/vm). Publishing, NAT and names are written once, here
// and in internal/firewall and internal/netdns, and behave the same for
// both.
//
// Nothing here needs a daemon. Every record is a file; an address is
// claimed by creating its file with O_EXCL, so concurrent starts can
// never share one, and the clean-up of an instance whose owner died
// releases what its record says it held.
package network

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/atomicfile"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/firewall"
	"github.com/berth-dev/berth/internal/lockfile"
	"golang.org/x/sys/unix"
)

// Trace, when not nil, is told when each step of an attach is done
// (BERTH_TRACE's profile of start-up).
var Trace func(step string)

func trace(step string) {
	if Trace != nil {
		Trace(step)
	}
}

// DefaultName is the default network's name, Docker's.
const DefaultName = "bridge"

// DefaultBridge is the default network's bridge device.
const DefaultBridge = "berth0"

// Network is one network's record.
type Network struct {
	Name    string       `json:"name"`
	ID      string       `json:"id"`
	Driver  string       `json:"driver"`
	Subnet  netip.Prefix `json:"subnet"`
	Gateway netip.Addr   `json:"gateway"`
	Bridge  string       `json:"bridge"`
	Created time.Time    `json:"created"`
}

// Default reports whether n is the default network, which, as Docker's,
// has no names of its own: its instances get the host's name servers.
func (n *Network) Default() bool { return n.Name == DefaultName }

// ShortID is the 12-character form of the network's ID.
func (n *Network) ShortID() string { return n.ID[:12] }

// Store keeps the network records under ROOT/networks: NAME.json per
// network and a directory NAME/ of what its instances hold.
type Store struct {
	dir string

	fwOnce sync.Once
	fw     *firewall.Firewall
	fwErr  error
}

// firewall is the store's handle on berth's firewall rules, in the
// network namespace of the first caller's thread (the host's).
func (s *Store) firewall() (*firewall.Firewall, error) {
	s.fwOnce.Do(func() { s.fw, s.fwErr = firewall.New(filepath.Join(s.dir, ".firewall.lock")) })
	return s.fw, s.fwErr
}

// Open opens (creating) the network store under root.
func Open(root string) (*Store, error) {
	dir := filepath.Join(root, "networks")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("network store %s: %w", dir, err)
	}
	return &Store{dir: dir}, nil
}

// Close releases the store's handle on the firewall, if it made one.
func (s *Store) Close() {
	if s.fw != nil {
		s.fw.Close()
	}
}

// lock serialises changes to the set of networks (create, remove) across
// processes.
func (s *Store) lock() (func(), error) {
	f, err := lockfile.Open(filepath.Join(s.dir, ".lock"), unix.LOCK_EX)
	if err != nil {
		return nil, fmt.Errorf("network store: %w", err)
	}
	return func() { f.Close() }, nil
}

var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// CheckName refuses a name Docker would refuse, and the names of the
// modes that are not networks.
func CheckName(name string) error {
	if !validName.MatchString(name) {
		return fmt.Errorf("network name %q: want letters, digits, '_', '.' and '-', starting with a letter or digit, at most 63: %w", name, errdefs.ErrInvalid)
	}
	switch name {
	case "none", "host", "default", "container":
		return fmt.Errorf("network name %q is reserved: %w", name, errdefs.ErrInvalid)
	}
	return nil
}

// CreateOptions are what `network create` takes.
type CreateOptions struct {
	Subnet  netip.Prefix // zero: the next free /24 of berth's pool
	Gateway netip.Addr   // zero: the subnet's first address
}

// Create records a new network. Its subnet must overlap no other
// network's and no route of the host's; its bridge is made when the
// first instance attaches (Ensure).
func (s *Store) Create(name string, o CreateOptions) (*Network, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	return s.create(name, o)
}

func (s *Store) create(name string, o CreateOptions) (*Network, error) {
	if _, err := s.read(name); err == nil {
		return nil, fmt.Errorf("network %s exists already: %w", name, errdefs.ErrConflict)
	}
	nets, err := s.List()
	if err != nil {
		return nil, err
	}
	routes, err := hostRoutes()
	if err != nil {
		return nil, err
	}
	if !o.Subnet.IsValid() {
		if o.Subnet, err = pickSubnet(name, nets, routes); err != nil {
			return nil, err
		}
	}
	if err := checkSubnet(o.Subnet, nets, routes); err != nil {
		return nil, err
	}
	gw := o.Gateway
	if !gw.IsValid() {
		gw = o.Subnet.Masked().Addr().Next()
	}
	if err := checkGateway(o.Subnet, gw); err != nil {
		return nil, err
	}
	id := make([]byte, 32)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	n := &Network{Name: name, ID: hex.EncodeToString(id), Driver: "bridge", Subnet: o.Subnet.Masked(),
		Gateway: gw, Created: time.Now().UTC()}
	n.Bridge = "berth" + n.ID[:10]
	if n.Default() && !linkExists(DefaultBridge) {
		// berth0, unless a device has the name already (another data
		// root's default network, or one left over): two roots must
		// never share a bridge, whose addresses each hands out alone.
		n.Bridge = DefaultBridge
	}
	if err := os.MkdirAll(filepath.Join(s.dir, name, "ips"), 0o700); err != nil {
		return nil, fmt.Errorf("network %s: %w", name, err)
	}
	if err := os.MkdirAll(filepath.Join(s.dir, name, "names"), 0o700); err != nil {
		return nil, fmt.Errorf("network %s: %w", name, err)
	}
	b, _ := json.MarshalIndent(n, "", "  ")
	if err := atomicfile.Write(s.path(name), b, 0o600); err != nil {
		return nil, fmt.Errorf("network %s: %w", name, err)
	}
	return n, nil
}

func checkGateway(subnet netip.Prefix, gw netip.Addr) error {
	if !subnet.Contains(gw) {
		return fmt.Errorf("gateway %s is outside subnet %s: %w", gw, subnet, errdefs.ErrInvalid)
	}
	if gw == subnet.Masked().Addr() || gw == broadcast(subnet) {
		return fmt.Errorf("gateway %s: the subnet's network or broadcast address: %w", gw, errdefs.ErrInvalid)
	}
	return nil
}

// checkSubnet refuses a subnet that is not IPv4, too small to hold an
// instance, or overlapping another network or a host route.
func checkSubnet(p netip.Prefix, nets []*Network, routes []route) error {
	if !p.Addr().Is4() {
		return fmt.Errorf("subnet %s: only IPv4 subnets are supported: %w", p, errdefs.ErrInvalid)
	}
	if p.Bits() > 30 || p.Bits() < 8 {
		return fmt.Errorf("subnet %s: want a prefix length from /8 to /30: %w", p, errdefs.ErrInvalid)
	}
	if a := p.Addr(); a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() || a.IsUnspecified() {
		return fmt.Errorf("subnet %s: not a unicast range a network can use: %w", p, errdefs.ErrInvalid)
	}
	for _, n := range nets {
		if n.Subnet.Overlaps(p) {
			return fmt.Errorf("subnet %s overlaps network %s (%s): %w", p, n.Name, n.Subnet, errdefs.ErrConflict)
		}
	}
	bridges := map[string]bool{}
	for _, n := range nets {
		bridges[n.Bridge] = true // its record was checked above
	}
	for _, r := range routes {
		if r.dst.Overlaps(p) && !bridges[r.dev] {
			return fmt.Errorf("subnet %s overlaps the host's route to %s on %s: %w", p, r.dst, r.dev, errdefs.ErrConflict)
		}
	}
	return nil
}

// berth's pools: the default network takes a /16 of its own, others a
// /24 each, away from Docker's (172.17/16 and up) and Podman's (10.88/16,
// 10.89/16).
var (
	defaultPool = []netip.Prefix{netip.MustParsePrefix("10.213.0.0/16"), netip.MustParsePrefix("10.215.0.0/16"), netip.MustParsePrefix("10.217.0.0/16")}
	userPool    = netip.MustParsePrefix("10.214.0.0/16")
)

func pickSubnet(name string, nets []*Network, routes []route) (netip.Prefix, error) {
	if name == DefaultName {
		for _, p := range defaultPool {
			if checkSubnet(p, nets, routes) == nil {
				return p, nil
			}
		}
		return netip.Prefix{}, fmt.Errorf("network %s: every subnet of berth's pool overlaps a host route: give --subnet: %w", name, errdefs.ErrUnavailable)
	}
	base := userPool.Addr().As4()
	for i := 0; i < 256; i++ {
		base[2] = byte(i)
		p := netip.PrefixFrom(netip.AddrFrom4(base), 24)
		if checkSubnet(p, nets, routes) == nil {
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("network %s: berth's pool %s is used up: give --subnet: %w", name, userPool, errdefs.ErrUnavailable)
}

func broadcast(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= 1<<(32-p.Bits()) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func (s *Store) path(name string) string { return filepath.Join(s.dir, name+".json") }

func (s *Store) read(name string) (*Network, error) {
	b, err := os.ReadFile(s.path(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("network %s: %w", name, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("network %s: %w", name, err)
	}
	var n Network
	if err := json.Unmarshal(b, &n); err != nil {
		return nil, fmt.Errorf("network %s: record unreadable: %v", name, err)
	}
	return &n, nil
}

// Get finds a network by name, full ID or unique ID prefix. The default
// network is made on first use.
func (s *Store) Get(ref string) (*Network, error) {
	if ref == DefaultName {
		return s.Default()
	}
	if n, err := s.read(ref); err == nil || !errors.Is(err, errdefs.ErrNotFound) || !validName.MatchString(ref) {
		return n, err
	}
	nets, err := s.List()
	if err != nil {
		return nil, err
	}
	var found *Network
	for _, n := range nets {
		if strings.HasPrefix(n.ID, ref) {
			if found != nil {
				return nil, fmt.Errorf("network %s: more than one network's ID starts so: %w", ref, errdefs.ErrInvalid)
			}
			found = n
		}
	}
	if found == nil {
		return nil, fmt.Errorf("network %s: %w", ref, errdefs.ErrNotFound)
	}
	return found, nil
}

// Default returns the default network, recording it on first use.
func (s *Store) Default() (*Network, error) {
	if n, err := s.read(DefaultName); err == nil {
		return n, nil
	}
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if n, err := s.read(DefaultName); err == nil {
		return n, nil
	}
	return s.create(DefaultName, CreateOptions{})
}

// List returns every network, by name.
func (s *Store) List() ([]*Network, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("network store: %w", err)
	}
	var out []*Network
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() {
			continue
		}
		if n, err := s.read(name); err == nil {
			out = append(out, n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Remove removes network n: refused while an instance names it (inUse)
// or holds one of its addresses, unless stale says the holder is gone.
// Its bridge and firewall rules go first.
func (s *Store) Remove(n *Network, inUse []string, stale Stale) error {
	if n.Default() {
		return fmt.Errorf("network %s is the default network and cannot be removed: %w", n.Name, errdefs.ErrInvalid)
	}
	if len(inUse) > 0 {
		return fmt.Errorf("network %s is in use by %s: %w", n.Name, strings.Join(inUse, ", "), errdefs.ErrConflict)
	}
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	if held := s.holders(n, stale); len(held) > 0 {
		return fmt.Errorf("network %s is in use by %s: %w", n.Name, strings.Join(held, ", "), errdefs.ErrConflict)
	}
	if err := s.teardown(n); err != nil {
		return err
	}
	if err := os.Remove(s.path(n.Name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("network %s: %w", n.Name, err)
	}
	return os.RemoveAll(filepath.Join(s.dir, n.Name))
}
