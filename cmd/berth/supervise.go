package main

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/lifecycle"
	"github.com/berth-dev/berth/internal/lockfile"
	"github.com/berth-dev/berth/internal/network"
	"github.com/berth-dev/berth/internal/portmap"
	"github.com/berth-dev/berth/internal/project"
)

// superviseVerb is the hidden verb of a project's supervisor.
const superviseVerb = "supervise"

// startSupervisor starts the supervisor of project name unless one runs:
// a detached process, in a session of its own, like a monitor.
func startSupervisor(g *globals, ps *project.Store, name string) error {
	if supervisorAlive(ps, name) {
		return nil
	}
	logf, err := os.OpenFile(ps.LogPath(name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("project %s: %w", name, err)
	}
	defer logf.Close()
	cmd := exec.Command("/proc/self/exe", "--root", g.root, superviseVerb, name)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("project %s: start its supervisor: %w", name, err)
	}
	return cmd.Process.Release()
}

// supervisorAlive reports whether project name's supervisor lives.
func supervisorAlive(ps *project.Store, name string) bool {
	sv, err := ps.Supervisor(name)
	return err == nil && instance.Alive(sv.Pid, sv.Start)
}

// cmdSupervise is a project's supervisor: it reconciles the project's
// instances with its desired state (replicas, configuration, order of
// dependencies) until SIGTERM, and balances each service's published
// ports across its ready replicas. SIGHUP asks for a reconcile now.
// Killed, it is started again by the next up, scale or ps of the
// project, and reconciles without duplicating replicas: their names are
// claimed once.
func cmdSupervise(g *globals, args []string) error {
	if len(args) != 1 {
		return errors.New("want a project name")
	}
	name := args[0]
	ps, err := project.Open(g.root)
	if err != nil {
		return err
	}
	lock, err := lockfile.Open(ps.LockPath(name), unix.LOCK_EX|unix.LOCK_NB)
	if err != nil {
		return nil // another supervisor has it
	}
	defer lock.Close()
	self := os.Getpid()
	if err := ps.SetSupervisor(name, project.Supervisor{Pid: self, Start: instance.ProcStart(self)}); err != nil {
		return err
	}
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("supervisor " + name + ": ")
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	sv := &supervisor{g: g, ps: ps, name: name, balancers: map[string]*balancer{}}
	defer sv.close()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		// A pass that started or removed replicas is followed by another
		// at once, which sees (and reports) what the first did; then
		// the next waits for the tick, so a replica that keeps failing
		// is not replaced in a tight loop.
		for pass := 0; pass < 2; pass++ {
			sv.changed = false
			if err := sv.reconcile(); err != nil {
				if errors.Is(err, errProjectGone) {
					return nil
				}
				log.Print(err)
			}
			if !sv.changed {
				break
			}
		}
		select {
		case s := <-sigs:
			if s != syscall.SIGHUP {
				return nil
			}
		case <-tick.C:
		}
	}
}

var errProjectGone = errors.New("the project was taken down")

// drainTime bounds how long a replica taken out of its service's
// balancer is left to finish the connections it serves before it is
// removed.
const drainTime = 10 * time.Second

type supervisor struct {
	changed   bool // the pass started or removed replicas
	g         *globals
	ps        *project.Store
	name      string
	balancers map[string]*balancer // by service
}

// balancer is a service's published ports: the host ports claimed, the
// loopback proxy over the ready replicas, and the firewall's DNAT of the
// service port to them.
type balancer struct {
	ports   []portmap.Mapping
	proxy   *portmap.Proxy
	pool    *portmap.Pool
	fw      *network.ServicePorts
	current string // the backends last set
}

func (sv *supervisor) close() {
	for _, b := range sv.balancers {
		b.close()
	}
}

func (b *balancer) close() {
	if b.proxy != nil {
		b.proxy.Close()
	}
	if b.fw != nil {
		b.fw.Close()
	}
}

