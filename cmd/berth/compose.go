package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/companion"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/network"
	"github.com/berth-dev/berth/internal/portmap"
	"github.com/berth-dev/berth/internal/project"
)

// composeFlags are the flags up, down, scale and compose ps share.
type composeFlags struct {
	files listFlag
	name  string
	dir   string
}

func (c *composeFlags) add(fs *flag.FlagSet) {
	fs.Var(&c.files, "f", "compose file (default: compose.yaml, compose.yml, docker-compose.yaml or docker-compose.yml here)")
	fs.Var(&c.files, "file", "compose file (default: compose.yaml, compose.yml, docker-compose.yaml or docker-compose.yml here)")
	fs.StringVar(&c.name, "p", "", "project name (default: the compose file's directory's name)")
	fs.StringVar(&c.name, "project-name", "", "project name (default: the compose file's directory's name)")
	fs.StringVar(&c.dir, "project-directory", "", "the project's working directory (default: the compose file's)")
}

// parseCompose reads the compose files through berth-compose, which links
// compose-go (berth does not).
func parseCompose(c *composeFlags) (*project.Project, error) {
	bin, err := companion.Find("berth-compose")
	if err != nil {
		return nil, err
	}
	args := []string{"parse"}
	for _, f := range c.files {
		args = append(args, "-f", f)
	}
	if c.name != "" {
		args = append(args, "-p", c.name)
	}
	if c.dir != "" {
		args = append(args, "--project-directory", c.dir)
	}
	var out, errb bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = err.Error()
		}
		return nil, fmt.Errorf("%s: %w", msg, errdefs.ErrInvalid)
	}
	var p project.Project
	if err := json.Unmarshal(out.Bytes(), &p); err != nil {
		return nil, fmt.Errorf("berth-compose: %v", err)
	}
	return &p, nil
}

// projectName is the project the flags name without reading a file when
// -p gives it; otherwise the file is read.
func projectName(c *composeFlags) (string, error) {
	if c.name != "" {
		return c.name, nil
	}
	p, err := parseCompose(c)
	if err != nil {
		return "", err
	}
	return p.Name, nil
}

// parseScale parses SVC=N.
func parseScale(v string) (string, int, error) {
	svc, n, ok := strings.Cut(v, "=")
	count, err := strconv.Atoi(n)
	if !ok || svc == "" || err != nil {
		return "", 0, fmt.Errorf("scale %q: want SERVICE=N: %w", v, errdefs.ErrInvalid)
	}
	if count < 0 {
		return "", 0, fmt.Errorf("scale %q: a negative number of replicas: %w", v, errdefs.ErrInvalid)
	}
	return svc, count, nil
}

func cmdUp(g *globals, args []string) error {
	fs := newFlags("up")
	var c composeFlags
	c.add(fs)
	detach := fs.Bool("d", false, "return once every service is up, and leave the project running")
	fs.BoolVar(detach, "detach", false, "return once every service is up, and leave the project running")
	var scales listFlag
	fs.Var(&scales, "scale", "run N replicas of SERVICE: SERVICE=N")
	build := fs.String("build", "never", "berth builds no images: never")
	wait := fs.Duration("wait-timeout", 5*time.Minute, "how long up waits for the services to be up")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *build != "never" {
		return fmt.Errorf("--build %q: berth builds no images: want never: %w", *build, errdefs.ErrInvalid)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("up takes no SERVICE arguments: %w", errdefs.ErrInvalid)
	}
	p, err := parseCompose(&c)
	if err != nil {
		return err
	}
	for _, v := range scales {
		name, n, err := parseScale(v)
		if err != nil {
			return err
		}
		s, ok := p.Service(name)
		if !ok {
			return fmt.Errorf("--scale %s: no service %s in project %s: %w", v, name, p.Name, errdefs.ErrNotFound)
		}
		s.Replicas = n
	}
	if err := checkProject(g, p); err != nil {
		return err
	}
	nets, err := networkStore(g)
	if err != nil {
		return err
	}
	defer nets.Close()
	for _, n := range p.Networks {
		if _, err := nets.Get(p.NetworkName(n)); errors.Is(err, errdefs.ErrNotFound) {
			if _, err := nets.Create(p.NetworkName(n), network.CreateOptions{}); err != nil && !errors.Is(err, errdefs.ErrConflict) {
				return err
			}
		} else if err != nil {
			return err
		}
	}
	ps, err := project.Open(g.root)
	if err != nil {
		return err
	}
	gen, err := ps.SetDesired(p)
	if err != nil {
		return err
	}
	if err := kickSupervisor(g, ps, p.Name); err != nil {
		return err
	}
	if err := waitConverged(ps, p.Name, gen, *wait); err != nil {
		return err
	}
	if *detach {
		for _, s := range p.Services {
			fmt.Printf("service %s: %d replica(s) up\n", s.Name, s.Replicas)
		}
		return nil
	}
	fmt.Printf("project %s is up; its output follows (Ctrl-C takes it down)\n", p.Name)
	return followProject(g, ps, p)
}

