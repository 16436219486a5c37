package cgroups

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
)

// Root is where the host mounts its cgroup file systems.
const Root = "/sys/fs/cgroup"

// DetectMode reports the host's cgroup layout by looking at the file system
// type of /sys/fs/cgroup, of /sys/fs/cgroup/unified, and at the v1
// hierarchies in /proc/self/mountinfo. The answer is worked out once per
// process (a container start asks several times; each look costs a few
// hundred microseconds) and then kept: a host does not change its
// cgroup layout under running programs.
func DetectMode() Mode { return detectedMode() }

var detectedMode = sync.OnceValue(func() Mode {
	var st unix.Statfs_t
	if err := unix.Statfs(Root, &st); err != nil {
		return ModeNone
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		return ModeV2
	}
	mounts, err := v1Mounts()
	if err != nil || len(mounts) == 0 {
		return ModeNone
	}
	if err := unix.Statfs(Root+"/unified", &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return ModeHybrid
	}
	return ModeV1
})

// New returns the Manager for the cgroup at path (relative to each
// hierarchy's root, e.g. "/berth/ID") using the host's cgroup layout: v1
// controllers on v1 and hybrid hosts, the unified hierarchy on v2 hosts. It
// does not touch the file system; call Create.
func New(path string) (Manager, error) {
	if err := checkPath(path); err != nil {
		return nil, err
	}
	switch mode := DetectMode(); mode {
	case ModeV1, ModeHybrid:
		return NewV1(path)
	case ModeV2:
		return NewV2(Root, path)
	default:
		return nil, fmt.Errorf("cgroup %s: no cgroup file system mounted at %s: %w", path, Root, errdefs.ErrUnavailable)
	}
}

// v1Mounts maps each v1 controller to its mount point, from
// /proc/self/mountinfo. Co-mounted controllers (such as "cpu,cpuacct") map to
// the same directory. Named hierarchies (name=systemd) are left out; the
// first mount of a controller wins.
func v1Mounts() (map[string]string, error) {
	m, err := v1MountsOnce()
	if err != nil {
		return nil, err
	}
	return maps.Clone(m), nil
}

// v1MountsOnce reads the v1 hierarchies once per process (see DetectMode).
var v1MountsOnce = sync.OnceValues(func() (map[string]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	return parseV1Mounts(f)
})

// parseV1Mounts does v1Mounts' work on a mountinfo text.
func parseV1Mounts(r io.Reader) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		// id parent maj:min root mountpoint options [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 || qf[0] != "cgroup" {
			continue
		}
		mnt := unescapeMount(pf[4])
		for _, opt := range strings.Split(qf[2], ",") {
			if !knownV1[opt] {
				continue
			}
			if _, dup := out[opt]; !dup {
				out[opt] = mnt
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	return out, nil
}

// knownV1 are the v1 controller names that can appear in a cgroup mount's
// super options.
var knownV1 = map[string]bool{
	"cpu": true, "cpuacct": true, "cpuset": true, "memory": true,
	"devices": true, "freezer": true, "blkio": true, "pids": true,
	"net_cls": true, "net_prio": true, "perf_event": true, "hugetlb": true,
	"rdma": true, "misc": true,
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