// replica is one instance of a service.
type replica struct {
	in    *instance.Instance
	index int
	hash  string
}

func (r replica) ready() bool {
	return r.in.Status == instance.Running && healthy(r.in)
}

// completed: a replica that ended by itself with status 0 (a one-shot
// service's work done).
func (r replica) completed() bool {
	return r.in.Status == instance.Stopped && r.in.ExitCode != nil && *r.in.ExitCode == 0 && r.in.Signal == 0
}

func (sv *supervisor) reconcile() error {
	d, err := sv.ps.Desired(sv.name)
	if err != nil {
		return errProjectGone
	}
	p := d.Project
	st, err := sv.g.instanceStore()
	if err != nil {
		return err
	}
	all, err := st.List()
	if err != nil {
		return err
	}
	bySvc := map[string][]replica{}
	for _, in := range all {
		if in.Labels[project.LabelProject] != p.Name {
			continue
		}
		in = lifecycle.Reconcile(st, in)
		n, _ := strconv.Atoi(in.Labels[project.LabelReplica])
		svc := in.Labels[project.LabelService]
		bySvc[svc] = append(bySvc[svc], replica{in: in, index: n, hash: in.Labels[project.LabelHash]})
	}
	status := &project.Status{Generation: d.Generation, Converged: true, Services: map[string]project.ServiceStatus{}}
	var errs []error
	for _, svc := range p.Services {
		ss, err := sv.service(p, svc, bySvc)
		if err != nil {
			errs = append(errs, fmt.Errorf("service %s: %w", svc.Name, err))
		}
		status.Services[svc.Name] = ss
		// Done replicas (a one-shot service's) are ready without running;
		// running ones beyond the ready are old or unhealthy.
		if ss.Ready != ss.Want || ss.Running > ss.Ready || ss.Waiting != "" {
			status.Converged = false
		}
	}
	for svc, rs := range bySvc {
		if _, ok := p.Service(svc); !ok {
			// A service taken out of the file: its replicas go.
			for _, r := range rs {
				sv.remove(r)
			}
			status.Converged = false
		}
	}
	if err := errors.Join(errs...); err != nil {
		status.Error = strings.ReplaceAll(err.Error(), "\n", "; ")
		status.Converged = false
	}
	return errors.Join(err, sv.ps.SetStatus(sv.name, status))
}