// checkProject refuses a project that cannot start, before anything
// starts: an image the store lacks (pulled first when it can be), a
// published port taken.
func checkProject(g *globals, p *project.Project) error {
	images, err := g.imageStore()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	for _, s := range p.Services {
		if _, err := resolveForRun(ctx, g, images, "missing", s.Image); err != nil {
			return fmt.Errorf("service %s: %w", s.Name, err)
		}
	}
	ps, err := project.Open(g.root)
	if err != nil {
		return err
	}
	if supervisorAlive(ps, p.Name) {
		return nil // its supervisor holds the ports already
	}
	for _, s := range p.Services {
		var ms []portmap.Mapping
		for _, spec := range s.Ports {
			m, err := portmap.Parse(spec)
			if err != nil {
				return fmt.Errorf("service %s: %w", s.Name, err)
			}
			ms = append(ms, m...)
		}
		if len(ms) == 0 {
			continue
		}
		px, _, err := portmap.Listen(ms)
		if err != nil {
			return fmt.Errorf("service %s: %w", s.Name, err)
		}
		px.Close()
	}
	return nil
}

// kickSupervisor starts the project's supervisor, or asks the running one
// to reconcile now.
func kickSupervisor(g *globals, ps *project.Store, name string) error {
	if sv, err := ps.Supervisor(name); err == nil && instance.Alive(sv.Pid, sv.Start) {
		return syscall.Kill(sv.Pid, syscall.SIGHUP)
	}
	return startSupervisor(g, ps, name)
}

