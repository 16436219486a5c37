package vm

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/errdefs"
)

// A VM's network card has the host side a container's eth0 has, so that
// berth's network layer (and CNI, and dockerd, for berth-runtime) treat
// both alike. The instance has a network namespace whose eth0 is a veth,
// addressed and routed. QEMU runs in that namespace and takes eth0 over,
// as Kata's "tcfilter" does: a tap (tapName) is made beside eth0, each
// gets an ingress qdisc with a u32 filter that matches every packet and
// redirects it (mirred egress redirect) to the other, so what arrives on
// the veth leaves through the tap into QEMU and what the guest sends
// leaves through the veth, untouched by the namespace's own stack. (u32
// rather than flower or matchall: hosts without those classifiers have
// it.) QEMU gets the tap as a descriptor; the guest's virtio-net card
// gets eth0's MAC, and the agent gives it eth0's IPv4 addresses, MTU and
// routes (agent.Net) before the workload starts. The host's addresses
// stay on the veth, where nothing sees them: ingress is redirected
// before the stack.

// Network gives a VM a network card (RunConfig.Network).
type Network struct {
	// Attach, when not nil, makes QEMU run in a network namespace of its
	// own, new: Boot calls Attach with the namespace's path (a path
	// under /proc that names it while Attach runs) before QEMU starts,
	// and Attach must put eth0 in it, addressed and routed (berth's
	// network layer does). When nil, QEMU runs in the caller's network
	// namespace (berth-runtime's VM owner runs in the pod's, where CNI
	// or dockerd put eth0).
	Attach func(netns string) error
}

// tapName is the tap QEMU's network card is joined to, beside eth0.
const tapName = "tap0"

// hostIf is the interface a VM takes over.
const hostIf = "eth0"

// hostNet is the host side of a VM's network card.
type hostNet struct {
	ns  *os.File   // the namespace QEMU runs in
	tap *os.File   // the tap's queue, QEMU's; nil when the namespace has no eth0
	cfg *agent.Net // what the guest's card gets; nil without eth0
}

// Close closes the namespace and the tap's queue. The tap goes away with
// its last descriptor (QEMU's), the namespace with its last process.
func (h *hostNet) Close() {
	if h.tap != nil {
		h.tap.Close()
	}
	if h.ns != nil {
		h.ns.Close()
	}
}

// takeOver prepares n's network namespace for QEMU: a new one handed to
// n.Attach, or the caller's, and there eth0 joined to a new tap. A
// namespace without eth0 gives the VM no card (no error: a pod without
// a network).
func takeOver(id string, n *Network) (_ *hostNet, err error) {
	h := &hostNet{}
	defer func() {
		if err != nil {
			h.Close()
			err = fmt.Errorf("vm %s: network: %w", id, err)
		}
	}()
	if n.Attach != nil {
		if h.ns, err = newNetNS(n.Attach); err != nil {
			return nil, err
		}
	} else if h.ns, err = os.Open("/proc/thread-self/ns/net"); err != nil {
		return nil, err
	}
	nh, err := netlink.NewHandleAt(netns.NsHandle(h.ns.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	defer nh.Close()
	eth, err := nh.LinkByName(hostIf)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return h, nil
	}
	if err != nil {
		return nil, err
	}
	if h.cfg, err = guestNet(nh, eth); err != nil {
		return nil, err
	}
	if err := inNetNS(h.ns, func() error {
		h.tap, err = openTap(tapName)
		return err
	}); err != nil {
		return nil, err
	}
	tap, err := nh.LinkByName(tapName)
	if err == nil {
		err = nh.LinkSetMTU(tap, eth.Attrs().MTU)
	}
	if err == nil {
		err = nh.LinkSetUp(tap)
	}
	if err == nil {
		err = nh.LinkSetUp(eth)
	}
	if err == nil {
		err = redirect(nh, eth, tap)
	}
	if err == nil {
		err = redirect(nh, tap, eth)
	}
	if err != nil {
		return nil, fmt.Errorf("join %s and %s: %w", hostIf, tapName, err)
	}
	return h, nil
}

// newNetNS makes a network namespace on a thread of its own, has attach
// fill it, and returns it open. The thread is never handed back to Go's
// scheduler: it ends with its goroutine, once attach returned.
func newNetNS(attach func(string) error) (*os.File, error) {
	type made struct {
		f    *os.File
		path string
		err  error
	}
	ch := make(chan made, 1)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- made{err: fmt.Errorf("new network namespace: %w", err)}
			return
		}
		path := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		f, err := os.Open(path)
		ch <- made{f, path, err}
		<-done // the path names the namespace while this thread lives
	}()
	m := <-ch
	defer close(done)
	if m.err != nil {
		return nil, m.err
	}
	if err := attach(m.path); err != nil {
		m.f.Close()
		return nil, fmt.Errorf("attach: %w", err)
	}
	return m.f, nil
}