// service reconciles one service: its dependencies first, then the count
// and configuration of its replicas, then its balancer.
func (sv *supervisor) service(p *project.Project, svc project.Service, bySvc map[string][]replica) (project.ServiceStatus, error) {
	rs := bySvc[svc.Name]
	ss := project.ServiceStatus{Want: svc.Replicas}
	hash := svc.Hash()
	var current, old []replica
	used := map[int]bool{}
	for _, r := range rs {
		used[r.index] = true
		switch {
		case r.in.Status == instance.Stopped && !r.completed() && !r.in.Restarting:
			// Ended abnormally and its owner does not restart it:
			// replace it.
			sv.remove(r)
			delete(used, r.index)
			continue
		case r.hash == hash:
			current = append(current, r)
		default:
			old = append(old, r)
		}
		if r.in.Status == instance.Running {
			ss.Running++
		}
	}
	for _, r := range current {
		if r.ready() || r.completed() {
			ss.Ready++
		}
	}
	if w := sv.waitingFor(svc, bySvc, p); w != "" {
		ss.Waiting = w
		return ss, nil
	}
	live := len(current)
	// Too many: the highest indexes go, old configurations first.
	sort.Slice(old, func(i, j int) bool { return old[i].index > old[j].index })
	sort.Slice(current, func(i, j int) bool { return current[i].index > current[j].index })
	var drop []replica
	for live > svc.Replicas {
		drop = append(drop, current[0])
		current = current[1:]
		live--
	}
	switch {
	case svc.Replicas == 0:
		drop, old = append(drop, old...), nil
	case len(old) > 0 && ss.Ready+len(old) > svc.Replicas:
		// A rolling update: an old replica goes once a new one is
		// ready in its place.
		drop, old = append(drop, old[0]), old[1:]
	}
	// Out of the balancer first, then a moment for what it was
	// answering, then removed: no request meets a replica being
	// removed.
	var ready []replica
	for _, r := range append(append([]replica{}, current...), old...) {
		if r.ready() {
			ready = append(ready, r)
		}
	}
	err := sv.balance(svc, ready)
	if err != nil {
		// Never remove a replica the balancer may still send to.
		drop = nil
	}
	if b := sv.balancers[svc.Name]; b != nil {
		for _, m := range b.ports {
			ss.Ports = append(ss.Ports, m.String())
		}
	}
	if len(drop) > 0 {
		var addrs []netip.Addr
		for _, r := range drop {
			if r.in.Endpoint != nil {
				if a, err := netip.ParseAddr(r.in.Endpoint.IP); err == nil {
					addrs = append(addrs, a)
				}
			}
		}
		// A packet sent before the balancer changed may still be on its
		// way; then the connections the replicas serve are let end.
		time.Sleep(100 * time.Millisecond)
		if open := network.Drain(addrs, drainTime); open > 0 {
			log.Printf("service %s: %d connection(s) still open after %s; removing anyway", svc.Name, open, drainTime)
		}
		sv.remove(drop...)
	}
	switch {
	case live < svc.Replicas && len(old) > 0:
		// One new replica at a time while old ones are still there.
		err = errors.Join(err, sv.start(p, svc, hash, used, 1))
	case live < svc.Replicas:
		err = errors.Join(err, sv.start(p, svc, hash, used, svc.Replicas-live))
	}
	return ss, err
}

// waitingFor says which dependency of svc is not met yet, or "".
func (sv *supervisor) waitingFor(svc project.Service, bySvc map[string][]replica, p *project.Project) string {
	for _, d := range svc.DependsOn {
		dep, ok := p.Service(d.Service)
		if !ok || dep.Replicas == 0 {
			continue
		}
		met := false
		for _, r := range bySvc[d.Service] {
			switch d.Condition {
			case "service_healthy":
				met = met || r.ready()
			case "service_completed_successfully":
				met = met || r.completed()
			default:
				met = met || r.in.Status == instance.Running || r.completed()
			}
		}
		if !met {
			return d.Service + " (" + d.Condition + ")"
		}
	}
	return ""
}

// start starts n replicas of svc, at once, each with the lowest free
// index.
func (sv *supervisor) start(p *project.Project, svc project.Service, hash string, used map[int]bool, n int) error {
	sv.changed = true
	var wg sync.WaitGroup
	errc := make(chan error, n)
	next := 1
	for i := 0; i < n; i++ {
		for used[next] {
			next++
		}
		used[next] = true
		args := replicaArgs(p, svc, hash, next)
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command("/proc/self/exe", append([]string{"--root", sv.g.root}, args...)...)
			cmd.Stdin = nil
			var errb strings.Builder
			cmd.Stdout, cmd.Stderr = io.Discard, &errb
			if err := cmd.Run(); err != nil {
				errc <- fmt.Errorf("start %s: %s", args[3], strings.TrimSpace(errb.String()))
				return
			}
			log.Printf("started %s", args[3])
		}()
	}
	wg.Wait()
	close(errc)
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// remove removes replicas, killing them first, all at once.
func (sv *supervisor) remove(rs ...replica) {
	if len(rs) == 0 {
		return
	}
	sv.changed = true
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command("/proc/self/exe", "--root", sv.g.root, "rm", "-f", r.in.ID)
			if out, err := cmd.CombinedOutput(); err != nil {
				log.Printf("remove %s: %s", r.in.Name, strings.TrimSpace(string(out)))
				return
			}
			log.Printf("removed %s", r.in.Name)
		}()
	}
	wg.Wait()
}

