package container

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// holder starts a process that holds new namespaces of the given kinds
// (unshared, so a new mount namespace is private) and returns its pid;
// it is killed when the test ends.
func holder(t *testing.T, unshare uintptr) (pid int, stop func()) {
	t.Helper()
	cmd := exec.Command("/bin/sleep", "1000")
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: unshare}
	if err := cmd.Start(); err != nil {
		t.Fatalf("namespace holder: %v", err)
	}
	stop = func() {
		cmd.Process.Kill()
		cmd.Wait()
	}
	t.Cleanup(stop)
	return cmd.Process.Pid, stop
}

func nsLink(t *testing.T, pid, kind string) string {
	t.Helper()
	l, err := os.Readlink("/proc/" + pid + "/ns/" + kind)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func withoutNamespace(ns []specs.LinuxNamespace, drop ...specs.LinuxNamespaceType) []specs.LinuxNamespace {
	var out []specs.LinuxNamespace
	for _, n := range ns {
		if !slicesContains(drop, n.Type) {
			out = append(out, n)
		}
	}
	return out
}

func slicesContains(s []specs.LinuxNamespaceType, v specs.LinuxNamespaceType) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// hostMounts is the test process's mount table.
func hostMounts(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestJoinMountAndUTSNamespacesByPath(t *testing.T) {
	hpid, stop := holder(t, unix.CLONE_NEWNS|unix.CLONE_NEWUTS)
	pid := fmt.Sprint(hpid)
	cfg := sh(t, "readlink /proc/self/ns/mnt; hostname; cat /etc/busybox-marker")
	if err := os.WriteFile(filepath.Join(cfg.Spec.Root.Path, "etc/busybox-marker"), []byte("in the rootfs\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Spec.Hostname = "joinedhost"
	for i, ns := range cfg.Spec.Linux.Namespaces {
		switch ns.Type {
		case specs.MountNamespace:
			cfg.Spec.Linux.Namespaces[i].Path = "/proc/" + pid + "/ns/mnt"
		case specs.UTSNamespace:
			cfg.Spec.Linux.Namespaces[i].Path = "/proc/" + pid + "/ns/uts"
		}
	}
	r := run(t, cfg)
	want := nsLink(t, pid, "mnt") + "\njoinedhost\nin the rootfs\n"
	if r.stdout != want {
		t.Fatalf("got %q, want %q (stderr %q)", r.stdout, want, r.stderr)
	}
	// The hostname was set in the joined namespace, not the host's.
	host, _ := os.Hostname()
	if host == "joinedhost" {
		t.Fatal("the host's hostname was changed")
	}
	cfg2 := newConfig(t, "hostname")
	cfg2.Spec.Hostname = ""
	cfg2.Spec.Linux.Namespaces = withoutNamespace(cfg2.Spec.Linux.Namespaces, specs.UTSNamespace)
	cfg2.Spec.Linux.Namespaces = append(cfg2.Spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UTSNamespace, Path: "/proc/" + pid + "/ns/uts"})
	if r := run(t, cfg2); r.stdout != "joinedhost\n" {
		t.Fatalf("second container in the joined UTS namespace: %q (stderr %q)", r.stdout, r.stderr)
	}
	// The rootfs was mounted in the joined namespace only.
	if strings.Contains(hostMounts(t), cfg.Spec.Root.Path) {
		t.Fatal("the container's root is mounted in the host's mount namespace")
	}
	stop()
	assertGone(t, cfg)
}

// A spec without a mount namespace shares the host's: the workload's
// /proc/self/ns/mnt is the host's, yet it sees its own root and mounts,
// and nothing is mounted in the host's table.
func TestNoMountNamespace(t *testing.T) {
	cfg := sh(t, "readlink /proc/self/ns/mnt; readlink /proc/self/ns/pid; cat /etc/busybox-marker; test -e /proc/self/stat && echo proc; echo up; exec sleep 1000")
	if err := os.WriteFile(filepath.Join(cfg.Spec.Root.Path, "etc/busybox-marker"), []byte("in the rootfs\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Spec.Hostname = ""
	cfg.Spec.Linux.Namespaces = nil
	outR, outW, _ := os.Pipe()
	defer outR.Close()
	c, err := Run(context.Background(), cfg, Stdio{Stdout: outW, Stderr: outW})
	outW.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Destroy() })
	var out []byte
	buf := make([]byte, 512)
	for !bytes.HasSuffix(out, []byte("up\n")) {
		n, err := outR.Read(buf)
		if err != nil {
			t.Fatalf("workload output %q: %v", out, err)
		}
		out = append(out, buf[:n]...)
	}
	want := nsLink(t, "self", "mnt") + "\n" + nsLink(t, "self", "pid") + "\nin the rootfs\nproc\nup\n"
	if string(out) != want {
		t.Fatalf("got %q, want %q", out, want)
	}
	if strings.Contains(hostMounts(t), cfg.Spec.Root.Path) {
		t.Fatal("the container's mounts are in the host's mount table")
	}
	// exec runs in the container's root, not the host's.
	if got := execOutput(t, c, cfg, "cat", "/etc/busybox-marker"); got != "in the rootfs\n" {
		t.Fatalf("exec: %q", got)
	}
	c.Signal(syscall.SIGKILL)
	c.Wait()
	c.Destroy()
	assertGone(t, cfg)
}

// searchable lets a user namespace's root (an unprivileged host uid)
// reach the test's root file system.
func searchable(t *testing.T, root string) {
	t.Helper()
	for d := filepath.Dir(root); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUserNamespace(t *testing.T) {
	cfg := sh(t, "cat /proc/self/uid_map /proc/self/gid_map; id -u; stat -c %u /etc/passwd; grep CapEff /proc/self/status; readlink /proc/self/ns/user")
	searchable(t, cfg.Spec.Root.Path)
	cfg.Spec.Linux.Namespaces = append(cfg.Spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
	cfg.Spec.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	cfg.Spec.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 200000, Size: 65536}}
	r := run(t, cfg)
	f := strings.Fields(r.stdout)
	// uid_map, gid_map (3 fields each), uid, owner of a host-root file
	// (unmapped: the overflow uid), CapEff, the namespace.
	if len(f) != 11 || strings.Join(f[:6], " ") != "0 100000 65536 0 200000 65536" || f[6] != "0" || f[7] != "65534" ||
		f[9] != "00000000a80425fb" || f[10] == nsLink(t, "self", "user") {
		t.Fatalf("got %q (stderr %q)", r.stdout, r.stderr)
	}
	assertGone(t, cfg)
}

// The init's own uid on the host is the mapped one.
func TestUserNamespaceHostUID(t *testing.T) {
	cfg := sh(t, "echo up; exec sleep 1000")
	searchable(t, cfg.Spec.Root.Path)
	cfg.Spec.Linux.Namespaces = append(cfg.Spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
	cfg.Spec.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	cfg.Spec.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	c := runUntilUp(t, cfg)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "\nUid:\t100000\t100000\t100000\t100000\n") {
		t.Fatalf("init's host uid: %s", b)
	}
	// exec joins the container's user namespace: it is its root, not
	// the host's.
	out := execOutput(t, c, cfg, "sh", "-c", "id -u; cat /proc/self/uid_map; readlink /proc/self/ns/user; readlink /proc/self/ns/pid")
	init := fmt.Sprint(c.Pid())
	want := "0 100000 65536 " + nsLink(t, init, "user") + " " + nsLink(t, init, "pid")
	if got := strings.Join(strings.Fields(string(out)), " "); got != "0 "+want {
		t.Fatalf("exec: got %q, want %q", got, "0 "+want)
	}
}

// A user namespace given by path is joined (the other namespaces are
// new, owned by it).
func TestJoinUserNamespaceByPath(t *testing.T) {
	h := exec.Command("/bin/sleep", "1000")
	h.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  unix.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 300000, Size: 65536}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 300000, Size: 65536}},
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			h.Process.Kill()
			h.Wait()
			stopped = true
		}
	}
	defer stop()
	hpid := fmt.Sprint(h.Process.Pid)
	cfg := sh(t, "id -u; cat /proc/self/uid_map; readlink /proc/self/ns/user; grep CapEff /proc/self/status")
	searchable(t, cfg.Spec.Root.Path)
	cfg.Spec.Linux.Namespaces = append(cfg.Spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: "/proc/" + hpid + "/ns/user"})
	r := run(t, cfg)
	want := "0 0 300000 65536 " + nsLink(t, hpid, "user") + " CapEff: 00000000a80425fb"
	if got := strings.Join(strings.Fields(r.stdout), " "); got != want {
		t.Fatalf("got %q, want %q (stderr %q)", got, want, r.stderr)
	}
	stop()
	assertGone(t, cfg)

	bad := newConfig(t, "true")
	bad.Spec.Linux.Namespaces = append(bad.Spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: "/nonexistent/user"})
	if _, err := Create(context.Background(), bad, Stdio{}); err == nil || !strings.Contains(err.Error(), "/nonexistent/user") {
		t.Fatalf("missing user namespace: %v", err)
	}
	assertGone(t, bad)
}

func TestNamespaceConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*specs.Spec)
		want error
	}{
		{"mappings without a user namespace", func(s *specs.Spec) {
			s.Linux.UIDMappings = []specs.LinuxIDMapping{{HostID: 1000, Size: 1}}
		}, errdefs.ErrInvalid},
		{"user namespace without mappings", func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		}, errdefs.ErrInvalid},
		{"user namespace without a mount namespace", func(s *specs.Spec) {
			s.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.UserNamespace}}
			s.Linux.UIDMappings = []specs.LinuxIDMapping{{HostID: 1000, Size: 1}}
			s.Linux.GIDMappings = []specs.LinuxIDMapping{{HostID: 1000, Size: 1}}
		}, errdefs.ErrInvalid},
		{"bad rootfsPropagation", func(s *specs.Spec) { s.Linux.RootfsPropagation = "sideways" }, errdefs.ErrInvalid},
	} {
		cfg := newConfig(t, "true")
		tc.edit(cfg.Spec)
		_, err := Create(context.Background(), cfg, Stdio{})
		if !errors.Is(err, tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
		assertGone(t, cfg)
	}
}

// rootfsPropagation sets the propagation of the container's /, and a
// mount made in the container never reaches the host, shared or not.
func TestRootfsPropagation(t *testing.T) {
	for prop, tag := range map[string]string{"shared": "shared:", "slave": "master:", "private": "", "unbindable": "unbindable"} {
		cfg := sh(t, "awk '$5 == \"/\" { for (i = 7; $i != \"-\"; i++) printf \"%s \", $i; print \"\" }' /proc/self/mountinfo; mkdir -p /m && mount -t tmpfs berthprop-"+prop+" /m && echo mounted")
		cfg.Spec.Linux.RootfsPropagation = prop
		all := []string{"CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID"}
		cfg.Spec.Process.Capabilities = &specs.LinuxCapabilities{Bounding: all, Effective: all, Permitted: all}
		cfg.Spec.Linux.Seccomp = nil
		r := run(t, cfg)
		lines := strings.SplitN(r.stdout, "\n", 2)
		if len(lines) != 2 || lines[1] != "mounted\n" {
			t.Fatalf("%s: got %q (stderr %q)", prop, r.stdout, r.stderr)
		}
		tags := lines[0]
		ok := strings.Contains(tags, tag)
		if prop == "slave" {
			// A slave of a private mount (this host's root may be one)
			// is private; it is never shared.
			ok = !strings.Contains(tags, "shared:")
		}
		if tag == "" {
			ok = !strings.Contains(tags, "shared:") && !strings.Contains(tags, "master:") && !strings.Contains(tags, "unbindable")
		}
		if !ok {
			t.Errorf("%s: / has propagation %q", prop, tags)
		}
		if strings.Contains(hostMounts(t), "berthprop-"+prop) {
			t.Errorf("%s: the container's mount reached the host", prop)
		}
	}
}

// execOutput runs args in the running container c (made from cfg) and
// returns what it printed; anything but a clean exit fails the test.
func execOutput(t *testing.T, c *Container, cfg *Config, args ...string) string {
	t.Helper()
	p := DefaultSpec(cfg.ID).Process
	p.Args = args
	er, ew, _ := os.Pipe()
	defer er.Close()
	proc, err := Exec(context.Background(), c.Pid(), cfg.KeepInit, cfg.CgroupPath, p, Stdio{Stdout: ew, Stderr: ew})
	ew.Close()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(er)
	if exit, err := proc.Wait(); err != nil || exit.Code != 0 {
		t.Fatalf("exec %q: %+v %v %q", args, exit, err, out)
	}
	return string(out)
}
