package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/engine"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/health"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/lifecycle"
	"github.com/berth-dev/berth/internal/tty"
	"github.com/berth-dev/berth/internal/vm"
)

// runFlags are `berth run`'s flags.
type runFlags struct {
	opts       instance.RunOptions
	vm         bool
	kernel     string
	rm         bool
	detach     bool
	memory     string
	pull       string
	network    string
	net        instance.NetConfig
	publishAll bool
	bootTime   time.Duration
	entrypoint optString
	env, vols  listFlag
	labels     listFlag
	logOpts    listFlag
	// logConfig bounds a detached run's log; nil for a foreground run,
	// whose output goes to the terminal.
	logConfig *instance.LogConfig
	restart   string
	policy    *instance.RestartPolicy // nil: --restart no
	// check is what the --health-* flags set, merged over the image's
	// HEALTHCHECK in createInstance.
	check         health.Config
	healthCmd     string
	noHealthcheck bool
	onFailure     string
}

func parseRun(args []string) (*runFlags, string, error) {
	f := &runFlags{}
	fs := newFlags("run")
	o := &f.opts
	fs.BoolVar(&f.vm, "vm", false, "run as a virtual machine")
	fs.StringVar(&f.kernel, "kernel", "", "guest kernel for --vm (a vmlinuz, or a directory with boot/ and lib/modules/)")
	fs.DurationVar(&f.bootTime, "boot-timeout", 0, "how long --vm waits for the guest to come up, e.g. 90s (default 5m)")
	fs.BoolVar(&f.rm, "rm", false, "remove the instance when it ends")
	fs.BoolVar(&f.detach, "d", false, "run in the background and print the instance's ID")
	fs.BoolVar(&f.detach, "detach", false, "run in the background and print the instance's ID")
	fs.StringVar(&o.Name, "name", "", "instance name")
	fs.Var(&f.env, "e", "set an environment variable K=V")
	fs.Var(&f.env, "env", "set an environment variable K=V")
	fs.StringVar(&o.Workdir, "w", "", "working directory")
	fs.StringVar(&o.Workdir, "workdir", "", "working directory")
	fs.StringVar(&o.User, "u", "", "user UID[:GID] or NAME[:GROUP]")
	fs.StringVar(&o.User, "user", "", "user UID[:GID] or NAME[:GROUP]")
	fs.StringVar(&o.Hostname, "hostname", "", "host name")
	fs.StringVar(&o.Hostname, "h", "", "host name")
	fs.StringVar(&f.memory, "memory", "", "memory limit, e.g. 64m")
	fs.StringVar(&f.memory, "m", "", "memory limit, e.g. 64m")
	fs.Float64Var(&o.Limits.CPUs, "cpus", 0, "CPU limit, e.g. 0.5")
	fs.Int64Var(&o.Limits.Pids, "pids-limit", 0, "maximum number of processes")
	fs.Var(&f.vols, "v", "bind mount HOSTPATH:PATH[:ro]")
	fs.Var(&f.vols, "volume", "bind mount HOSTPATH:PATH[:ro]")
	fs.BoolVar(&o.Interactive, "i", false, "keep stdin open")
	fs.BoolVar(&o.Interactive, "interactive", false, "keep stdin open")
	fs.BoolVar(&o.Tty, "t", false, "allocate a terminal")
	fs.BoolVar(&o.Tty, "tty", false, "allocate a terminal")
	fs.BoolVar(&o.ReadOnly, "read-only", false, "mount the root file system read-only")
	fs.BoolVar(&o.Init, "init", false, "run berth's init as PID 1 in front of the command: it reaps orphans and relays signals")
	const netUsage = "network: bridge (the default network), NAME (a user network), none (loopback only) or host"
	fs.StringVar(&f.network, "network", defaultNetwork(), netUsage)
	fs.StringVar(&f.network, "net", defaultNetwork(), netUsage)
	fs.StringVar(&f.net.IP, "ip", "", "IPv4 address on a user network")
	fs.StringVar(&f.net.MAC, "mac-address", "", "MAC address of eth0")
	fs.Var((*listFlag)(&f.net.DNS), "dns", "name server for the instance")
	fs.Var((*listFlag)(&f.net.AddHosts), "add-host", "add NAME:IP to /etc/hosts (IP may be host-gateway)")
	fs.Var((*listFlag)(&f.net.Aliases), "network-alias", "another name the instance answers to on a user network")
	fs.Var((*listFlag)(&f.net.Publish), "p", "publish a port: [IP:][HOSTPORT:]PORT[/tcp|/udp]")
	fs.Var((*listFlag)(&f.net.Publish), "publish", "publish a port: [IP:][HOSTPORT:]PORT[/tcp|/udp]")
	fs.BoolVar(&f.publishAll, "P", false, "publish every port the image exposes on a free host port")
	fs.BoolVar(&f.publishAll, "publish-all", false, "publish every port the image exposes on a free host port")
	fs.Var(&f.entrypoint, "entrypoint", "override the image's entrypoint")
	fs.StringVar(&f.pull, "pull", "missing", "pull the image from its registry: missing (when the store lacks it), always or never")
	fs.Var(&f.labels, "label", "set a label K=V on the instance")
	fs.Var(&f.labels, "l", "set a label K=V on the instance")
	fs.Var(&f.logOpts, "log-opt", "bound the log of a detached run: max-size=SIZE (default 20m), max-file=N (default 5)")
	fs.StringVar(&f.restart, "restart", "no", "restart policy of a detached instance: no, on-failure[:N] (at most N restarts), always or unless-stopped")
	fs.StringVar(&f.healthCmd, "health-cmd", "", "health check: a command run in the instance with /bin/sh -c (exit 0: healthy)")
	fs.DurationVar(&f.check.Interval, "health-interval", 0, "time between health checks, e.g. 30s (default 30s)")
	fs.DurationVar(&f.check.Timeout, "health-timeout", 0, "time a health check may take before it counts as failed (default 30s)")
	fs.DurationVar(&f.check.StartPeriod, "health-start-period", 0, "time after the start during which failed checks do not count (default 0s)")
	fs.IntVar(&f.check.Retries, "health-retries", 0, "failed checks in a row that make the instance unhealthy (default 3)")
	fs.BoolVar(&f.noHealthcheck, "no-healthcheck", false, "run no health check, not even the image's HEALTHCHECK")
	fs.StringVar(&f.onFailure, "health-on-failure", "none", "when the instance turns unhealthy: none, kill, restart (needs -d) or stop")
	if err := parseStrict(fs, args); err != nil {
		return nil, "", err
	}
	if fs.NArg() == 0 {
		return nil, "", fmt.Errorf("want an IMAGE: %w", errdefs.ErrInvalid)
	}
	if err := checkServiceFlags(f); err != nil {
		return nil, "", err
	}
	o.Args = fs.Args()[1:]
	o.Env = f.env
	o.Volumes = f.vols
	if f.entrypoint.set {
		o.Entrypoint = &f.entrypoint.val
	}
	if f.memory != "" {
		m, err := instance.ParseBytes(f.memory)
		if err != nil {
			return nil, "", fmt.Errorf("--memory: %w", err)
		}
		o.Limits.Memory = m
	}
	if f.bootTime < 0 || (f.bootTime > 0 && !f.vm) {
		return nil, "", fmt.Errorf("--boot-timeout %v: want a positive duration, with --vm: %w", f.bootTime, errdefs.ErrInvalid)
	}
	if o.Limits.Pids == -1 {
		o.Limits.Pids = 0 // Docker's spelling of "no limit"
	}
	if err := o.Limits.Validate(); err != nil {
		return nil, "", err
	}
	logConfig, err := instance.ParseLogOpts(f.logOpts)
	if err != nil {
		return nil, "", err
	}
	if f.detach {
		f.logConfig = &logConfig
	}
	if f.kernel != "" && !f.vm {
		return nil, "", fmt.Errorf("--kernel %q: a guest kernel needs --vm: %w", f.kernel, errdefs.ErrInvalid)
	}
	switch f.pull {
	case "missing", "always", "never":
	default:
		return nil, "", fmt.Errorf("--pull %q: want missing, always or never: %w", f.pull, errdefs.ErrInvalid)
	}
	if err := checkNetFlags(f); err != nil {
		return nil, "", err
	}
	for _, l := range f.labels {
		if k, _, _ := strings.Cut(l, "="); k == "" {
			return nil, "", fmt.Errorf("--label %q: no name: %w", l, errdefs.ErrInvalid)
		}
	}
	return f, fs.Arg(0), nil
}

