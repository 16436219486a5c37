package instance

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/errdefs"
)

// RunOptions are the `berth run` flags that shape the workload.
type RunOptions struct {
	Name        string
	Entrypoint  *string  // --entrypoint; nil keeps the image's
	Args        []string // CMD [ARG...] after the image; empty keeps the image's Cmd
	Env         []string // -e K=V, or -e K to copy the host's value
	Workdir     string   // -w
	User        string   // -u UID[:GID] | NAME[:GROUP]
	Hostname    string
	Limits      Limits
	Volumes     []string // -v HOST:PATH[:ro|rw]
	ReadOnly    bool
	Tty         bool
	Interactive bool
	NetworkHost bool // --network host
	Init        bool // --init: berth's init is PID 1 (AnnotationInit)
}

// AnnotationInit, set to "true" in a spec's annotations, puts berth's
// init in front of the workload as its PID 1 (run --init, docker run
// --init): it reaps orphans and relays signals. Without it the workload
// is PID 1.
const AnnotationInit = "dev.berth.init"

// MinMemory is the smallest --memory berth accepts, Docker's: below it
// the container's init cannot start.
const MinMemory = 6 << 20

// maxHostname is the kernel's HOST_NAME_MAX.
const maxHostname = 64

// Validate checks the options that need no image: the environment, the
// host name, the working directory's form and the limits. Every error
// names the flag and value that were wrong.
func (o *RunOptions) Validate() error {
	if err := ValidateEnv(o.Env); err != nil {
		return err
	}
	if len(o.Hostname) > maxHostname {
		return fmt.Errorf("hostname %q: longer than %d bytes: %w", o.Hostname, maxHostname, errdefs.ErrInvalid)
	}
	if o.Workdir != "" && !filepath.IsAbs(o.Workdir) {
		return fmt.Errorf("working directory %q is not absolute: %w", o.Workdir, errdefs.ErrInvalid)
	}
	return o.Limits.Validate()
}

// Validate checks limits as Docker does: at least MinMemory of memory,
// between 0.01 and the host's CPU count of CPUs, a non-negative pids
// limit. Zero means no limit.
func (l Limits) Validate() error {
	if l.Memory < 0 || (l.Memory > 0 && l.Memory < MinMemory) {
		return fmt.Errorf("--memory: %d bytes is below the minimum of 6m: %w", l.Memory, errdefs.ErrInvalid)
	}
	if n := runtime.NumCPU(); math.IsNaN(l.CPUs) || l.CPUs < 0 || (l.CPUs > 0 && l.CPUs < 0.01) || l.CPUs > float64(n) {
		return fmt.Errorf("--cpus %v: want 0.01 to %d (the host's CPUs): %w", l.CPUs, n, errdefs.ErrInvalid)
	}
	if l.Pids < 0 {
		return fmt.Errorf("--pids-limit %d: must not be negative: %w", l.Pids, errdefs.ErrInvalid)
	}
	return nil
}

// ValidateEnv refuses -e values Docker refuses: an empty variable name
// ("=x", "").
func ValidateEnv(env []string) error {
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k == "" {
			return fmt.Errorf("environment variable %q: no name: %w", kv, errdefs.ErrInvalid)
		}
	}
	return nil
}

// defaultPath is what Docker puts in PATH when the image sets none.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Command returns the argv the image config and options give, Docker's way:
// an --entrypoint replaces the image's entrypoint and drops its Cmd; args
// replace the image's Cmd.
func Command(cfg ocispec.ImageConfig, o *RunOptions) ([]string, error) {
	entry, cmd := cfg.Entrypoint, cfg.Cmd
	if o.Entrypoint != nil {
		entry, cmd = nil, nil
		if *o.Entrypoint != "" {
			entry = []string{*o.Entrypoint}
		}
	}
	if len(o.Args) > 0 {
		cmd = o.Args
	}
	argv := append(append([]string{}, entry...), cmd...)
	if len(argv) == 0 {
		return nil, fmt.Errorf("no command given and the image has no Entrypoint or Cmd: %w", errdefs.ErrInvalid)
	}
	return argv, nil
}

// ApplyProcess fills p (a default spec's process) from the image config and
// options: args, env, cwd, user, terminal. rootfs reads the image's
// /etc/passwd and /etc/group to resolve user names.
func ApplyProcess(p *specs.Process, cfg ocispec.ImageConfig, o *RunOptions, hostname string, rootfs FileReader) error {
	if err := o.Validate(); err != nil {
		return err
	}
	argv, err := Command(cfg, o)
	if err != nil {
		return err
	}
	p.Args = argv
	p.Terminal = o.Tty
	p.Cwd = "/"
	if cfg.WorkingDir != "" {
		p.Cwd = cfg.WorkingDir
	}
	if o.Workdir != "" {
		p.Cwd = o.Workdir
	}
	if !filepath.IsAbs(p.Cwd) {
		return fmt.Errorf("working directory %q is not absolute: %w", p.Cwd, errdefs.ErrInvalid)
	}
	user := cfg.User
	if o.User != "" {
		user = o.User
	}
	u, err := ResolveUser(user, rootfs)
	if err != nil {
		return err
	}
	p.User = specs.User{UID: u.UID, GID: u.GID, AdditionalGids: u.Groups}
	env := MergeEnv(cfg.Env, o.Env)
	env = setDefault(env, "PATH", defaultPath[len("PATH="):])
	env = setDefault(env, "HOSTNAME", hostname)
	env = setDefault(env, "HOME", u.Home)
	if o.Tty {
		env = setDefault(env, "TERM", "xterm")
	}
	p.Env = env
	return nil
}

