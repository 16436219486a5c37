package instance

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
)

// Remnant is a live process of an instance found by Remnants.
type Remnant struct {
	Pid   int
	Start uint64 // see ProcStart
	// Owner marks the berth process that owns the instance (its
	// monitor, or for a VM the CLI that runs it in the foreground): it
	// ends by itself once the workload has.
	Owner bool
}

// Alive reports whether the process still runs (a zombie does not).
func (r Remnant) Alive() bool { return Alive(r.Pid, r.Start) }

// Kill sends SIGKILL to the process if it is still the one found.
func (r Remnant) Kill() {
	if r.Alive() {
		_ = syscall.Kill(r.Pid, syscall.SIGKILL)
	}
}

// Remnants finds the live processes of the instance whose directory is
// dir by what they hold, for when its record cannot say (it is
// unreadable): the processes of members (those of the container's
// cgroup) and the init of their pid namespace (a container's init, which
// on cgroup v1 lives outside the cgroup), every process holding a unix
// socket bound in dir (a VM's QEMU and virtiofsd), and what these
// started; then, as owners, every process whose command line holds
// marker as consecutive arguments (a detached instance's monitor) and
// the holders of the control socket. The calling process is never
// listed.
func Remnants(dir string, marker []string, members []int) []Remnant {
	procs := scanProcs()
	found := map[int]bool{}
	for _, pid := range members {
		if _, ok := procs[pid]; !ok {
			continue
		}
		found[pid] = true
		if init := nsInit(procs, pid); init > 0 {
			found[init] = true
		}
	}
	socks := boundSockets(dir)
	control := map[int]bool{}
	if len(socks) > 0 {
		for pid := range procs {
			for _, ino := range socketInodes(pid) {
				isControl, ok := socks[ino]
				switch {
				case !ok:
				case isControl:
					control[pid] = true
				default:
					found[pid] = true
				}
			}
		}
	}
	// What the workload's processes started (a forked child not yet
	// moved into the cgroup, virtiofsd's sandbox) goes with them.
	for grew := true; grew; {
		grew = false
		for pid, p := range procs {
			if !found[pid] && found[p.ppid] {
				found[pid], grew = true, true
			}
		}
	}
	owners := control
	if len(marker) > 0 {
		for pid := range procs {
			if hasArgs(pid, marker) {
				owners[pid] = true
			}
		}
	}
	var out []Remnant
	self := os.Getpid()
	for pid, p := range procs {
		if pid == self || pid <= 1 {
			continue
		}
		if found[pid] || owners[pid] {
			out = append(out, Remnant{Pid: pid, Start: p.start, Owner: !found[pid]})
		}
	}
	slices.SortFunc(out, func(a, b Remnant) int { return a.Pid - b.Pid })
	return out
}

// proc is what Remnants needs of a process.
type proc struct {
	ppid  int
	start uint64
}

// scanProcs lists the live processes (zombies excluded).
func scanProcs() map[int]proc {
	ents, _ := os.ReadDir("/proc")
	out := make(map[int]proc, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f := statFields(pid)
		if len(f) < 20 || f[0] == "Z" {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		start, _ := strconv.ParseUint(f[19], 10, 64)
		out[pid] = proc{ppid: ppid, start: start}
	}
	return out
}

// nsInit returns the first process (pid 1) of pid's pid namespace when it
// is an ancestor of pid (or pid itself), else 0: a container's init.
func nsInit(procs map[int]proc, pid int) int {
	ns := pidNS(pid)
	if ns == "" {
		return 0
	}
	top := pid
	for {
		pp := procs[top].ppid
		if pp <= 1 || pidNS(pp) != ns {
			break
		}
		top = pp
	}
	if !firstInNS(top) {
		return 0
	}
	return top
}

func pidNS(pid int) string {
	ns, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/pid")
	return ns
}

// firstInNS says whether pid is pid 1 of its own pid namespace, and not
// of the initial one.
func firstInNS(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "NSpid:"); ok {
			f := strings.Fields(rest)
			return len(f) > 1 && f[len(f)-1] == "1"
		}
	}
	return false
}