func cmdRun(g *globals, args []string) error {
	f, ref, err := parseRun(args)
	if err != nil {
		return err
	}
	if f.vm && f.opts.NetworkHost {
		return fmt.Errorf("--network host: a VM has its own kernel and network stack: %w", errdefs.ErrInvalid)
	}
	eng, err := engine.For(isolation(f.vm))
	if err != nil {
		return err
	}
	// The engine may begin now what it can without the image (the
	// container engine forks its init), while the image is resolved and
	// the records are written. A detached instance's monitor starts it.
	var pre engine.Prepared
	if !f.detach {
		skeleton := baseSpec("", &f.opts)
		skeleton.Process.Terminal = f.opts.Tty
		if pre = eng.Prepare(skeleton, foregroundStdio(&f.opts)); pre != nil {
			defer pre.Close()
		}
	}
	if pre == nil {
		container.Prewarm()
	}
	guard := guardStart(pre)
	st, in, b, err := createInstance(g, guard, eng, ref, f)
	if err != nil {
		return guard.failed(err)
	}
	if f.detach {
		// The monitor reads the bundle.
		if err := st.SaveBundle(in.ID, b); err != nil {
			_ = st.Remove(in.ID)
			return guard.failed(err)
		}
		return runDetached(g, guard, st, in)
	}
	// The bundle is written while the container starts; it is on disk
	// before the instance is recorded as running (berth exec reads it).
	saved := make(chan error, 1)
	go func() { saved <- st.SaveBundle(in.ID, b) }()
	return runForeground(g, guard, st, in, b, saved, &f.opts, pre)
}

