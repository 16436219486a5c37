package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/lifecycle"
	"github.com/berth-dev/berth/internal/network"
	"github.com/berth-dev/berth/internal/project"
)

func networkStore(g *globals) (*network.Store, error) { return network.Open(g.root) }

func cmdNetworkCreate(g *globals, args []string) error {
	fs := newFlags("network create")
	subnet := fs.String("subnet", "", "the network's IPv4 subnet in CIDR form (default: the next free /24 of 10.214.0.0/16)")
	gateway := fs.String("gateway", "", "the gateway's address, in the subnet (default: its first address)")
	driver := fs.String("driver", "bridge", "the network's driver: bridge")
	fs.StringVar(driver, "d", "bridge", "the network's driver: bridge")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("want one NAME: %w", errdefs.ErrInvalid)
	}
	if *driver != "bridge" {
		return fmt.Errorf("--driver %q: want bridge: %w", *driver, errdefs.ErrInvalid)
	}
	var o network.CreateOptions
	if *subnet != "" {
		p, err := netip.ParsePrefix(*subnet)
		if err != nil {
			return fmt.Errorf("--subnet %q: not a CIDR subnet: %w", *subnet, errdefs.ErrInvalid)
		}
		if p != p.Masked() {
			return fmt.Errorf("--subnet %s: host bits set (the subnet is %s): %w", p, p.Masked(), errdefs.ErrInvalid)
		}
		o.Subnet = p
	}
	if *gateway != "" {
		if *subnet == "" {
			return fmt.Errorf("--gateway needs --subnet: %w", errdefs.ErrInvalid)
		}
		a, err := netip.ParseAddr(*gateway)
		if err != nil {
			return fmt.Errorf("--gateway %q: not an IPv4 address: %w", *gateway, errdefs.ErrInvalid)
		}
		o.Gateway = a
	}
	if fs.Arg(0) == network.DefaultName {
		return fmt.Errorf("network %s exists already (the default network): %w", network.DefaultName, errdefs.ErrConflict)
	}
	st, err := networkStore(g)
	if err != nil {
		return err
	}
	n, err := st.Create(fs.Arg(0), o)
	if err != nil {
		return err
	}
	fmt.Println(n.ID)
	return nil
}

