package vm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/cgroups"
)

// QEMU is confined (a guest that escapes into it must find little to
// take):
//
//   - its seccomp sandbox, -sandbox on with obsolete, spawn and
//     resourcecontrol denied: no exec or fork, no obsolete system calls,
//     no change of scheduling, affinity or priority. elevateprivileges is
//     left allowed: QEMU's own drop of its uid (-runas) is a setuid call
//     made after the filter is in place, which that option kills; once
//     dropped, QEMU has no capability and no way to exec a set-user-ID
//     program, so it could not elevate anyway. The filter sets
//     no_new_privs.
//   - an unprivileged uid and gid (-runas, DefaultRunAs), and a root of
//     an empty directory (-chroot): QEMU opens what it needs as root
//     (kernel, initramfs, firmware, disks, RAM file, /dev/kvm), then,
//     before the guest's first instruction, chroots and drops to the uid,
//     with no capability left. Everything later comes as a descriptor:
//     sockets and console from the start, a template's state to restore
//     or to save over QMP.
//   - a host cgroup (Config.Cgroup) that QEMU and virtiofsd are born in:
//     HostResources bounds it.
//
// virtiofsd keeps uid 0, which it needs to act as the owners of the
// shared files, but no more than that (virtiofs.go): no_new_privs and a
// bounding set of the capabilities it uses from its exec on, its own
// sandbox (namespaces with the shared directory as root, seccomp), and
// the same host cgroup as QEMU.

// DefaultRunAs is the uid:gid QEMU drops to: nobody and nogroup.
const DefaultRunAs = "65534:65534"

// sandboxOptions are QEMU's -sandbox options (see above).
const sandboxOptions = "on,obsolete=deny,spawn=deny,resourcecontrol=deny"

// jailDir is the empty directory QEMU chroots to.
func jailDir(dir string) string { return filepath.Join(dir, "qemu-root") }

func (cfg Config) runAs() string {
	if cfg.RunAs != "" {
		return cfg.RunAs
	}
	return DefaultRunAs
}

// confineArgs are QEMU's options that confine it, as its release spells
// them: -runas and -chroot until 8.0; 8.1 moved the chroot into
// -run-with, and 9.1 the user too (the old options went later).
func confineArgs(cfg Config) []string {
	a := []string{"-sandbox", sandboxOptions}
	switch v := cfg.QEMUVersion; {
	case v.AtLeast(9, 1):
		return append(a, "-run-with", "chroot="+escape(jailDir(cfg.Dir))+",user="+cfg.runAs())
	case v.AtLeast(8, 1):
		return append(a, "-runas", cfg.runAs(), "-run-with", "chroot="+escape(jailDir(cfg.Dir)))
	}
	return append(a, "-runas", cfg.runAs(), "-chroot", jailDir(cfg.Dir))
}

// makeJail makes the empty root QEMU chroots to, anew.
func makeJail(dir string) error {
	j := jailDir(dir)
	if err := os.Remove(j); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("qemu's root %s: %w", j, err)
	}
	if err := os.Mkdir(j, 0o500); err != nil {
		return fmt.Errorf("qemu's root: %w", err)
	}
	return nil
}

// QEMU's host memory beyond guest RAM, as measured under software
// emulation (docs/design.md, "A confined hypervisor"): the translation
// cache, bounded with tb-size (tcgCacheMiB), and QEMU's own heap,
// libraries and device state, about 60 MiB, with room to spare. Under
// KVM there is no translation cache.
const (
	tcgCacheMiB    = 256
	qemuOverheadMi = 128
)

// hostPidsMax bounds the tasks in a VM's host cgroup: QEMU's threads (a
// few, one per vCPU, and its I/O worker pool of at most 64) and the
// virtiofsd of each share with its own pool.
const hostPidsMax = 512