// balance points svc's published ports at its ready replicas.
func (sv *supervisor) balance(svc project.Service, ready []replica) error {
	if len(svc.Ports) == 0 {
		return nil
	}
	b := sv.balancers[svc.Name]
	if b == nil {
		var ms []portmap.Mapping
		for _, spec := range svc.Ports {
			m, err := portmap.Parse(spec)
			if err != nil {
				return err
			}
			ms = append(ms, m...)
		}
		b = &balancer{pool: &portmap.Pool{}}
		var err error
		if b.proxy, b.ports, err = portmap.Listen(ms); err != nil {
			return err
		}
		pool := b.pool
		b.proxy.Serve(func(m portmap.Mapping) netip.AddrPort {
			a := pool.Next(m)
			if !a.IsValid() {
				return a
			}
			return netip.AddrPortFrom(a.Addr(), m.Port)
		})
		if b.fw, err = network.OpenServicePorts(sv.g.root, sv.name+"_"+svc.Name, b.ports); err != nil {
			b.close()
			return err
		}
		sv.balancers[svc.Name] = b
	}
	var addrs []netip.Addr
	for _, r := range ready {
		if r.in.Endpoint == nil {
			continue
		}
		if a, err := netip.ParseAddr(r.in.Endpoint.IP); err == nil {
			addrs = append(addrs, a)
		}
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i].Less(addrs[j]) })
	key := fmt.Sprint(addrs)
	if key == b.current {
		return nil
	}
	var backends []netip.AddrPort
	for _, a := range addrs {
		backends = append(backends, netip.AddrPortFrom(a, 0))
	}
	b.pool.Set(backends)
	if err := b.fw.Set(addrs); err != nil {
		return err
	}
	b.current = key
	log.Printf("service %s balanced over %v", svc.Name, addrs)
	return nil
}

// replicaArgs is the berth run command line of replica index of svc.
func replicaArgs(p *project.Project, svc project.Service, hash string, index int) []string {
	args := []string{"run", "-d", "--name", p.ReplicaName(svc.Name, index),
		"--network", p.NetworkName(svc.Network), "--network-alias", svc.Name,
		"--label", project.LabelProject + "=" + p.Name, "--label", project.LabelService + "=" + svc.Name,
		"--label", project.LabelReplica + "=" + strconv.Itoa(index), "--label", project.LabelHash + "=" + hash}
	for _, a := range svc.Aliases {
		args = append(args, "--network-alias", a)
	}
	if svc.Isolation == "vm" {
		args = append(args, "--vm")
	}
	for _, e := range svc.Env {
		args = append(args, "-e", e)
	}
	for _, v := range svc.Volumes {
		args = append(args, "-v", v)
	}
	if svc.Memory > 0 {
		args = append(args, "--memory", strconv.FormatInt(svc.Memory, 10))
	}
	if svc.CPUs > 0 {
		args = append(args, "--cpus", strconv.FormatFloat(svc.CPUs, 'f', -1, 64))
	}
	if svc.Pids > 0 {
		args = append(args, "--pids-limit", strconv.FormatInt(svc.Pids, 10))
	}
	if svc.User != "" {
		args = append(args, "-u", svc.User)
	}
	if svc.WorkingDir != "" {
		args = append(args, "-w", svc.WorkingDir)
	}
	if svc.Hostname != "" {
		args = append(args, "--hostname", svc.Hostname)
	}
	if svc.ReadOnly {
		args = append(args, "--read-only")
	}
	if svc.Init {
		args = append(args, "--init")
	}
	args = append(args, serviceLifeArgs(svc)...)
	cmd := svc.Command
	if svc.Entrypoint != nil {
		ep := ""
		if len(svc.Entrypoint) > 0 {
			ep = svc.Entrypoint[0]
			cmd = append(append([]string{}, svc.Entrypoint[1:]...), cmd...)
		}
		args = append(args, "--entrypoint", ep)
	}
	args = append(args, svc.Image)
	return append(args, cmd...)
}