func cmdNetworkLs(g *globals, args []string) error {
	fs := newFlags("network ls")
	format := fs.String("format", "", "output format: json")
	quiet := fs.Bool("q", false, "print the networks' IDs only")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *format != "" && *format != "json" {
		return fmt.Errorf("--format %q: want json: %w", *format, errdefs.ErrInvalid)
	}
	st, err := networkStore(g)
	if err != nil {
		return err
	}
	if _, err := st.Default(); err != nil {
		return err
	}
	nets, err := st.List()
	if err != nil {
		return err
	}
	if *format == "json" {
		return printJSON(nets)
	}
	if *quiet {
		for _, n := range nets {
			fmt.Println(n.ShortID())
		}
		return nil
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
	fmt.Fprintln(w, "NETWORK ID\tNAME\tDRIVER\tSUBNET\tGATEWAY\tBRIDGE")
	for _, n := range nets {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", n.ShortID(), n.Name, n.Driver, n.Subnet, n.Gateway, n.Bridge)
	}
	return w.Flush()
}

// networkView is a network as network inspect shows it: its record and
// the running instances on it.
type networkView struct {
	*network.Network
	Instances map[string]endpointView `json:"instances"`
}

type endpointView struct {
	Name string `json:"name"`
	IP   string `json:"ip"`
	MAC  string `json:"mac"`
}

func cmdNetworkInspect(g *globals, args []string) error {
	fs := newFlags("network inspect")
	st, ins, err := networksAndInstances(g, fs, args)
	if err != nil {
		return err
	}
	out := []networkView{}
	var errs []error
	for _, ref := range fs.Args() {
		n, err := st.Get(ref)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		v := networkView{Network: n, Instances: map[string]endpointView{}}
		for _, in := range ins {
			if ep := in.Endpoint; ep != nil && ep.NetworkID == n.ID && in.Status.Active() {
				v.Instances[in.ID] = endpointView{Name: in.Name, IP: fmt.Sprintf("%s/%d", ep.IP, ep.PrefixLen), MAC: ep.MAC}
			}
		}
		out = append(out, v)
	}
	if len(out) > 0 {
		if err := printJSON(out); err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}

// staleHolders says whether the instance holding a network address is
// gone (lifecycle.StaleHolder).
func staleHolders(g *globals) (network.Stale, error) {
	st, err := g.instanceStore()
	if err != nil {
		return nil, err
	}
	return lifecycle.StaleHolder(st), nil
}

// networksAndInstances parses the flags and NETWORK operands of inspect
// and rm, and opens the network store and lists the instances they need.
func networksAndInstances(g *globals, fs *flag.FlagSet, args []string) (*network.Store, []*instance.Instance, error) {
	if err := parse(fs, args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() == 0 {
		return nil, nil, fmt.Errorf("want at least one network: %w", errdefs.ErrInvalid)
	}
	st, err := networkStore(g)
	if err != nil {
		return nil, nil, err
	}
	ins, err := allInstances(g)
	if err != nil {
		return nil, nil, err
	}
	return st, ins, nil
}

// allInstances lists every instance's record, reconciled.
func allInstances(g *globals) ([]*instance.Instance, error) {
	st, err := g.instanceStore()
	if err != nil {
		return nil, err
	}
	return st.List()
}

// users names the instances whose records name network n.
func users(ins []*instance.Instance, n *network.Network) []string {
	var out []string
	for _, in := range ins {
		if in.Net != nil && in.Net.Network == n.Name {
			out = append(out, in.Name)
		}
	}
	return out
}

func cmdNetworkRm(g *globals, args []string) error {
	fs := newFlags("network rm")
	st, ins, err := networksAndInstances(g, fs, args)
	if err != nil {
		return err
	}
	stale, err := staleHolders(g)
	if err != nil {
		return err
	}
	var errs []error
	for _, ref := range fs.Args() {
		n, err := st.Get(ref)
		if err == nil {
			err = st.Remove(n, users(ins, n), stale)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Println(ref)
	}
	return errors.Join(errs...)
}

func cmdNetworkPrune(g *globals, args []string) error {
	fs := newFlags("network prune")
	fs.Bool("f", false, "do not ask (berth never asks)")
	fs.Bool("force", false, "do not ask (berth never asks)")
	if err := parse(fs, args); err != nil {
		return err
	}
	stale, err := staleHolders(g)
	if err != nil {
		return err
	}
	st, err := networkStore(g)
	if err != nil {
		return err
	}
	ins, err := allInstances(g)
	if err != nil {
		return err
	}
	nets, err := st.List()
	if err != nil {
		return err
	}
	var removed []string
	for _, n := range nets {
		if n.Default() || len(users(ins, n)) > 0 {
			continue
		}
		if err := st.Remove(n, nil, stale); err != nil {
			if errors.Is(err, errdefs.ErrConflict) {
				continue // taken meanwhile
			}
			return err
		}
		removed = append(removed, n.Name)
	}
	if len(removed) > 0 {
		fmt.Printf("Deleted Networks:\n%s\n", strings.Join(removed, "\n"))
	}
	return nil
}

func cmdPort(g *globals, args []string) error {
	fs := newFlags("port")
	proj := fs.String("project", "", "the compose project whose service INSTANCE names (default: the one project that has it)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		return fmt.Errorf("want INSTANCE [PORT[/PROTO]]: %w", errdefs.ErrInvalid)
	}
	want := fs.Arg(1)
	if want != "" && !strings.Contains(want, "/") {
		want += "/tcp"
	}
	_, in, err := lookupInstance(g, fs.Arg(0))
	if errors.Is(err, errdefs.ErrNotFound) {
		// A compose service's name: the ports its supervisor publishes.
		if p, perr := serviceProject(g, *proj, fs.Arg(0)); perr == nil {
			return servicePorts(g, p.Name, fs.Arg(0), want)
		}
	}
	if err != nil {
		return err
	}
	found := false
	if ep := in.Endpoint; ep != nil {
		for _, p := range ep.Ports {
			key := fmt.Sprintf("%d/%s", p.Port, p.Proto)
			if want != "" && key != want {
				continue
			}
			found = true
			if want != "" {
				fmt.Printf("%s:%d\n", p.HostIP, p.HostPort)
			} else {
				fmt.Printf("%s -> %s:%d\n", key, p.HostIP, p.HostPort)
			}
		}
	}
	if want != "" && !found {
		return fmt.Errorf("instance %s publishes no port %s: %w", in.ShortID(), want, errdefs.ErrNotFound)
	}
	return nil
}

// networkFacts lists the networks recorded (NAME SUBNET on BRIDGE) and
// says whether berth can set up its firewall rules here.
func networkFacts(g *globals) ([]string, string) {
	out := []string{}
	if _, err := os.Stat(filepath.Join(g.root, "networks")); err == nil {
		if st, err := networkStore(g); err == nil {
			nets, _ := st.List()
			for _, n := range nets {
				out = append(out, fmt.Sprintf("%s %s on %s", n.Name, n.Subnet, n.Bridge))
			}
		}
	}
	fw := "nf_tables: ready"
	if err := network.CheckFirewall(); err != nil {
		fw = errdefs.OneLine(err)
	}
	return out, fw
}

// cmdNetworkConnect attaches a created or stopped instance to a network:
// its next start puts it there. berth attaches an instance to one
// network at a time.
func cmdNetworkConnect(g *globals, args []string) error {
	fs := newFlags("network connect")
	ip := fs.String("ip", "", "IPv4 address on the network")
	var aliases listFlag
	fs.Var(&aliases, "alias", "another name the instance answers to on the network")
	n, err := networkOperand(g, fs, args)
	if err != nil {
		return err
	}
	if *ip != "" {
		a, err := netip.ParseAddr(*ip)
		if err != nil || !a.Is4() || !n.Subnet.Contains(a) {
			return fmt.Errorf("--ip %q: not an address of network %s (%s): %w", *ip, n.Name, n.Subnet, errdefs.ErrInvalid)
		}
		if n.Default() {
			return fmt.Errorf("--ip %s: an address can be asked for on a user network only: %w", *ip, errdefs.ErrInvalid)
		}
	}
	if n.Default() && len(aliases) > 0 {
		return fmt.Errorf("--alias: aliases work on a user network only: %w", errdefs.ErrInvalid)
	}
	return reattach(g, fs.Arg(1), func(in *instance.Instance) (*instance.NetConfig, error) {
		switch {
		case in.Net.Attached() && in.Net.Network == n.Name:
			return nil, fmt.Errorf("instance %s is on network %s already: %w", in.ShortID(), n.Name, errdefs.ErrConflict)
		case in.Net.Attached():
			return nil, fmt.Errorf("instance %s is on network %s: berth attaches an instance to one network; disconnect it first: %w", in.ShortID(), in.Net.Network, errdefs.ErrConflict)
		case in.Net != nil && in.Net.Network == "host":
			return nil, fmt.Errorf("instance %s shares the host's network: %w", in.ShortID(), errdefs.ErrConflict)
		}
		return &instance.NetConfig{Network: n.Name, IP: *ip, Aliases: aliases}, nil
	})
}

// cmdNetworkDisconnect takes a created or stopped instance off its
// network: its next start has loopback only.
func cmdNetworkDisconnect(g *globals, args []string) error {
	fs := newFlags("network disconnect")
	fs.Bool("f", false, "accepted for Docker's sake")
	fs.Bool("force", false, "accepted for Docker's sake")
	n, err := networkOperand(g, fs, args)
	if err != nil {
		return err
	}
	return reattach(g, fs.Arg(1), func(in *instance.Instance) (*instance.NetConfig, error) {
		if !in.Net.Attached() || in.Net.Network != n.Name {
			return nil, fmt.Errorf("instance %s is not on network %s: %w", in.ShortID(), n.Name, errdefs.ErrNotFound)
		}
		return nil, nil
	})
}

// networkOperand parses connect's and disconnect's NETWORK INSTANCE and
// returns the network.
func networkOperand(g *globals, fs *flag.FlagSet, args []string) (*network.Network, error) {
	if err := parse(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() != 2 {
		return nil, fmt.Errorf("want NETWORK and INSTANCE: %w", errdefs.ErrInvalid)
	}
	nets, err := networkStore(g)
	if err != nil {
		return nil, err
	}
	defer nets.Close()
	return nets.Get(fs.Arg(0))
}

// reattach gives a created or stopped instance the network config change
// returns (nil: none), in its record and in its bundle's mounts of
// /etc/hosts, /etc/resolv.conf and /etc/hostname.
func reattach(g *globals, ref string, change func(in *instance.Instance) (*instance.NetConfig, error)) error {
	st, in, err := lookupInstance(g, ref)
	if err != nil {
		return err
	}
	if in.Status.Active() {
		return fmt.Errorf("instance %s is %s: berth changes the network of created or stopped instances only: %w", in.ShortID(), in.Status, errdefs.ErrConflict)
	}
	c, err := change(in)
	if err != nil {
		return err
	}
	b, err := st.LoadBundle(in.ID)
	if err != nil {
		return err
	}
	var mounts []specs.Mount
	files := map[string]bool{}
	for _, f := range network.Files {
		files[f[0]] = true
	}
	for _, m := range b.Spec.Mounts {
		if files[m.Destination] && filepath.Dir(m.Source) == st.Dir(in.ID) {
			continue
		}
		mounts = append(mounts, m)
	}
	b.Spec.Mounts = mounts
	if c != nil {
		addNetworkFiles(b.Spec, st.Dir(in.ID))
	} else {
		c = &instance.NetConfig{Network: "none"}
	}
	if err := st.SaveBundle(in.ID, b); err != nil {
		return err
	}
	_, err = st.Update(in.ID, func(x *instance.Instance) error {
		if x.Status.Active() {
			return fmt.Errorf("instance %s started meanwhile: %w", x.ShortID(), errdefs.ErrConflict)
		}
		x.Net = c
		return nil
	})
	return err
}

// servicePorts prints the ports the supervisor of project name publishes
// for service svc, as cmdPort prints an instance's.
func servicePorts(g *globals, name, svc, want string) error {
	ps, err := project.Open(g.root)
	if err != nil {
		return err
	}
	st, err := ps.Status(name)
	if err != nil {
		return err
	}
	found := false
	for _, line := range st.Services[svc].Ports {
		key, host, _ := strings.Cut(line, " -> ")
		if want != "" && key != want {
			continue
		}
		found = true
		if want != "" {
			fmt.Println(host)
		} else {
			fmt.Println(line)
		}
	}
	if want != "" && !found {
		return fmt.Errorf("service %s publishes no port %s: %w", svc, want, errdefs.ErrNotFound)
	}
	return nil
}
