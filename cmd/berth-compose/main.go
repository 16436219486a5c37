// Command berth-compose reads compose files for berth: it links
// compose-go (the compose specification's own parser, with its schema
// validation, interpolation and .env handling), which berth itself does
// not, and prints the project normalised as internal/project's JSON.
// Anything berth does not run is refused here, in one line.
//
//	berth-compose parse [-p NAME] [--project-directory DIR] [-f FILE]...
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/berth-dev/berth/internal/project"
)

type files []string

func (f *files) String() string     { return strings.Join(*f, ",") }
func (f *files) Set(v string) error { *f = append(*f, v); return nil }

func main() {
	if len(os.Args) < 2 || os.Args[1] != "parse" {
		fmt.Fprintln(os.Stderr, "usage: berth-compose parse [-p NAME] [--project-directory DIR] [-f FILE]...")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("parse", flag.ContinueOnError)
	var fl files
	fs.Var(&fl, "f", "compose file")
	name := fs.String("p", "", "project name")
	dir := fs.String("project-directory", "", "working directory")
	if err := fs.Parse(os.Args[2:]); err != nil {
		os.Exit(2)
	}
	p, err := load(fl, *name, *dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, oneLine(err))
		os.Exit(125)
	}
	if err := json.NewEncoder(os.Stdout).Encode(p); err != nil {
		fmt.Fprintln(os.Stderr, oneLine(err))
		os.Exit(125)
	}
}

// oneLine puts err on one line, in words a user of Compose knows: the
// schema's "false schema" of a key it does not allow says so.
func oneLine(err error) string {
	msg := strings.Join(strings.Fields(err.Error()), " ")
	if m := falseSchema.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("%s: %s: unknown key", strings.TrimSuffix(m[1], ":"), m[2])
	}
	return msg
}

// falseSchema matches compose-go's report of a key the schema forbids:
// "validating FILE: services.x.bogus false schema".
var falseSchema = regexp.MustCompile(`^validating (\S+) (\S+) false schema$`)

func load(configs []string, name, dir string) (*project.Project, error) {
	opts, err := cli.NewProjectOptions(configs,
		cli.WithName(name),
		cli.WithWorkingDirectory(dir),
		cli.WithOsEnv,
		cli.WithDotEnv,
		cli.WithDefaultConfigPath,
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		return nil, err
	}
	cp, err := opts.LoadProject(context.Background())
	if err != nil {
		return nil, err
	}
	return normalise(cp)
}

// normalise turns compose-go's project into berth's, refusing what berth
// does not run.
func normalise(cp *types.Project) (*project.Project, error) {
	p := &project.Project{Name: cp.Name, Dir: cp.WorkingDir, Files: cp.ComposeFiles}
	nets := map[string]bool{}
	var order []string
	if err := cp.ForEachService(nil, func(name string, _ *types.ServiceConfig) error {
		order = append(order, name)
		return nil
	}); err != nil {
		return nil, err
	}
	for _, name := range order {
		sc := cp.Services[name]
		s, err := service(cp, name, &sc)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", name, err)
		}
		nets[s.Network] = true
		p.Services = append(p.Services, *s)
	}
	for n := range nets {
		p.Networks = append(p.Networks, n)
	}
	sort.Strings(p.Networks)
	return p, nil
}