// createInstance resolves the image, builds the spec and writes the
// instance's record (through guard, when not nil); it returns the
// bundle, for the caller to save. On failure nothing is left.
func createInstance(g *globals, guard *startGuard, eng engine.Engine, ref string, f *runFlags) (st *instance.Store, in *instance.Instance, b *instance.Bundle, err error) {
	images, err := g.imageStore()
	if err != nil {
		return nil, nil, nil, err
	}
	trace("image store open")
	img, err := resolveForRun(guard.context(), g, images, f.pull, ref)
	if err != nil {
		return nil, nil, nil, err
	}
	trace("image resolved")
	if err := holdImage(images, img); err != nil {
		return nil, nil, nil, err
	}
	layers, err := images.Layers(guard.context(), img)
	if err != nil {
		return nil, nil, nil, err
	}
	trace("image leased, layers ready")
	o := &f.opts
	id := instance.NewID()
	hostname := o.Hostname
	if hostname == "" {
		hostname = id[:12]
	}
	spec, err := buildSpec(id, hostname, img.Config.Config, o, layers)
	if err != nil {
		return nil, nil, nil, err
	}
	if f.bootTime > 0 {
		annotate(spec, vm.AnnotationBootTimeout, f.bootTime.String())
	}
	if o.Tty {
		// The workload sees the user's terminal size from its first
		// instruction (detached too, as with Docker).
		spec.Process.ConsoleSize = terminalSize()
	}
	st, err = g.instanceStore()
	if err != nil {
		return nil, nil, nil, err
	}
	in = &instance.Instance{
		ID:          id,
		Name:        o.Name,
		Image:       ref,
		ImageID:     img.ID.String(),
		Isolation:   eng.Name(),
		Kernel:      f.kernel,
		Command:     spec.Process.Args,
		Hostname:    hostname,
		Limits:      o.Limits,
		Detached:    f.detach,
		AutoRemove:  f.rm,
		Tty:         o.Tty,
		Interactive: o.Interactive,
		Init:        o.Init,
		Cgroup:      eng.Cgroup(id),
		LogConfig:   f.logConfig,
		Labels:      labels(f.labels),
		Created:     time.Now().UTC(),
		Status:      instance.Created,
		MonitorPid:  os.Getpid(),
		MonStart:    instance.ProcStart(os.Getpid()),
	}
	if in.Name == "" {
		in.Name = id[:12]
	}
	in.RestartPolicy, in.HealthOnFailure = f.policy, f.onFailure
	if in.Healthcheck, err = healthcheck(images, img, f); err != nil {
		return nil, nil, nil, err
	}
	if in.Healthcheck != nil {
		in.Health = health.NewState()
	}
	if f.net.Attached() {
		if in.Net, err = netConfig(g, f, img.Config.Config); err != nil {
			return nil, nil, nil, err
		}
		addNetworkFiles(spec, st.Dir(id))
	}
	trace("spec built")
	if err := guard.create(st, in); err != nil {
		return nil, nil, nil, err
	}
	trace("record created")
	return st, in, &instance.Bundle{Spec: spec, Layers: layers}, nil
}