// HostResources are the limits of a VM's host cgroup, for a guest of
// memMiB MiB (0: the default) on accel: guest RAM plus QEMU's overhead,
// and a pids limit. extraMiB is room for other processes in the same
// cgroup (berth-runtime's VM owner).
func HostResources(memMiB int, accel Accel, extraMiB int) cgroups.Resources {
	if memMiB <= 0 {
		memMiB = defaultMemoryMiB
	}
	mib := memMiB + qemuOverheadMi + extraMiB
	if accel != AccelKVM {
		mib += tcgCacheMiB
	}
	return cgroups.Resources{Memory: int64(mib) << 20, Pids: hostPidsMax}
}

// HostResourcesOf are HostResources for the guest Boot makes of spec.
func HostResourcesOf(spec *specs.Spec, accel Accel, extraMiB int) cgroups.Resources {
	return HostResources(specMemoryMiB(spec), accel, extraMiB)
}

// startIn starts cmd born in the cgroup at path ("" for none): with
// clone3's CLONE_INTO_CGROUP on v2; on v1, forked from a thread that
// moved there alone for the fork (cgroups.ThreadFiles), which spares the
// wait for an RCU grace period that moving the process after would cost
// in each controller. With netns (not nil) cmd starts in that network
// namespace, forked from a thread that entered it and goes back to its
// own before it is handed back: cmd's parent-death signal is the
// forking thread's, which must live on.
func startIn(cmd *exec.Cmd, path string, netns *os.File) error {
	var t *cgroups.ThreadFiles
	if path != "" {
		cg, err := cgroups.New(path)
		if err != nil {
			return err
		}
		fd, v2, err := cg.FD()
		if err != nil {
			return err
		}
		if v2 {
			defer unix.Close(fd)
			cmd.SysProcAttr.UseCgroupFD = true
			cmd.SysProcAttr.CgroupFD = fd
		} else {
			if t, err = cg.ThreadFiles(); err != nil {
				return err
			}
			defer t.Close()
		}
	}
	if t == nil && netns == nil {
		return cmd.Start()
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		var home *os.File // this thread's own namespace
		if netns != nil {
			var err error
			if home, err = os.Open("/proc/thread-self/ns/net"); err != nil {
				done <- err
				runtime.UnlockOSThread()
				return
			}
			defer home.Close()
		}
		// A thread that cannot be put back as it was stays locked; it
		// must still outlive cmd (see above), so it parks for good:
		// one thread lost to a failure that should never happen.
		leave := func(err error) {
			ok := t == nil || cgroups.Move(t.Leave) == nil
			if netns != nil && unix.Setns(int(home.Fd()), unix.CLONE_NEWNET) != nil {
				ok = false
			}
			done <- err
			if !ok {
				select {}
			}
			runtime.UnlockOSThread()
		}
		if netns != nil {
			if err := unix.Setns(int(netns.Fd()), unix.CLONE_NEWNET); err != nil {
				done <- fmt.Errorf("enter the network namespace: %w", err)
				runtime.UnlockOSThread()
				return
			}
		}
		if t != nil {
			if err := cgroups.Move(t.Join); err != nil {
				leave(fmt.Errorf("cgroup %s: %w", path, err))
				return
			}
		}
		leave(cmd.Start())
	}()
	return <-done
}

// makeCgroup makes the cgroup at path with the limits r.
func makeCgroup(path string, r cgroups.Resources) (cgroups.Manager, error) {
	cg, err := cgroups.New(path)
	if err == nil {
		err = cg.Create(r)
	}
	if err != nil {
		return nil, fmt.Errorf("qemu's cgroup: %w", err)
	}
	return cg, nil
}

// openDisks opens cfg's disks for QEMU (see diskFDs): what it opened
// so far when it fails.
func openDisks(cfg Config) ([]*os.File, error) {
	type disk struct {
		path string
		flag int
	}
	var list []disk
	for _, l := range cfg.Layers {
		list = append(list, disk{l, os.O_RDONLY})
	}
	if cfg.Scratch != "" {
		list = append(list, disk{cfg.Scratch, os.O_RDWR}, disk{cfg.Scratch, os.O_RDONLY})
	}
	var files []*os.File
	for _, d := range list {
		f, err := os.OpenFile(d.path, d.flag|unix.O_CLOEXEC, 0)
		if err != nil {
			return files, fmt.Errorf("disk: %w", err)
		}
		files = append(files, f)
	}
	return files, nil
}
