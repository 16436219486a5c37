package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCase is one row of the behaviour table: the flags and command given
// to `berth run --rm`, and what must come out. The same table will run
// against the VM engine.
type runCase struct {
	name   string
	args   []string // flags, then IMAGE and command; "IMG" stands for the test image
	stdout string   // exact stdout, when want is ""
	want   string   // a substring stdout must hold, instead of an exact match
	stderr string   // a substring stderr must hold
	code   int
	vm     bool // the row also runs with --vm: behaviour both engines share
}

var runTable = []runCase{
	{name: "echo", args: []string{"IMG", "echo", "hello"}, stdout: "hello\n", vm: true},
	{name: "exit status", args: []string{"IMG", "sh", "-c", "exit 3"}, code: 3, vm: true},
	// --init: a workload that is PID 1 cannot kill itself (next row).
	{name: "killed by signal", args: []string{"--init", "IMG", "sh", "-c", "kill -9 $$"}, code: 137, vm: true},
	// Docker's PID 1: the workload itself, which the kernel spares the
	// signals of its own namespace (in a VM too: the guest's agent runs
	// it through the same container engine).
	{name: "workload is PID 1", args: []string{"IMG", "sh", "-c", "echo $$; read -r c </proc/1/comm; echo $c"}, stdout: "1\nsh\n", vm: true},
	{name: "PID 1 survives its own SIGKILL", args: []string{"IMG", "sh", "-c", "kill -9 $$; echo alive"}, stdout: "alive\n", vm: true},
	{name: "--init is PID 1", args: []string{"--init", "IMG", "sh", "-c", "read -r c </proc/1/comm; echo $c; [ $$ != 1 ] && echo not-pid1"}, stdout: "berth-init\nnot-pid1\n", vm: true},
	// --pids-limit N is the workload's N processes, whoever is PID 1,
	// and none of the engine's init's threads (in a guest, cgroup v2:
	// the limit is on a threaded cgroup that the init's exec'ing or
	// forking thread joins alone, as it joins v1's pids cgroup).
	{name: "pids limit: N processes", args: []string{"--pids-limit", "2", "IMG", "sh", "-c", "sleep 0.3 & wait; echo ok"}, stdout: "ok\n", vm: true},
	{name: "pids limit: not N+1", args: []string{"--pids-limit", "2", "IMG", "sh", "-c", "sleep 0.3 & echo one; (echo two); echo after"}, stdout: "one\n", stderr: "can't fork", code: 2, vm: true},
	{name: "pids limit: N processes, --init", args: []string{"--init", "--pids-limit", "2", "IMG", "sh", "-c", "sleep 0.3 & wait; echo ok"}, stdout: "ok\n", vm: true},
	{name: "pids limit: not N+1, --init", args: []string{"--init", "--pids-limit", "2", "IMG", "sh", "-c", "sleep 0.3 & echo one; (echo two); echo after"}, stdout: "one\n", stderr: "can't fork", code: 2, vm: true},
	{name: "not found", args: []string{"IMG", "/no/such/binary"}, code: 127, stderr: "/no/such/binary", vm: true},
	{name: "not found on PATH", args: []string{"IMG", "nosuchcommand"}, code: 127, stderr: "nosuchcommand", vm: true},
	{name: "not executable", args: []string{"IMG", "/etc/passwd"}, code: 126, stderr: "/etc/passwd", vm: true},
	{name: "image cmd", args: []string{"IMG"}, code: 0, stdout: "", vm: true},
	{name: "env", args: []string{"-e", "A=1", "-e", "B=two words", "IMG", "sh", "-c", `echo "$A|$B|$HOME|$PATH"`},
		stdout: "1|two words|/root|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n", vm: true},
	{name: "workdir", args: []string{"-w", "/tmp", "IMG", "pwd"}, stdout: "/tmp\n", vm: true},
	{name: "new workdir", args: []string{"-w", "/made/here", "IMG", "pwd"}, stdout: "/made/here\n", vm: true},
	{name: "user by name", args: []string{"-u", "app", "IMG", "id"}, stdout: "uid=1000(app) gid=1000(app) groups=50(staff)\n", vm: true},
	{name: "user by uid:gid", args: []string{"-u", "1000:50", "IMG", "id", "-u"}, stdout: "1000\n", vm: true},
	{name: "unknown uid", args: []string{"-u", "4242", "IMG", "id", "-u"}, stdout: "4242\n", vm: true},
	{name: "bad user", args: []string{"-u", "nobodyhere", "IMG", "true"}, code: 125, stderr: "nobodyhere", vm: true},
	{name: "hostname", args: []string{"--hostname", "box1", "IMG", "hostname"}, stdout: "box1\n", vm: true},
	{name: "loopback only", args: []string{"IMG", "sh", "-c", "ls /sys/class/net"}, stdout: "lo\n", vm: true},
	{name: "loopback up", args: []string{"IMG", "sh", "-c", "cat /sys/class/net/lo/operstate /sys/class/net/lo/flags"}, stdout: "unknown\n0x9\n", vm: true},
	{name: "root caps", args: []string{"IMG", "grep", "-E", "^(CapEff|NoNewPrivs|Seccomp):", "/proc/self/status"},
		stdout: "CapEff:\t00000000a80425fb\nNoNewPrivs:\t1\nSeccomp:\t2\n", vm: true},
	{name: "user has no caps", args: []string{"-u", "app", "IMG", "grep", "^CapEff:", "/proc/self/status"}, stdout: "CapEff:\t0000000000000000\n", vm: true},
	{name: "mount denied", args: []string{"IMG", "sh", "-c", "mount -t tmpfs x /mnt 2>/dev/null || echo denied"}, stdout: "denied\n", vm: true},
	{name: "unshare denied", args: []string{"IMG", "sh", "-c", "unshare -m true 2>/dev/null || echo denied"}, stdout: "denied\n", vm: true},
	// Device cgroup: a node may be made (CAP_MKNOD) but not used, unless
	// it is one of the standard devices (here /dev/kmsg, 1:11, which the
	// host's root can open).
	{name: "devices denied", args: []string{"IMG", "sh", "-c", "mknod /tmp/kmsg c 1 11 && echo made; head -c 1 /tmp/kmsg; mknod /tmp/null c 1 3 && echo x > /tmp/null && echo null ok"}, stdout: "made\nnull ok\n", stderr: "Operation not permitted", vm: true},
	{name: "timer_list masked", args: []string{"IMG", "wc", "-c", "/proc/timer_list"}, stdout: "0 /proc/timer_list\n", vm: true},
	{name: "proc sys read-only", args: []string{"IMG", "sh", "-c", "(echo 1 > /proc/sys/kernel/ostype) 2>/dev/null || echo ro"}, stdout: "ro\n", vm: true},
	{name: "sys read-only", args: []string{"IMG", "touch", "/sys/x"}, code: 1, stderr: "Read-only", vm: true},
	{name: "read-only root", args: []string{"--read-only", "IMG", "touch", "/x"}, code: 1, stderr: "Read-only", vm: true},
	{name: "read-only root, new workdir", args: []string{"--read-only", "-w", "/made/ro", "IMG", "sh", "-c", "pwd; touch /tmp/x 2>/dev/null || echo ro"}, stdout: "/made/ro\nro\n", vm: true},
	{name: "writable root", args: []string{"IMG", "sh", "-c", "touch /x && echo ok"}, stdout: "ok\n", vm: true},
	{name: "dev nodes", args: []string{"IMG", "sh", "-c", "head -c 4 /dev/zero | wc -c; ls /dev/pts/ptmx /dev/shm /dev/mqueue /dev/null /dev/urandom /dev/full /dev/tty >/dev/null && echo ok"}, stdout: "4\nok\n", vm: true},
	{name: "no host mounts", args: []string{"IMG", "sh", "-c", "awk '{print $5}' /proc/self/mountinfo | grep -c -E '^/(work|var|home|usr|boot|etc|tmp|run|root)' || true"}, stdout: "0\n", vm: true},
	{name: "rlimit nofile", args: []string{"IMG", "sh", "-c", `[ "$(ulimit -n)" = "$(ulimit -Hn)" ] && [ "$(ulimit -n)" -ge 20000 ] && echo ok`}, stdout: "ok\n", vm: true},
	{name: "stdin closed without -i", args: []string{"IMG", "cat"}, stdout: "", vm: true},
	{name: "entrypoint override", args: []string{"--entrypoint", "/bin/echo", "IMG", "a", "b"}, stdout: "a b\n", vm: true},
	// berth's init reaps what is reparented to it (a shell as PID 1
	// would too, but that is the shell's doing).
	{name: "orphans reaped", args: []string{"--init", "IMG", "sh", "-c", "p=$( (sleep 0.2 >/dev/null & echo $!) ); for i in $(seq 300); do [ -e /proc/$p ] || break; sleep 0.1; done; [ -e /proc/$p ] && grep State /proc/$p/status || echo reaped"}, stdout: "reaped\n", vm: true},
	// Only the instance's processes are in view: no agent, no kernel
	// threads; nothing of the guest's or host's kernel can be changed.
	{name: "ps shows the instance only", args: []string{"IMG", "sh", "-c", "ps -o comm >/tmp/p; sort /tmp/p"}, stdout: "COMMAND\nps\nsh\n", vm: true},
	{name: "kernel threads invisible", args: []string{"IMG", "sh", "-c", "cat /proc/[0-9]*/stat | grep -c kthreadd || true"}, stdout: "0\n", vm: true},
	{name: "module loading denied", args: []string{"IMG", "busybox", "insmod", "/bin/busybox"}, code: 1, stderr: "not permitted", vm: true},
	{name: "--init survives kill -9 1", args: []string{"--init", "IMG", "sh", "-c", "kill -9 1; sleep 0.1; echo alive"}, stdout: "alive\n", vm: true},
	{name: "cgroup read-only", args: []string{"IMG", "sh", "-c", "mkdir /sys/fs/cgroup/x 2>/dev/null || echo ro"}, stdout: "ro\n", vm: true},
}