// inNetNS runs fn on a thread that entered the network namespace ns; the
// thread ends with fn's goroutine.
func inNetNS(ns *os.File, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// openTap makes the tap name in the calling thread's network namespace
// and returns its one queue: not persistent, so the tap goes with its
// last descriptor. With IFF_VNET_HDR QEMU may offload checksums and
// segmentation to it.
func openTap(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("/dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err == nil {
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun"), nil
}

// redirect sends every packet that arrives on from out of to: an
// ingress qdisc on from, and a u32 filter matching all with a mirred
// egress redirect.
func redirect(nh *netlink.Handle, from, to netlink.Link) error {
	idx := from.Attrs().Index
	q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: idx, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_INGRESS}}
	if err := nh.QdiscAdd(q); err != nil {
		return fmt.Errorf("ingress qdisc on %s: %w", from.Attrs().Name, err)
	}
	f := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: idx, Parent: netlink.MakeHandle(0xffff, 0), Priority: 1, Protocol: unix.ETH_P_ALL},
		Actions:     []netlink.Action{netlink.NewMirredAction(to.Attrs().Index)}, // nil Sel: match u8 0 0
	}
	if err := nh.FilterAdd(f); err != nil {
		return fmt.Errorf("redirect filter on %s: %w", from.Attrs().Name, err)
	}
	return nil
}

// guestNet reads what the guest's card takes from eth: its MAC, MTU,
// IPv4 addresses, default gateway and other IPv4 routes (not those the
// kernel made for the addresses' subnets). A dump the kernel interrupted
// is read again.
func guestNet(nh *netlink.Handle, eth netlink.Link) (*agent.Net, error) {
	a := eth.Attrs()
	if len(a.HardwareAddr) != 6 {
		return nil, fmt.Errorf("%s has no Ethernet address: %w", hostIf, errdefs.ErrInvalid)
	}
	cfg := &agent.Net{MAC: a.HardwareAddr.String(), MTU: a.MTU}
	var addrs []netlink.Addr
	var routes []netlink.Route
	err := retryDump(func() (err error) {
		addrs, err = nh.AddrList(eth, netlink.FAMILY_V4)
		return err
	})
	if err == nil {
		err = retryDump(func() (err error) {
			routes, err = nh.RouteList(eth, netlink.FAMILY_V4)
			return err
		})
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", hostIf, err)
	}
	for _, ad := range addrs {
		cfg.Addrs = append(cfg.Addrs, ad.IPNet.String())
	}
	for _, r := range routes {
		switch {
		case r.Protocol == unix.RTPROT_KERNEL || r.Table != unix.RT_TABLE_MAIN:
		case r.Dst == nil || r.Dst.String() == "0.0.0.0/0":
			if r.Gw != nil {
				cfg.Gateway = r.Gw.String()
			}
		default:
			rt := agent.Route{Dst: r.Dst.String()}
			if r.Gw != nil {
				rt.Via = r.Gw.String()
			}
			cfg.Routes = append(cfg.Routes, rt)
		}
	}
	return cfg, nil
}

// retryDump calls list again while the kernel says the dump was
// interrupted by a change.
func retryDump(list func() error) error {
	var err error
	for range 5 {
		if err = list(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return err
		}
	}
	return err
}

// dupFile duplicates f's descriptor, close-on-exec.
func dupFile(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}