// waitConverged waits until the supervisor reports generation gen
// reconciled, or says why not when limit passes.
func waitConverged(ps *project.Store, name string, gen int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last *project.Status
	for time.Now().Before(deadline) {
		if st, err := ps.Status(name); err == nil {
			last = st
			if st.Generation >= gen && st.Converged {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	why := "no report from its supervisor (see " + ps.LogPath(name) + ")"
	if last != nil {
		why = describeStatus(last)
	}
	return fmt.Errorf("project %s not up after %s: %s: %w", name, limit, why, errdefs.ErrUnavailable)
}

func describeStatus(st *project.Status) string {
	if st.Error != "" {
		return st.Error
	}
	var parts []string
	for name, s := range st.Services {
		w := ""
		if s.Waiting != "" {
			w = ", waiting for " + s.Waiting
		}
		parts = append(parts, fmt.Sprintf("%s %d/%d ready%s", name, s.Ready, s.Want, w))
	}
	return strings.Join(parts, ", ")
}

// followProject prints the replicas' output until interrupted, then takes
// the project down, as a foreground compose up does.
func followProject(g *globals, ps *project.Store, p *project.Project) error {
	sigs := make(chan os.Signal, 1)
	notifySignals(sigs)
	done := make(chan error, 1)
	go func() { done <- followServices(g, p, nil, true) }()
	select {
	case <-sigs:
	case <-done:
	}
	return projectDown(g, ps, p.Name)
}

func cmdDown(g *globals, args []string) error {
	fs := newFlags("down")
	var c composeFlags
	c.add(fs)
	fs.Bool("volumes", false, "accepted for Compose's sake: berth's projects have bind mounts only")
	fs.Bool("v", false, "accepted for Compose's sake: berth's projects have bind mounts only")
	if err := parse(fs, args); err != nil {
		return err
	}
	name, err := projectName(&c)
	if err != nil {
		return err
	}
	ps, err := project.Open(g.root)
	if err != nil {
		return err
	}
	if _, err := ps.Desired(name); err != nil {
		return err
	}
	return projectDown(g, ps, name)
}

// projectDown ends the supervisor, removes every instance of the project
// and its networks, then the project's record.
func projectDown(g *globals, ps *project.Store, name string) error {
	d, err := ps.Desired(name)
	if err != nil {
		return err
	}
	if sv, err := ps.Supervisor(name); err == nil && instance.Alive(sv.Pid, sv.Start) {
		_ = syscall.Kill(sv.Pid, syscall.SIGTERM)
		for i := 0; i < 200 && instance.Alive(sv.Pid, sv.Start); i++ {
			time.Sleep(50 * time.Millisecond)
		}
		if instance.Alive(sv.Pid, sv.Start) {
			_ = syscall.Kill(sv.Pid, syscall.SIGKILL)
		}
	}
	network.RemoveServicePorts(g.root, name+"_")
	st, err := g.instanceStore()
	if err != nil {
		return err
	}
	ins, err := st.List()
	if err != nil {
		return err
	}
	var ids []string
	for _, in := range ins {
		if in.Labels[project.LabelProject] == name {
			ids = append(ids, in.ID)
		}
	}
	if len(ids) > 0 {
		cmd := exec.Command("/proc/self/exe", append([]string{"--root", g.root, "rm", "-f"}, ids...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("project %s: remove its instances: %s", name, strings.TrimSpace(string(out)))
		}
	}
	nets, err := networkStore(g)
	if err != nil {
		return err
	}
	defer nets.Close()
	for _, n := range d.Project.Networks {
		if nw, err := nets.Get(d.Project.NetworkName(n)); err == nil {
			if err := nets.Remove(nw, nil, nil); err != nil {
				return err
			}
		}
	}
	fmt.Printf("project %s is down\n", name)
	return ps.Remove(name)
}

func cmdScale(g *globals, args []string) error {
	fs := newFlags("scale")
	var c composeFlags
	c.add(fs)
	wait := fs.Duration("wait-timeout", 5*time.Minute, "how long scale waits for the replicas")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("want SERVICE=N: %w", errdefs.ErrInvalid)
	}
	name, err := projectName(&c)
	if err != nil {
		return err
	}
	ps, err := project.Open(g.root)
	if err != nil {
		return err
	}
	d, err := ps.Desired(name)
	if err != nil {
		return err
	}
	for _, v := range fs.Args() {
		svc, n, err := parseScale(v)
		if err != nil {
			return err
		}
		s, ok := d.Project.Service(svc)
		if !ok {
			return fmt.Errorf("scale %s: no service %s in project %s: %w", v, svc, name, errdefs.ErrNotFound)
		}
		s.Replicas = n
	}
	gen, err := ps.SetDesired(d.Project)
	if err != nil {
		return err
	}
	if err := kickSupervisor(g, ps, name); err != nil {
		return err
	}
	return waitConverged(ps, name, gen, *wait)
}

// projectInstances lists the instances of project name, reconciled, with
// the supervisor started again if it died.
func projectInstances(g *globals, name string) ([]*instance.Instance, error) {
	ps, err := project.Open(g.root)
	if err != nil {
		return nil, err
	}
	if _, err := ps.Desired(name); err != nil {
		return nil, err
	}
	if err := startSupervisor(g, ps, name); err != nil {
		return nil, err
	}
	st, err := g.instanceStore()
	if err != nil {
		return nil, err
	}
	all, err := st.List()
	if err != nil {
		return nil, err
	}
	var out []*instance.Instance
	for _, in := range all {
		if in.Labels[project.LabelProject] == name {
			out = append(out, in)
		}
	}
	return out, nil
}

// serviceProject finds the project with service svc: the one named, or
// the only one recorded that has it.
func serviceProject(g *globals, name, svc string) (*project.Project, error) {
	ps, err := project.Open(g.root)
	if err != nil {
		return nil, err
	}
	names := []string{name}
	if name == "" {
		if names, err = ps.List(); err != nil {
			return nil, err
		}
	}
	var found *project.Project
	for _, n := range names {
		d, err := ps.Desired(n)
		if err != nil {
			continue
		}
		if _, ok := d.Project.Service(svc); ok {
			if found != nil {
				return nil, fmt.Errorf("service %s is in projects %s and %s: give --project: %w", svc, found.Name, n, errdefs.ErrInvalid)
			}
			found = d.Project
		}
	}
	if found == nil {
		return nil, fmt.Errorf("no project has a service %s: %w", svc, errdefs.ErrNotFound)
	}
	return found, nil
}