// boundSockets maps the inodes of the unix sockets bound to a socket
// file in dir (listening, and the connections they accepted) to whether
// that file is the control socket. A socket bound under a long path is
// bound through /proc/self/fd (see sockpath): it is found by the file it
// is bound to (sock_diag), where the kernel says, else by the path it was
// bound at (/proc/net/unix). Only sockets of this network namespace are
// seen.
func boundSockets(dir string) map[uint64]bool {
	type file struct{ dev, ino uint64 }
	files := map[file]bool{}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		var st unix.Stat_t
		p := filepath.Join(dir, e.Name())
		if e.Type() == fs.ModeSocket && unix.Lstat(p, &st) == nil {
			files[file{st.Dev, st.Ino}] = p == ControlSocket(dir)
		}
	}
	out := map[uint64]bool{}
	if len(files) == 0 {
		return out
	}
	err := unixSockets(func(ino uint64, vfsDev, vfsIno uint32) {
		// The kernel's own encoding of the device: major << 20 | minor.
		for f, control := range files {
			if uint32(f.ino) == vfsIno && unix.Major(f.dev) == vfsDev>>20 && unix.Minor(f.dev) == vfsDev&0xfffff {
				out[ino] = control
			}
		}
	})
	if err == nil {
		return out
	}
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return out
	}
	prefix := filepath.Clean(dir) + "/"
	for _, l := range strings.Split(string(b), "\n") {
		// Num RefCount Protocol Flags Type St Inode Path
		f := strings.Fields(l)
		if len(f) < 8 || !strings.HasPrefix(f[7], prefix) {
			continue
		}
		if ino, err := strconv.ParseUint(f[6], 10, 64); err == nil {
			out[ino] = f[7] == ControlSocket(dir)
		}
	}
	return out
}

// unixSockets calls fn for every unix socket of this network namespace
// bound to a file: its inode, and the device and inode of the file, as
// the kernel's sock_diag interface lists them (UDIAG_SHOW_VFS).
func unixSockets(fn func(ino uint64, vfsDev, vfsIno uint32)) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	const (
		sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
		showVFS          = 2  // UDIAG_SHOW_VFS
		attrVFS          = 1  // UNIX_DIAG_VFS
		hdrLen           = unix.SizeofNlMsghdr
	)
	// struct unix_diag_req: family, protocol, pad, states, ino, show, cookie.
	req := make([]byte, hdrLen+24)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], sockDiagByFamily)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], 1)
	req[hdrLen] = unix.AF_UNIX
	ne.PutUint32(req[hdrLen+4:], ^uint32(0)) // every state
	ne.PutUint32(req[hdrLen+12:], showVFS)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				return fmt.Errorf("sock_diag: %w", errdefs.ErrUnavailable)
			}
			// struct unix_diag_msg (16 bytes), then attributes.
			d := m.Data
			if len(d) < 16 {
				continue
			}
			ino := uint64(ne.Uint32(d[4:]))
			for a := d[16:]; len(a) >= 4; {
				l, typ := int(ne.Uint16(a)), ne.Uint16(a[2:])
				if l < 4 || l > len(a) {
					break
				}
				if typ == attrVFS && l >= 12 {
					fn(ino, ne.Uint32(a[8:]), ne.Uint32(a[4:]))
				}
				a = a[min((l+3)&^3, len(a)):]
			}
		}
	}
}

// socketInodes lists the inodes of the sockets pid has open.
func socketInodes(pid int) []uint64 {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, _ := os.ReadDir(dir)
	var out []uint64
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if s, ok := strings.CutPrefix(l, "socket:["); ok {
			if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
				out = append(out, ino)
			}
		}
	}
	return out
}

// hasArgs says whether pid's command line holds seq as consecutive
// arguments.
func hasArgs(pid int, seq []string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
	for i := 0; i+len(seq) <= len(args); i++ {
		if slices.Equal(args[i:i+len(seq)], seq) {
			return true
		}
	}
	return false
}