// checkServiceFlags checks --restart and the health flags, and keeps
// what they say in f.
func checkServiceFlags(f *runFlags) error {
	p, err := instance.ParseRestartPolicy(f.restart)
	if err != nil {
		return err
	}
	if p.Restarts() {
		if f.rm {
			return fmt.Errorf("--restart %s: conflicts with --rm (an instance removed when it ends cannot start again): %w", f.restart, errdefs.ErrInvalid)
		}
		if !f.detach {
			return fmt.Errorf("--restart %s: needs -d (the monitor of a detached instance restarts it): %w", f.restart, errdefs.ErrInvalid)
		}
		f.policy = &p
	}
	if f.onFailure, err = instance.ParseHealthOnFailure(f.onFailure); err != nil {
		return err
	}
	if f.onFailure == instance.HealthRestart && !f.detach {
		return fmt.Errorf("--health-on-failure restart: needs -d (the monitor of a detached instance restarts it): %w", errdefs.ErrInvalid)
	}
	if f.healthCmd != "" {
		f.check.Test = []string{"CMD-SHELL", f.healthCmd}
	}
	c := f.check
	if f.noHealthcheck && (len(c.Test) > 0 || c.Interval != 0 || c.Timeout != 0 || c.StartPeriod != 0 || c.Retries != 0) {
		return fmt.Errorf("--no-healthcheck conflicts with the other --health-* flags: %w", errdefs.ErrInvalid)
	}
	return f.check.Validate()
}

// healthcheck is the check an instance of img runs: the image's
// HEALTHCHECK (in the config blob's Docker fields, which ocispec drops)
// merged with the run's flags; nil for none.
func healthcheck(images *image.Store, img image.Image, f *runFlags) (*health.Config, error) {
	var fromImage *health.Config
	if !f.noHealthcheck {
		blob, err := images.OpenBlob(img.ID)
		if err != nil {
			return nil, err
		}
		data, err := io.ReadAll(io.LimitReader(blob, 8<<20))
		blob.Close()
		if err != nil {
			return nil, err
		}
		if fromImage, err = health.FromImageConfig(data); err != nil {
			return nil, err
		}
	}
	return health.Merge(fromImage, &f.check, f.noHealthcheck), nil
}

// buildSpec turns the image config and run options into an OCI spec.
func buildSpec(id, hostname string, cfg ocispec.ImageConfig, o *instance.RunOptions, layers []string) (*specs.Spec, error) {
	spec := baseSpec(id, o)
	spec.Hostname = hostname
	if err := instance.ApplyProcess(spec.Process, cfg, o, hostname, instance.LayerReader(layers)); err != nil {
		return nil, err
	}
	mounts, err := instance.Mounts(o.Volumes)
	if err != nil {
		return nil, err
	}
	spec.Mounts = instance.WithVolumes(spec.Mounts, mounts)
	spec.Root.Readonly = o.ReadOnly
	spec.Linux.Resources = instance.Resources(o.Limits)
	if o.Init {
		annotate(spec, instance.AnnotationInit, "true")
	}
	return spec, nil
}

// labels makes --label values a map (K alone: an empty value).
func labels(vals []string) map[string]string {
	if len(vals) == 0 {
		return nil
	}
	m := map[string]string{}
	for _, v := range vals {
		k, val, _ := strings.Cut(v, "=")
		m[k] = val
	}
	return m
}