// MergeEnv overlays the -e values on the image's env. "-e K" copies the
// host's K if set, and is dropped otherwise.
func MergeEnv(image, flags []string) []string {
	env := append([]string{}, image...)
	for _, kv := range flags {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			hv, set := os.LookupEnv(k)
			if !set {
				continue
			}
			v = hv
		}
		env = setEnv(env, k, v)
	}
	return env
}

func setEnv(env []string, k, v string) []string {
	for i, kv := range env {
		if strings.HasPrefix(kv, k+"=") {
			env[i] = k + "=" + v
			return env
		}
	}
	return append(env, k+"="+v)
}

func setDefault(env []string, k, v string) []string {
	for _, kv := range env {
		if strings.HasPrefix(kv, k+"=") {
			return env
		}
	}
	return append(env, k+"="+v)
}

// Mounts turns -v flags into bind mounts. The host path must exist.
func Mounts(vols []string) ([]specs.Mount, error) {
	var out []specs.Mount
	for _, v := range vols {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
			return nil, fmt.Errorf("volume %q: want HOSTPATH:PATH[:ro]: %w", v, errdefs.ErrInvalid)
		}
		src, dst := parts[0], parts[1]
		if !filepath.IsAbs(src) || !filepath.IsAbs(dst) {
			return nil, fmt.Errorf("volume %q: both paths must be absolute: %w", v, errdefs.ErrInvalid)
		}
		switch filepath.Clean(dst) {
		case "/", "/proc":
			// Over / the image is gone; over /proc the masked paths are.
			return nil, fmt.Errorf("volume %q: cannot mount over %s: %w", v, filepath.Clean(dst), errdefs.ErrInvalid)
		}
		if _, err := os.Stat(src); err != nil {
			return nil, fmt.Errorf("volume %q: host path %s does not exist: %w", v, src, errdefs.ErrInvalid)
		}
		opts := []string{"rbind", "rprivate"}
		if len(parts) == 3 {
			switch parts[2] {
			case "ro":
				opts = append(opts, "ro")
			case "rw":
			default:
				return nil, fmt.Errorf("volume %q: unknown option %q (want ro or rw): %w", v, parts[2], errdefs.ErrInvalid)
			}
		}
		out = append(out, specs.Mount{Destination: filepath.Clean(dst), Source: filepath.Clean(src), Type: "bind", Options: opts})
	}
	return out, nil
}

// WithVolumes puts the -v mounts after the default ones, as Docker does:
// a volume replaces a default mount at the same destination, and a
// volume on /dev replaces every default under /dev too (its /dev/pts,
// /dev/shm, ...), so what the user bound is what the workload sees.
func WithVolumes(defaults, volumes []specs.Mount) []specs.Mount {
	dests := map[string]bool{}
	for _, v := range volumes {
		dests[filepath.Clean(v.Destination)] = true
	}
	var out []specs.Mount
	for _, m := range defaults {
		d := filepath.Clean(m.Destination)
		if dests[d] || (dests["/dev"] && strings.HasPrefix(d, "/dev/")) {
			continue
		}
		out = append(out, m)
	}
	return append(out, volumes...)
}

// Resources turns limits into the OCI resources block, with Docker's
// default device rules: no device but creating nodes (CAP_MKNOD) and tun;
// the engine adds null, zero, full, random, urandom, tty, console, ptmx
// and the pseudo-terminals.
func Resources(l Limits) *specs.LinuxResources {
	r := &specs.LinuxResources{Devices: DefaultDeviceRules()}
	if l.Memory > 0 {
		m := l.Memory
		r.Memory = &specs.LinuxMemory{Limit: &m, Swap: &m} // no swap beyond the limit
	}
	if l.CPUs > 0 {
		period := uint64(100000)
		quota := int64(math.Ceil(l.CPUs * float64(period)))
		r.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	if l.Pids > 0 {
		p := l.Pids
		r.Pids = &specs.LinuxPids{Limit: &p}
	}
	return r
}

// ParseBytes reads sizes as Docker does: a number with an optional b, k, m
// or g suffix (powers of 1024).
func ParseBytes(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(t, "b")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k':
			mult, t = 1<<10, t[:n-1]
		case 'm':
			mult, t = 1<<20, t[:n-1]
		case 'g':
			mult, t = 1<<30, t[:n-1]
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err == nil {
		v *= float64(mult)
	}
	// NaN fails every comparison: test for the good range, not the bad.
	if err != nil || !(v >= 1 && v <= math.MaxInt64/2) {
		return 0, fmt.Errorf("size %q: want a positive number with an optional k, m or g suffix: %w", s, errdefs.ErrInvalid)
	}
	return int64(v), nil
}

// DefaultDeviceRules are the device cgroup rules of `berth run`'s spec
// (Docker's): no device but mknod, and tun.
func DefaultDeviceRules() []specs.LinuxDeviceCgroup {
	any, tun, tunMinor := int64(-1), int64(10), int64(200)
	return []specs.LinuxDeviceCgroup{
		{Allow: false, Access: "rwm"},
		{Allow: true, Type: "c", Major: &any, Minor: &any, Access: "m"},
		{Allow: true, Type: "b", Major: &any, Minor: &any, Access: "m"},
		{Allow: true, Type: "c", Major: &tun, Minor: &tunMinor, Access: "rwm"},
	}
}
