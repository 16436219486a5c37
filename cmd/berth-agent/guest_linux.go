package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/cgroups"
	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/netif"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// workloadCgroup is the cgroup, in the guest's own cgroup2 hierarchy,
// that the workload and every Exec process run in.
const workloadCgroup = "/berth"

// guest is the agent.Handler of berth-agent.
type guest struct {
	modules *moduleSet // being inserted since boot

	// The workload cgroup is made, and the loopback brought up, at
	// boot while the host says hello; cgReady is closed once cg, cgErr
	// and loErr are set.
	cgReady chan struct{}
	cgMade  cgroups.Resources // what the workload cgroup was made with
	cgErr   error
	loErr   error

	// premounted is the root a template's guest mounted before it was
	// saved (kernel command line berth.root=); nil otherwise.
	premounted *agent.Root

	mu       sync.Mutex
	ran      bool // Run was asked for (once per guest)
	cg       cgroups.Manager
	ctr      *container.Container // the workload, once started
	spec     *specs.Spec          // the workload's spec as the guest runs it
	keepInit bool                 // berth's init is the workload's PID 1 (--init)

	// pre is the workload's init, started at boot (before a template
	// is saved) for berth's usual spec without a terminal, with its
	// stdio on the pipes of preTask; Run takes both when its spec fits.
	pre      *container.Init
	preTask  *task
	preStdio container.Stdio
}

func newGuest() *guest {
	return &guest{cgReady: make(chan struct{})}
}

// Start implements agent.Handler.
func (g *guest) Start(kind agent.Kind, p *agent.Process) (agent.Task, error) {
	if kind != agent.KindRun {
		return g.execWorkload(p)
	}
	g.mu.Lock()
	if g.ran {
		g.mu.Unlock()
		return nil, &agent.StartError{Code: 125, Msg: "this guest already runs its workload; use exec"}
	}
	g.ran = true
	g.mu.Unlock()
	tracef("run request")
	srcs, err := g.prepare(p)
	if err != nil {
		return nil, &agent.StartError{Code: 125, Msg: "guest: " + err.Error()}
	}
	return g.runWorkload(p, srcs)
}

// prepareCgroups mounts the guest's cgroup2 file system and makes the
// workload cgroup, without limits yet (the engine sets the spec's). It
// also brings the guest's loopback up (as a container's: up, and
// nothing else), which has nothing to wait for either.
func (g *guest) prepareCgroups() {
	defer close(g.cgReady)
	defer func() { g.loErr = netif.LoopbackUp() }()
	const mount = "/sys/fs/cgroup"
	if err := unix.Mount("cgroup2", mount, "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		g.cgErr = fmt.Errorf("mount cgroup2 on %s: %w", mount, err)
		return
	}
	cg, err := cgroups.NewV2(mount, workloadCgroup)
	if err == nil {
		// With berth run's device rules: their program is loaded
		// now (before a template is saved), and again only for a
		// spec with other rules.
		g.cgMade = container.ResourcesOf(&specs.LinuxResources{Devices: instance.DefaultDeviceRules()}, nil)
		err = cg.Create(g.cgMade)
	}
	g.cg, g.cgErr = cg, err
	tracef("cgroups ready")
	if err == nil {
		g.prestart()
	}
}

// prepare sets up the root for Run and mounts the request's shares; it
// returns their guest paths by target.
func (g *guest) prepare(p *agent.Process) (map[string]string, error) {
	if g.premounted != nil && !sameRoot(g.premounted, p.Root) {
		// Not what the template mounted (it cannot be, short of a
		// host that names disks otherwise): start again from the disks.
		logf("the template mounted another root; mounting the request's")
		unmountPremounted(len(g.premounted.Layers))
		g.premounted = nil
	}
	if g.premounted == nil {
		if err := mountRoot(p.Root, g.modules, g.mountScratch(p.Root)); err != nil {
			return nil, err
		}
	}
	prefetch(p)
	if err := g.modules.Wait(); err != nil { // virtiofs, for shares
		return nil, err
	}
	tracef("modules in")
	srcs, err := mountShares(p)
	if err != nil {
		return nil, err
	}
	tracef("root ready")
	<-g.cgReady
	if g.cgErr != nil {
		return nil, g.cgErr
	}
	if g.loErr != nil {
		return nil, g.loErr
	}
	return srcs, nil
}

// mountScratch mounts r's scratch disk (mountScratch) in the background
// and says when it is done. The scratch disk needs only virtio_blk (ext4
// is built in): it is mounted while the other modules go in, which is
// where the guest's CPU has time while the disk is read.
func (g *guest) mountScratch(r *agent.Root) <-chan error {
	scratch := make(chan error, 1)
	go func() {
		if r != nil && r.Scratch != "" {
			if err := g.modules.WaitFor("virtio_blk"); err != nil {
				scratch <- err
				return
			}
		}
		scratch <- mountScratch(r)
	}()
	return scratch
}

// premount mounts the root of a template's guest (the disks named on its
// kernel command line) before it is saved, so that its clones do not.
func (g *guest) premount(r *agent.Root) error {
	if err := mountRoot(r, g.modules, g.mountScratch(r)); err != nil {
		return fmt.Errorf("template root: %w", err)
	}
	g.premounted = r
	return nil
}

// sameRoot says whether two roots name the same disks.
func sameRoot(a, b *agent.Root) bool {
	return a != nil && b != nil && slices.Equal(a.Layers, b.Layers) && a.Scratch == b.Scratch
}

// Shutdown implements agent.Handler: it kills every process of the
// workload and flushes what the workload wrote to host directories
// (virtio-fs shares). The guest's own disks need nothing: the scratch
// disk goes with the VM, so the host may stop QEMU once Shutdown is
// acknowledged; the caller still unmounts and powers off.
func (g *guest) Shutdown() error {
	tracef("shutdown")
	g.mu.Lock()
	c := g.ctr
	g.mu.Unlock()
	if c != nil {
		_ = c.Signal(unix.SIGKILL) // its pid namespace ends with it
	}
	killCgroup()
	syncShares()
	tracef("shutdown done")
	return nil
}

// syncShares flushes every virtio-fs file system to the host.
func syncShares() {
	ls, _ := lines("/proc/self/mountinfo")
	for _, l := range ls {
		// ID PARENT MAJ:MIN ROOT TARGET OPTIONS [TAGS...] - FSTYPE SOURCE SUPER
		_, after, ok := strings.Cut(l, " - ")
		f := strings.Fields(l)
		if !ok || len(f) < 5 || !strings.HasPrefix(after, "virtiofs ") {
			continue
		}
		if fd, err := unix.Open(unescapeMount(f[4]), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
			_ = unix.Syncfs(fd)
			unix.Close(fd)
		}
	}
}

// oomKills is the workload cgroup's count of OOM kills (memory.events'
// oom_kill): the one figure of cgroups.Manager.Stats the agent needs,
// read alone because each file read costs the guest time.
func oomKills() (uint64, error) {
	b, err := os.ReadFile("/sys/fs/cgroup" + workloadCgroup + "/memory.events")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "oom_kill "); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, nil
}

// killCgroup kills every process left in the workload cgroup.
func killCgroup() {
	_ = os.WriteFile("/sys/fs/cgroup"+workloadCgroup+"/cgroup.kill", []byte("1"), 0)
}