func TestRunTable(t *testing.T) {
	runRows(t, busybox(t), nil)
}

// TestRunTableVM runs the rows both engines share as virtual machines,
// in parallel (guests boot in seconds under software emulation).
func TestRunTableVM(t *testing.T) {
	img := busybox(t)
	needVM(t)
	runRows(t, img, []string{"--vm"})
}

func runRows(t *testing.T, img string, mode []string) {
	for _, tc := range runTable {
		if len(mode) > 0 && !tc.vm {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"run", "--rm"}, mode...)
			for _, a := range tc.args {
				if a == "IMG" {
					a = img
				}
				args = append(args, a)
			}
			r := berth(t, args...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %q\nstderr: %q", r.code, tc.code, r.stdout, r.stderr)
			}
			if tc.want == "" && r.stdout != tc.stdout {
				t.Errorf("stdout %q, want %q", r.stdout, tc.stdout)
			}
			if tc.want != "" && !strings.Contains(r.stdout, tc.want) {
				t.Errorf("stdout %q does not contain %q", r.stdout, tc.want)
			}
			if tc.stderr != "" && !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("stderr %q does not contain %q", r.stderr, tc.stderr)
			}
			if tc.code >= 125 && strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
				t.Errorf("error is not one line: %q", r.stderr)
			}
		})
	}
}