func service(cp *types.Project, name string, sc *types.ServiceConfig) (*project.Service, error) {
	if sc.Image == "" {
		return nil, errors.New("no image: berth runs images and does not build them")
	}
	for what, set := range map[string]bool{
		"build": sc.Build != nil, "privileged": sc.Privileged, "cap_add": len(sc.CapAdd) > 0,
		"secrets": len(sc.Secrets) > 0, "configs": len(sc.Configs) > 0, "devices": len(sc.Devices) > 0,
		"network_mode": sc.NetworkMode != "", "pid": sc.Pid != "", "ipc": sc.Ipc != "",
		"container_name": sc.ContainerName != "", "links": len(sc.Links) > 0, "extra_hosts": len(sc.ExtraHosts) > 0,
		"sysctls": len(sc.Sysctls) > 0, "tmpfs": len(sc.Tmpfs) > 0, "userns_mode": sc.UserNSMode != "",
	} {
		if set {
			return nil, fmt.Errorf("%s is not supported by berth", what)
		}
	}
	s := &project.Service{
		Name: name, Image: sc.Image, Isolation: "container", Replicas: sc.GetScale(),
		User: sc.User, WorkingDir: sc.WorkingDir, Hostname: sc.Hostname, ReadOnly: sc.ReadOnly,
		Restart: sc.Restart, Memory: int64(sc.MemLimit), CPUs: float64(sc.CPUS), Pids: sc.PidsLimit,
	}
	if sc.Init != nil {
		s.Init = *sc.Init
	}
	if s.Replicas < 0 {
		return nil, fmt.Errorf("replicas %d: must not be negative", s.Replicas)
	}
	switch {
	case sc.Runtime == "berth-vm":
		s.Isolation = "vm"
	case sc.Runtime != "" && sc.Runtime != "berth":
		return nil, fmt.Errorf("runtime %q: want berth or berth-vm", sc.Runtime)
	}
	if v, ok := sc.Extensions["x-berth-isolation"]; ok {
		iso, _ := v.(string)
		if iso != "container" && iso != "vm" {
			return nil, fmt.Errorf("x-berth-isolation %v: want container or vm", v)
		}
		s.Isolation = iso
	}
	if sc.Entrypoint != nil {
		s.Entrypoint = []string(sc.Entrypoint)
	}
	if sc.Command != nil {
		s.Command = []string(sc.Command)
	}
	var env []string
	for k, v := range sc.Environment {
		if v == nil {
			continue // unset with no value in the environment: left out, as Compose does
		}
		env = append(env, k+"="+*v)
	}
	sort.Strings(env)
	s.Env = env
	if d := sc.Deploy; d != nil {
		if l := d.Resources.Limits; l != nil {
			if l.MemoryBytes > 0 {
				s.Memory = int64(l.MemoryBytes)
			}
			if l.NanoCPUs > 0 {
				s.CPUs = float64(l.NanoCPUs)
			}
			if l.Pids > 0 {
				s.Pids = l.Pids
			}
		}
		if d.RestartPolicy != nil && s.Restart == "" {
			switch d.RestartPolicy.Condition {
			case "any":
				s.Restart = "always"
			case "on-failure":
				s.Restart = "on-failure"
				if d.RestartPolicy.MaxAttempts != nil {
					s.Restart += ":" + strconv.FormatUint(*d.RestartPolicy.MaxAttempts, 10)
				}
			case "none", "":
			}
		}
	}
	for _, pc := range sc.Ports {
		proto := pc.Protocol
		if proto == "" {
			proto = "tcp"
		}
		spec := fmt.Sprintf("%d/%s", pc.Target, proto)
		if pc.Published != "" {
			spec = pc.Published + ":" + spec
		}
		if pc.HostIP != "" {
			if pc.Published == "" {
				spec = ":" + spec
			}
			spec = pc.HostIP + ":" + spec
		}
		s.Ports = append(s.Ports, spec)
	}
	switch len(sc.Networks) {
	case 0:
		s.Network = "default"
	case 1:
		for n, cfg := range sc.Networks {
			if nc, ok := cp.Networks[n]; ok && bool(nc.External) {
				return nil, fmt.Errorf("network %s: external networks are not supported", n)
			}
			s.Network = n
			if cfg != nil {
				s.Aliases = append(s.Aliases, cfg.Aliases...)
			}
		}
	default:
		return nil, errors.New("berth attaches an instance to one network: list one")
	}
	deps := make([]string, 0, len(sc.DependsOn))
	for d := range sc.DependsOn {
		deps = append(deps, d)
	}
	sort.Strings(deps)
	for _, d := range deps {
		cond := sc.DependsOn[d].Condition
		switch cond {
		case "":
			cond = types.ServiceConditionStarted
		case types.ServiceConditionStarted, types.ServiceConditionHealthy, types.ServiceConditionCompletedSuccessfully:
		default:
			return nil, fmt.Errorf("depends_on %s: condition %q: want service_started, service_healthy or service_completed_successfully", d, cond)
		}
		s.DependsOn = append(s.DependsOn, project.Dependency{Service: d, Condition: cond})
	}
	if hc := sc.HealthCheck; hc != nil {
		h := &project.Health{Test: []string(hc.Test), Disable: hc.Disable}
		if hc.Interval != nil {
			h.Interval = time.Duration(*hc.Interval)
		}
		if hc.Timeout != nil {
			h.Timeout = time.Duration(*hc.Timeout)
		}
		if hc.StartPeriod != nil {
			h.StartPeriod = time.Duration(*hc.StartPeriod)
		}
		if hc.Retries != nil {
			h.Retries = int(*hc.Retries)
		}
		s.Health = h
	}
	for _, v := range sc.Volumes {
		if v.Type != types.VolumeTypeBind {
			return nil, fmt.Errorf("volume %s: only bind mounts are supported (type %s)", v.Target, v.Type)
		}
		src := v.Source
		if !filepath.IsAbs(src) {
			src = filepath.Join(cp.WorkingDir, src)
		}
		spec := src + ":" + v.Target
		if v.ReadOnly {
			spec += ":ro"
		}
		s.Volumes = append(s.Volumes, spec)
	}
	return s, nil
}