// annotate sets one of spec's annotations.
func annotate(spec *specs.Spec, key, value string) {
	if spec.Annotations == nil {
		spec.Annotations = map[string]string{}
	}
	spec.Annotations[key] = value
}

// baseSpec is berth's default spec with the namespaces the run options
// ask for.
func baseSpec(id string, o *instance.RunOptions) *specs.Spec {
	spec := container.DefaultSpec(id)
	if o.NetworkHost {
		var ns []specs.LinuxNamespace
		for _, n := range spec.Linux.Namespaces {
			if n.Type != specs.NetworkNamespace {
				ns = append(ns, n)
			}
		}
		spec.Linux.Namespaces = ns
	}
	return spec
}

// foregroundStdio is a foreground container's stdio: the CLI's own,
// stdin only with -i.
func foregroundStdio(o *instance.RunOptions) container.Stdio {
	stdio := container.Stdio{Stdout: os.Stdout, Stderr: os.Stderr}
	if o.Interactive {
		stdio.Stdin = os.Stdin
	}
	return stdio
}

// runForeground runs the instance attached to this terminal; the CLI is
// its owner and records its end.
func runForeground(g *globals, guard *startGuard, st *instance.Store, in *instance.Instance, b *instance.Bundle, saved <-chan error, o *instance.RunOptions, pre engine.Prepared) error {
	stdio := foregroundStdio(o)
	trace("record and bundle made")
	// With -t an engine with a local terminal allocates it on the host
	// and stdio is not used (c.Console() is its master); otherwise the
	// instance's own terminal streams through stdio.
	if in.Tty && !lifecycle.Traits(in).LocalTerminal {
		stdio.Stdin = os.Stdin
	}
	c, err := lifecycle.Start(guard.context(), lifecycle.StartOptions{
		Store: st, Instance: in, Bundle: b, Saved: saved, Stdio: stdio, Prepared: pre, Root: g.root,
	})
	trace("workload started")
	if err != nil {
		_ = st.Remove(in.ID)
		return guard.failed(err)
	}
	_, pending := guard.settle()
	stop := forwardSignals(c, pending)
	drained := func() {}
	if master := c.Console(); master != nil {
		var detach func()
		drained, detach = attachTerminal(master, o.Interactive)
		defer detach()
	} else if in.Tty {
		restore := tty.AttachFunc(os.Stdin, func(b specs.Box) { _ = c.Resize(uint16(b.Height), uint16(b.Width)) })
		defer restore()
	}
	stopHealth := lifecycle.WatchHealth(st, in, c)
	exit, endErr := lifecycle.Finish(st, in, c, nil)
	stopHealth()
	trace("instance finished and cleaned up")
	stop()
	if endErr != nil {
		// The workload's status alone would hide why it ended (and
		// --rm removes the record that holds the error).
		fmt.Fprintf(os.Stderr, "berth run: %s\n", oneLine(endErr))
	}
	drained()
	return exitStatus(exit.Code)
}

// attachTerminal connects this process's terminal to an instance's pty
// master: raw mode and window size, stdin in with -i, output out.
// drained waits (briefly) for the last output once the workload ended;
// detach restores the terminal and closes the master.
func attachTerminal(master *os.File, interactive bool) (drained, detach func()) {
	restore := tty.Attach(os.Stdin, master)
	if interactive {
		go func() { _, _ = io.Copy(master, os.Stdin) }()
	}
	copied := make(chan struct{})
	go func() { _, _ = io.Copy(os.Stdout, master); close(copied) }()
	drained = func() {
		select {
		case <-copied:
		case <-time.After(2 * time.Second):
		}
	}
	return drained, func() { restore(); master.Close() }
}

// terminalSize is the size of the user's terminal (stdin's, else
// stdout's), nil when neither is a terminal.
func terminalSize() *specs.Box {
	if b := tty.Size(os.Stdin); b != nil {
		return b
	}
	return tty.Size(os.Stdout)
}

func isolation(vm bool) string {
	if vm {
		return instance.IsolationVM
	}
	return instance.IsolationContainer
}