// The image's config is honoured, and the command line overrides it.
func TestImageConfig(t *testing.T) {
	busybox(t)
	r := berth(t, "run", "--rm", "localhost/cfgimage:v1")
	if r.code != 0 || r.stdout != "entry /bin/sh from-image /tmp 1000\n" {
		t.Fatalf("image defaults: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	r = berth(t, "run", "--rm", "-e", "FOO=flag", "-w", "/", "-u", "0", "localhost/cfgimage:v1", `echo "$FOO $(pwd) $(id -u)"`)
	if r.code != 0 || r.stdout != "flag / 0\n" {
		t.Fatalf("overrides: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestStdinWithI(t *testing.T) {
	img := busybox(t)
	r := berthIn(t, []byte("line one\nline two\n"), "run", "--rm", "-i", img, "wc", "-l")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "2" {
		t.Fatalf("exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestBindMounts(t *testing.T) {
	img := busybox(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "in"), []byte("from host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := berth(t, "run", "--rm", "-v", dir+":/data", img, "sh", "-c", "cat /data/in && echo written > /data/out")
	if r.code != 0 || r.stdout != "from host\n" {
		t.Fatalf("rw bind: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "out")); err != nil || string(b) != "written\n" {
		t.Fatalf("write through rw bind: %q %v", b, err)
	}
	r = berth(t, "run", "--rm", "-v", dir+":/data:ro", img, "sh", "-c", "cat /data/in; touch /data/new")
	if r.code == 0 || !strings.Contains(r.stderr, "Read-only") {
		t.Fatalf("ro bind: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); err == nil {
		t.Fatal("a read-only bind mount let the container create a file")
	}
}
