package network

import (
	"errors"
	"net/netip"
	"strings"

	"github.com/berth-dev/berth/internal/firewall"
	"github.com/berth-dev/berth/internal/portmap"
)

// ServicePorts are the published ports of a replicated service (a
// compose project's), which the firewall spreads over the service's
// ready replicas: a DNAT to one of them per connection. Their loopback
// side is the supervisor's proxy.
type ServicePorts struct {
	st    *Store
	name  string
	ports []portmap.Mapping
}

// OpenServicePorts is service name's ports (host ports resolved, as
// portmap.Listen returns them); nothing is published until Set.
func OpenServicePorts(root, name string, ports []portmap.Mapping) (*ServicePorts, error) {
	st, err := Open(root)
	if err != nil {
		return nil, err
	}
	return &ServicePorts{st: st, name: name, ports: ports}, nil
}

func (s *ServicePorts) each(fn func(fw *firewall.Firewall, svc firewall.Service, m portmap.Mapping) error) error {
	fw, err := s.st.firewall()
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range s.ports {
		if m.HostIP.IsValid() && m.HostIP.IsLoopback() {
			continue // only the proxy answers there
		}
		svc := firewall.Service{Name: s.name, Proto: m.Proto, HostIP: m.HostIP, HostPort: m.HostPort}
		errs = append(errs, fn(fw, svc, m))
	}
	return errors.Join(errs...)
}

// Set points the ports at the replicas at addrs (none: the ports refuse
// connections, but stay the service's).
func (s *ServicePorts) Set(addrs []netip.Addr) error {
	return s.each(func(fw *firewall.Firewall, svc firewall.Service, m portmap.Mapping) error {
		var bs []firewall.Backend
		for _, a := range addrs {
			bs = append(bs, firewall.Backend{Addr: a, Port: m.Port})
		}
		return fw.SetService(svc, bs)
	})
}

// Close withdraws the ports.
func (s *ServicePorts) Close() error {
	err := s.each(func(fw *firewall.Firewall, svc firewall.Service, _ portmap.Mapping) error {
		return fw.RemoveService(svc)
	})
	s.st.Close()
	return err
}

// RemoveServicePorts withdraws every service port whose service's name
// starts with prefix: a project's, when its supervisor died without
// withdrawing them.
func RemoveServicePorts(root, prefix string) error {
	st, err := Open(root)
	if err != nil {
		return err
	}
	defer st.Close()
	fw, err := st.firewall()
	if err != nil {
		return err
	}
	svcs, err := fw.ListServices()
	if err != nil {
		return err
	}
	var errs []error
	for svc := range svcs {
		if strings.HasPrefix(svc.Name, prefix) {
			errs = append(errs, fw.RemoveService(svc))
		}
	}
	return errors.Join(errs...)
}
