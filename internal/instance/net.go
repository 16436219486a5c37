package instance

// NetConfig is how an instance is attached to the network, as `berth run`
// asked: kept in its record and applied at each start.
type NetConfig struct {
	// Network is "none" (loopback only), "host" (a container shares the
	// host's namespace) or a network's name ("bridge" is the default
	// network).
	Network string `json:"network"`
	// IP and MAC, when set, are asked for (--ip, --mac-address).
	IP  string `json:"ip,omitempty"`
	MAC string `json:"mac,omitempty"`
	// Aliases are more names the instance answers to on a user network
	// (--network-alias).
	Aliases []string `json:"aliases,omitempty"`
	// DNS are the name servers asked for (--dns); AddHosts the extra
	// /etc/hosts lines, each "NAME:IP" (--add-host).
	DNS      []string `json:"dns,omitempty"`
	AddHosts []string `json:"add_hosts,omitempty"`
	// Publish are the -p values, and those -P made of the image's
	// exposed ports.
	Publish []string `json:"publish,omitempty"`
}

// Attached reports whether c puts the instance on a network of berth's
// (not none, not host).
func (c *NetConfig) Attached() bool {
	return c != nil && c.Network != "" && c.Network != "none" && c.Network != "host"
}

// Endpoint is where a running instance is on its network, recorded at
// start for inspect, port and the clean-up of an instance whose owner
// died.
type Endpoint struct {
	Network   string        `json:"network"`
	NetworkID string        `json:"network_id"`
	IP        string        `json:"ip"`
	PrefixLen int           `json:"prefix_len"`
	Gateway   string        `json:"gateway"`
	MAC       string        `json:"mac"`
	HostVeth  string        `json:"host_veth"`
	Ports     []PortBinding `json:"ports,omitempty"`
}

// PortBinding is one published port: the host's side and the instance's.
type PortBinding struct {
	Proto    string `json:"proto"`
	HostIP   string `json:"host_ip"`
	HostPort uint16 `json:"host_port"`
	Port     uint16 `json:"port"`
}
