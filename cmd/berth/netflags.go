package main

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/network"
	"github.com/berth-dev/berth/internal/portmap"
)

// defaultNetwork is the network `run` attaches to when --network is not
// given: Docker's default bridge, unless BERTH_DEFAULT_NETWORK names
// another (the test suite runs with "none", so that only the tests of
// the network touch one, and only in namespaces of their own).
func defaultNetwork() string {
	if v := os.Getenv("BERTH_DEFAULT_NETWORK"); v != "" {
		return v
	}
	return network.DefaultName
}

// checkNetFlags checks run's network flags against each other, as far as
// they can be without the network's record.
func checkNetFlags(f *runFlags) error {
	o, c := &f.opts, &f.net
	c.Network = f.network
	switch c.Network {
	case "":
		return fmt.Errorf("--network: empty: %w", errdefs.ErrInvalid)
	case "none", "host":
		o.NetworkHost = c.Network == "host"
		for flag, set := range map[string]bool{"-p": len(c.Publish) > 0, "-P": f.publishAll, "--ip": c.IP != "",
			"--mac-address": c.MAC != "", "--network-alias": len(c.Aliases) > 0} {
			if set {
				return fmt.Errorf("%s: needs a network, not --network %s: %w", flag, c.Network, errdefs.ErrInvalid)
			}
		}
		if len(c.DNS) > 0 || len(c.AddHosts) > 0 {
			return fmt.Errorf("--dns and --add-host: need a network, not --network %s: %w", c.Network, errdefs.ErrInvalid)
		}
		return nil
	}
	if err := network.CheckName(c.Network); err != nil && c.Network != network.DefaultName {
		return fmt.Errorf("--network %q: %w", c.Network, err)
	}
	if c.Network == network.DefaultName && c.IP != "" {
		return fmt.Errorf("--ip %s: an address can be asked for on a user network only: %w", c.IP, errdefs.ErrInvalid)
	}
	if c.Network == network.DefaultName && len(c.Aliases) > 0 {
		return fmt.Errorf("--network-alias: aliases work on a user network only: %w", errdefs.ErrInvalid)
	}
	if c.IP != "" {
		if ip, err := netip.ParseAddr(c.IP); err != nil || !ip.Is4() {
			return fmt.Errorf("--ip %q: not an IPv4 address: %w", c.IP, errdefs.ErrInvalid)
		}
	}
	if c.MAC != "" {
		if _, err := network.ParseMAC(c.MAC); err != nil {
			return err
		}
	}
	if _, err := network.ParseDNS(c.DNS); err != nil {
		return err
	}
	if _, err := network.ParseAddHosts(c.AddHosts, netip.IPv4Unspecified()); err != nil {
		return err
	}
	for _, p := range c.Publish {
		if _, err := portmap.Parse(p); err != nil {
			return err
		}
	}
	return nil
}

// netConfig is the NetConfig of a new instance: the flags, the network
// checked to exist, and with -P the image's exposed ports.
func netConfig(g *globals, f *runFlags, img ocispec.ImageConfig) (*instance.NetConfig, error) {
	nets, err := network.Open(g.root)
	if err != nil {
		return nil, err
	}
	n, err := nets.Get(f.net.Network)
	if err != nil {
		return nil, fmt.Errorf("--network %s: %w", f.net.Network, err)
	}
	c := f.net
	c.Network = n.Name
	c.Publish = append([]string(nil), c.Publish...)
	if f.publishAll {
		var exposed []string
		for p := range img.ExposedPorts {
			exposed = append(exposed, p)
		}
		sort.Strings(exposed)
		for _, p := range exposed {
			if _, err := portmap.Parse(p); err != nil {
				return nil, fmt.Errorf("-P: the image exposes %w", err)
			}
			c.Publish = append(c.Publish, p)
		}
	}
	return &c, nil
}

// addNetworkFiles binds the instance's /etc/hosts, /etc/resolv.conf and
// /etc/hostname from its directory (written at each start), unless a
// volume is mounted there.
func addNetworkFiles(spec *specs.Spec, dir string) {
	have := map[string]bool{}
	for _, m := range spec.Mounts {
		have[m.Destination] = true
	}
	for _, f := range network.Files {
		if have[f[0]] {
			continue
		}
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: f[0], Source: filepath.Join(dir, f[1]), Type: "bind", Options: []string{"rbind", "rprivate"}})
	}
}
