package network

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/atomicfile"
)

// Entry is what a network's resolver knows of one instance: its address,
// the names it answers to (name, short ID, aliases) and the name
// servers it asked for. Each is the file ROOT/networks/NAME/names/ID.
type Entry struct {
	ID    string     `json:"id"`
	IP    netip.Addr `json:"ip"`
	Names []string   `json:"names"`
	DNS   []string   `json:"dns,omitempty"`
}

func (s *Store) entryPath(n *Network, id string) string {
	return filepath.Join(s.dir, n.Name, "names", id)
}

// AddEntry records e on n, for the resolvers of n's instances.
func (s *Store) AddEntry(n *Network, e Entry) error {
	for i, name := range e.Names {
		e.Names[i] = strings.ToLower(name)
	}
	b, _ := json.Marshal(e)
	if err := os.MkdirAll(filepath.Join(s.dir, n.Name, "names"), 0o700); err != nil {
		return fmt.Errorf("network %s: %w", n.Name, err)
	}
	if err := atomicfile.Write(s.entryPath(n, e.ID), b, 0o600); err != nil {
		return fmt.Errorf("network %s: names of %s: %w", n.Name, e.ID[:12], err)
	}
	return nil
}

// RemoveEntry removes instance id's entry on n.
func (s *Store) RemoveEntry(n *Network, id string) {
	os.Remove(s.entryPath(n, id))
}

// Names is a network's names as its resolver sees them: read from the
// entries on disk, again whenever the directory changed.
type Names struct {
	dir string

	mu      sync.Mutex
	checked time.Time
	mtime   time.Time
	entries []Entry
}

// Names returns n's names.
func (s *Store) Names(n *Network) *Names {
	return &Names{dir: filepath.Join(s.dir, n.Name, "names")}
}

func (ns *Names) load() []Entry {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	now := time.Now()
	if now.Sub(ns.checked) < 50*time.Millisecond && ns.entries != nil {
		return ns.entries
	}
	ns.checked = now
	fi, err := os.Stat(ns.dir)
	if err != nil {
		ns.entries = []Entry{}
		return ns.entries
	}
	if fi.ModTime().Equal(ns.mtime) && ns.entries != nil {
		return ns.entries
	}
	ns.mtime = fi.ModTime()
	ents, _ := os.ReadDir(ns.dir)
	out := []Entry{}
	for _, d := range ents {
		if strings.HasPrefix(d.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(ns.dir, d.Name()))
		if err != nil {
			continue
		}
		var e Entry
		if json.Unmarshal(b, &e) == nil && e.IP.IsValid() {
			out = append(out, e)
		}
	}
	ns.entries = out
	return out
}

// Lookup returns the addresses of the instances that answer to name
// (lower case, without a trailing dot).
func (ns *Names) Lookup(name string) []netip.Addr {
	var out []netip.Addr
	for _, e := range ns.load() {
		for _, n := range e.Names {
			if n == name {
				out = append(out, e.IP)
				break
			}
		}
	}
	return out
}

// Reverse returns the names of the instance at ip.
func (ns *Names) Reverse(ip netip.Addr) []string {
	for _, e := range ns.load() {
		if e.IP == ip && len(e.Names) > 0 {
			return e.Names[:1]
		}
	}
	return nil
}

// DNSOf returns the name servers the instance at ip asked for.
func (ns *Names) DNSOf(ip netip.Addr) []string {
	for _, e := range ns.load() {
		if e.IP == ip {
			return e.DNS
		}
	}
	return nil
}

// HostsFile is an instance's /etc/hosts, as Docker writes it: loopback,
// the IPv6 names, the --add-host lines, then the instance's own address
// and host name.
func HostsFile(ip netip.Addr, hostname string, extra [][2]string) []byte {
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")
	for _, h := range extra {
		fmt.Fprintf(&b, "%s\t%s\n", h[1], h[0])
	}
	if ip.IsValid() {
		fmt.Fprintf(&b, "%s\t%s\n", ip, hostname)
	}
	return []byte(b.String())
}
