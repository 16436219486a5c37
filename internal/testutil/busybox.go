// Package testutil builds real test images without the network: a busybox
// root file system, OCI layouts and archives made by the real umoci and
// skopeo tools, and hand-crafted (also hostile) layouts built in pure Go.
//
// Every helper registers its own cleanup with t and fails the test (or skips
// it, naming the missing tool) instead of returning errors.
package testutil

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// BusyboxPath is the static busybox binary the rootfs is made from
// (Debian's busybox-static).
const BusyboxPath = "/bin/busybox"

// busyboxApplets are linked to /bin/busybox in BusyboxRootfs.
var busyboxApplets = []string{
	"sh", "echo", "true", "false", "cat", "ls", "id", "env", "pwd", "sleep",
	"hostname", "mount", "ps", "grep", "head", "wc", "kill", "yes", "dd",
	"touch", "mkdir", "rm", "stat", "readlink", "uname", "nproc", "cut",
	"sed", "awk", "tr", "test", "[", "printf", "seq", "ln", "chmod", "chown",
	"cp", "mv", "tail", "sort", "whoami", "umount", "ip", "nc", "wget", "top",
	"free", "df", "du", "find", "xargs", "basename", "dirname", "date",
	"tee", "vi", "less", "more", "diff", "md5sum", "sha256sum",
	"ping", "ifconfig", "route", "hexdump", "od", "expr", "sync", "mknod",
	"chroot", "nohup", "timeout", "watch", "dmesg", "uptime", "realpath",
	"httpd", "nslookup",
}

const etcPasswd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
`

const etcGroup = `root:x:0:
daemon:x:1:
staff:x:50:app
app:x:1000:
nogroup:x:65534:
`

// InCI reports whether the tests run in CI (the CI variable set, as CI
// systems do), where every prerequisite is installed by .ci/run.
func InCI() bool {
	v := os.Getenv("CI")
	return v != "" && v != "false" && v != "0"
}

// Missing ends a test whose prerequisite (root, QEMU, the guest kernel, a
// peer's binary) is absent: a skip naming it on a developer's machine, a
// failure in CI, where a missing prerequisite means tests that did not run.
// Host facts that CI cannot install (vhost-vsock, cgroup v2 controllers)
// are plain skips, not prerequisites.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI is set but a prerequisite is missing: "+format, args...)
	}
	t.Skipf("SKIP (prerequisite missing): "+format, args...)
}

// NeedRoot ends the test, naming what needs root, when not running as root
// (see Missing).
func NeedRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root: %s", why)
	}
}

// NeedTool ends the test when the named binary is not on PATH (see
// Missing) and returns its path otherwise.
func NeedTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "needs %s: not found on PATH", name)
	}
	return p
}

// BusyboxRootfs returns a fresh directory holding a minimal busybox root file
// system: /bin/busybox with applet symlinks, /etc/passwd and /etc/group
// (root 0, daemon 1, app 1000, nobody 65534; group staff 50 holds app),
// /tmp (1777), /root, /home/app (owned by 1000:1000 when run as root) and
// empty /proc, /dev and /sys.
func BusyboxRootfs(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(BusyboxPath); err != nil {
		t.Skipf("needs busybox-static at %s: %v", BusyboxPath, err)
	}
	root := filepath.Join(t.TempDir(), "rootfs")
	for _, d := range []string{"bin", "etc", "root", "home/app", "proc", "dev", "sys", "tmp", "usr/bin", "var"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	chmod(t, filepath.Join(root, "root"), 0o700)
	chmod(t, filepath.Join(root, "tmp"), os.ModeSticky|0o777)
	copyFile(t, BusyboxPath, filepath.Join(root, "bin", "busybox"), 0o755)
	seen := map[string]bool{}
	for _, a := range busyboxApplets {
		if seen[a] {
			continue
		}
		seen[a] = true
		if err := os.Symlink("busybox", filepath.Join(root, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(root, "etc", "passwd"), etcPasswd, 0o644)
	writeFile(t, filepath.Join(root, "etc", "group"), etcGroup, 0o644)
	writeFile(t, filepath.Join(root, "etc", "hostname"), "busybox\n", 0o644)
	if os.Geteuid() == 0 {
		if err := os.Lchown(filepath.Join(root, "home", "app"), 1000, 1000); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func chmod(t testing.TB, p string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t testing.TB, p, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t testing.TB, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
