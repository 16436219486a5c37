package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/network"
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
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("want at least one network: %w", errdefs.ErrInvalid)
	}
	st, err := networkStore(g)
	if err != nil {
		return err
	}
	ins, err := allInstances(g)
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
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("want at least one network: %w", errdefs.ErrInvalid)
	}
	st, err := networkStore(g)
	if err != nil {
		return err
	}
	ins, err := allInstances(g)
	if err != nil {
		return err
	}
	var errs []error
	for _, ref := range fs.Args() {
		n, err := st.Get(ref)
		if err == nil {
			err = st.Remove(n, users(ins, n))
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
		if err := st.Remove(n, nil); err != nil {
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
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		return fmt.Errorf("want INSTANCE [PORT[/PROTO]]: %w", errdefs.ErrInvalid)
	}
	_, in, err := lookupInstance(g, fs.Arg(0))
	if err != nil {
		return err
	}
	want := fs.Arg(1)
	if want != "" && !strings.Contains(want, "/") {
		want += "/tcp"
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
