//go:build linux

package seccomp

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
)

const (
	retAllow = unix.SECCOMP_RET_ALLOW
	retEPERM = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	retNOSYS = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	retKillP = unix.SECCOMP_RET_KILL_PROCESS
)

func errno(e unix.Errno) *uint {
	u := uint(e)
	return &u
}

func mustCompile(t *testing.T, p *specs.LinuxSeccomp) []unix.SockFilter {
	t.Helper()
	prog, err := Compile(p)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	verify(t, prog)
	return prog
}

func nr64(t *testing.T, name string) int {
	t.Helper()
	nr, ok := Syscall(name)
	if !ok {
		t.Fatalf("no x86-64 syscall %q", name)
	}
	return nr
}

func TestSyscallTable(t *testing.T) {
	for name, want := range map[string]int{
		"read": unix.SYS_READ, "openat": unix.SYS_OPENAT, "clone": unix.SYS_CLONE, "clone3": unix.SYS_CLONE3,
		"newfstatat": unix.SYS_NEWFSTATAT, "umount2": unix.SYS_UMOUNT2, "_sysctl": 156, "rseq": unix.SYS_RSEQ,
		"close_range": unix.SYS_CLOSE_RANGE, "openat2": unix.SYS_OPENAT2, "faccessat2": unix.SYS_FACCESSAT2,
		"futex_waitv": 449, "fchmodat2": 452, "mseal": 462,
	} {
		if got, ok := Syscall(name); !ok || got != want {
			t.Errorf("Syscall(%q) = %d, %v; want %d", name, got, ok, want)
		}
	}
	for _, name := range []string{"chown32", "socketcall", "nosuchcall", ""} {
		if nr, ok := Syscall(name); ok {
			t.Errorf("Syscall(%q) = %d, want none on x86-64", name, nr)
		}
	}
	// Every number up to 462 that x86-64 uses is present, once.
	seen := map[int]string{}
	for name, nr := range syscallsX8664 {
		if other, dup := seen[nr]; dup {
			t.Errorf("number %d is both %q and %q", nr, name, other)
		}
		seen[nr] = name
	}
	for nr := 0; nr <= 462; nr++ {
		if _, ok := seen[nr]; !ok && (nr < 335 || nr > 423) {
			t.Errorf("x86-64 syscall %d is missing", nr)
		}
	}
	if syscallsI386["socketcall"] != 102 || syscallsI386["clone"] != 120 || syscallsI386["getpid"] != 20 {
		t.Errorf("i386 table: socketcall %d clone %d getpid %d", syscallsI386["socketcall"], syscallsI386["clone"], syscallsI386["getpid"])
	}
}

func TestDefaultAllowsWhatProgramsNeed(t *testing.T) {
	prog := mustCompile(t, Default())
	names := []string{
		// Go runtime and os/exec.
		"futex", "mmap", "munmap", "mprotect", "madvise", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn",
		"sigaltstack", "gettid", "tgkill", "sched_yield", "sched_getaffinity", "epoll_create1", "epoll_ctl",
		"epoll_pwait", "pipe2", "wait4", "waitid", "prlimit64", "getrlimit", "setrlimit", "capget", "capset",
		"prctl", "execve", "execveat", "setuid", "setgid", "setgroups", "setresuid", "setresgid", "dup3",
		"ioctl", "getrandom", "rseq", "membarrier", "close_range", "openat2", "statx", "faccessat2",
		"pidfd_open", "pidfd_send_signal", "arch_prctl", "set_tid_address", "set_robust_list", "nanosleep",
		"clock_gettime", "exit_group", "exit", "vfork", "fcntl", "getpid", "kill", "readlinkat",
		// shells, busybox, libc.
		"read", "write", "openat", "close", "newfstatat", "getdents64", "lseek", "chdir", "fchdir",
		"mkdirat", "unlinkat", "renameat2", "symlinkat", "linkat", "fchownat", "fchmodat", "utimensat",
		"uname", "chroot", "mknodat", "ptrace", "name_to_handle_at", "fanotify_mark",
		"socketpair", "connect", "bind", "listen", "accept4", "sendmsg", "recvmsg", "poll", "pselect6",
		"getcwd", "umask", "sysinfo", "times", "setsid", "setpgid", "getppid", "seccomp",
	}
	for _, name := range names {
		if got := run(t, prog, call64(nr64(t, name))); got != retAllow {
			t.Errorf("%s: action %#x, want allow", name, got)
		}
	}
}

func TestDefaultDenies(t *testing.T) {
	prog := mustCompile(t, Default())
	for _, name := range []string{
		"mount", "umount2", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
		"keyctl", "add_key", "request_key", "bpf", "unshare", "setns", "pivot_root", "reboot", "swapon",
		"swapoff", "acct", "settimeofday", "clock_settime", "open_by_handle_at",
		"perf_event_open", "userfaultfd", "iopl", "ioperm", "syslog", "lookup_dcookie", "quotactl",
		"vhangup", "nfsservctl", "sethostname", "setdomainname", "fanotify_init", "fsopen", "fsmount",
		"move_mount", "open_tree", "mount_setattr", "kcmp", "pidfd_getfd", "process_madvise", "mbind",
		"set_mempolicy", "get_mempolicy", "uselib", "ustat", "sysfs", "_sysctl", "create_module",
		"get_kernel_syms", "query_module", "vserver", "tuxcall", "afs_syscall", "move_pages", "migrate_pages",
		// A ring's operations never pass through seccomp (Docker 25 and
		// containerd 2.0 refuse io_uring too).
		"io_uring_setup", "io_uring_enter", "io_uring_register",
	} {
		if got := run(t, prog, call64(nr64(t, name))); got != retEPERM {
			t.Errorf("%s: action %#x, want EPERM", name, got)
		}
	}
}

func TestDefaultArgumentRules(t *testing.T) {
	prog := mustCompile(t, Default())
	clone, personality, socket := nr64(t, "clone"), nr64(t, "personality"), nr64(t, "socket")
	// What Go's runtime and os/exec pass to clone.
	thread := uint64(unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND |
		unix.CLONE_SYSVSEM | unix.CLONE_THREAD)
	fork := uint64(unix.CLONE_VM | unix.CLONE_VFORK | unix.CLONE_PIDFD | uint64(unix.SIGCHLD))
	cases := []struct {
		name string
		d    seccompData
		want uint32
	}{
		{"clone thread", call64(clone, thread), retAllow},
		{"clone fork", call64(clone, fork), retAllow},
		{"clone plain", call64(clone, uint64(unix.SIGCHLD)), retAllow},
		{"clone high word ignored", call64(clone, 1<<40|uint64(unix.SIGCHLD)), retAllow},
		{"clone NEWNS", call64(clone, unix.CLONE_NEWNS|uint64(unix.SIGCHLD)), retEPERM},
		{"clone NEWUSER", call64(clone, thread|unix.CLONE_NEWUSER), retEPERM},
		{"clone NEWPID", call64(clone, unix.CLONE_NEWPID), retEPERM},
		{"clone NEWNET", call64(clone, unix.CLONE_NEWNET), retEPERM},
		{"clone NEWCGROUP", call64(clone, unix.CLONE_NEWCGROUP), retEPERM},
		{"clone NEWUTS|NEWIPC", call64(clone, unix.CLONE_NEWUTS|unix.CLONE_NEWIPC), retEPERM},
		{"clone3", call64(nr64(t, "clone3"), 0, 88), retNOSYS},
		{"personality PER_LINUX", call64(personality, 0), retAllow},
		{"personality PER_LINUX32", call64(personality, 8), retAllow},
		{"personality UNAME26", call64(personality, 0x20000), retAllow},
		{"personality LINUX32|UNAME26", call64(personality, 0x20008), retAllow},
		{"personality query", call64(personality, 0xffffffff), retAllow},
		{"personality ADDR_NO_RANDOMIZE", call64(personality, 0x40000), retEPERM},
		{"personality 64-bit -1", call64(personality, ^uint64(0)), retEPERM},
		{"personality high word", call64(personality, 1<<32), retEPERM},
		{"socket inet", call64(socket, unix.AF_INET, unix.SOCK_STREAM), retAllow},
		{"socket unix", call64(socket, unix.AF_UNIX, unix.SOCK_DGRAM), retAllow},
		{"socket vsock", call64(socket, unix.AF_VSOCK, unix.SOCK_STREAM), retEPERM},
		// The kernel reads the family as an int: high bits set in the
		// register must not carry a refused family past the filter.
		{"socket vsock+high word", call64(socket, 1<<32|unix.AF_VSOCK), retEPERM},
		{"socket alg", call64(socket, unix.AF_ALG, unix.SOCK_SEQPACKET), retEPERM},
		{"socket alg+high word", call64(socket, 0xffffffff00000000|unix.AF_ALG), retEPERM},
		{"socket 39 (AF_NFC)", call64(socket, 39), retAllow},
		{"socket 41", call64(socket, 41), retAllow},
		{"socket netlink", call64(socket, unix.AF_NETLINK, unix.SOCK_RAW), retAllow},
		{"socket inet+high word", call64(socket, 1<<32|unix.AF_INET), retAllow},
		// Syscalls newer than the profile: ENOSYS so libc falls back.
		{"fchmodat2", call64(452), retNOSYS},
		{"futex_wait", call64(455), retNOSYS},
		{"number 9999", call64(9999), retNOSYS},
		// The profile's highest x86-64 syscall is futex_waitv (449).
		{"set_mempolicy_home_node", call64(450), retNOSYS},
		// Inside the profile's range but not allowed: EPERM.
		{"process_madvise", call64(440), retEPERM},
		{"unused number 400", call64(400), retEPERM},
		// x32 calls get the default action; other architectures are killed.
		{"x32 read", seccompData{nr: x32Bit, arch: unix.AUDIT_ARCH_X86_64}, retEPERM},
		{"x32 -1", seccompData{nr: 0xffffffff, arch: unix.AUDIT_ARCH_X86_64}, retEPERM},
		{"aarch64", seccompData{nr: 63, arch: unix.AUDIT_ARCH_AARCH64}, retKillP},
		{"arm", seccompData{nr: 3, arch: unix.AUDIT_ARCH_ARM}, retKillP},
		// i386 rules use i386 numbers.
		{"i386 getpid", call32(20), retAllow},
		{"i386 mount", call32(21), retEPERM},
		{"i386 socketcall", call32(102, 1), retAllow},
		{"i386 socket inet", call32(359, unix.AF_INET), retAllow},
		{"i386 socket alg", call32(359, unix.AF_ALG), retEPERM},
		{"i386 socket vsock", call32(359, unix.AF_VSOCK), retEPERM},
		{"i386 io_uring_setup", call32(425), retEPERM},
		{"i386 chown32", call32(212), retAllow},
		{"i386 clone", call32(120, uint64(unix.SIGCHLD)), retAllow},
		{"i386 clone NEWNS", call32(120, unix.CLONE_NEWNS), retEPERM},
		{"i386 personality query", call32(136, 0xffffffff), retAllow},
		{"i386 personality other", call32(136, 0x40000), retEPERM},
		{"i386 clone3", call32(435), retNOSYS},
		{"i386 unshare", call32(310), retEPERM},
	}
	for _, c := range cases {
		if got := run(t, prog, c.d); got != c.want {
			t.Errorf("%s: action %#x, want %#x", c.name, got, c.want)
		}
	}
}

func TestForeignArchitecturesNotListed(t *testing.T) {
	prog := mustCompile(t, &specs.LinuxSeccomp{
		DefaultAction: specs.ActErrno,
		Syscalls:      []specs.LinuxSyscall{{Names: []string{"read", "chown32", "getpid"}, Action: specs.ActAllow}},
	})
	for name, c := range map[string]struct {
		d    seccompData
		want uint32
	}{
		"read":        {call64(0), retAllow},
		"write":       {call64(1), retEPERM},
		"x32 read":    {seccompData{nr: x32Bit, arch: unix.AUDIT_ARCH_X86_64}, retKillP},
		"i386 read":   {call32(3), retKillP},
		"i386 chown":  {call32(212), retKillP},
		"above range": {call64(nr64(t, "getpid") + 1), retNOSYS},
	} {
		if got := run(t, prog, c.d); got != c.want {
			t.Errorf("%s: action %#x, want %#x", name, got, c.want)
		}
	}
}

// reference is what a comparison means, on the full 64-bit argument.
func reference(op specs.LinuxSeccompOperator, arg, v, two uint64) bool {
	switch op {
	case specs.OpEqualTo:
		return arg == v
	case specs.OpNotEqual:
		return arg != v
	case specs.OpLessThan:
		return arg < v
	case specs.OpLessEqual:
		return arg <= v
	case specs.OpGreaterThan:
		return arg > v
	case specs.OpGreaterEqual:
		return arg >= v
	case specs.OpMaskedEqual:
		return arg&v == two
	}
	panic(op)
}

var allOps = []specs.LinuxSeccompOperator{
	specs.OpEqualTo, specs.OpNotEqual, specs.OpLessThan, specs.OpLessEqual,
	specs.OpGreaterThan, specs.OpGreaterEqual, specs.OpMaskedEqual,
}

// interesting are operands and arguments around word boundaries, so that
// the high word decides some comparisons and the low word others.
var interesting = []uint64{
	0, 1, 2, 0x7f, 0xffffffff, 0x100000000, 0x100000001, 0x1ffffffff, 0x200000000,
	0x80000000, 0x7fffffff, 0xdeadbeef00000005, 0xdeadbeef00000006, 0xdeadbeef00000004,
	0xdeadbef000000005, 0xfffffffffffffffe, 0xffffffffffffffff,
}

func TestComparisons(t *testing.T) {
	for _, op := range allOps {
		for _, v := range interesting {
			two := v
			if op == specs.OpMaskedEqual {
				two = v & 0xf0000000f0 // wanted bits: a subset of the mask
			}
			for _, index := range []uint{0, 3, 5} {
				p := &specs.LinuxSeccomp{
					DefaultAction: specs.ActErrno,
					Architectures: []specs.Arch{specs.ArchX86},
					Syscalls: []specs.LinuxSyscall{{
						Names:  []string{"ioctl"},
						Action: specs.ActAllow,
						Args:   []specs.LinuxSeccompArg{{Index: index, Value: v, ValueTwo: two, Op: op}},
					}},
				}
				prog := mustCompile(t, p)
				for _, arg := range interesting {
					d := call64(nr64(t, "ioctl"))
					d.args[index] = arg
					want := reference(op, arg, v, two)
					if got := run(t, prog, d) == retAllow; got != want {
						t.Errorf("x86-64 %s(arg%d=%#x, %#x, %#x): matched %v, want %v", op, index, arg, v, two, got, want)
					}
					// i386 arguments are 32-bit: the kernel passes them zero-extended.
					d32 := call32(syscallsI386["ioctl"])
					d32.args[index] = uint64(uint32(arg))
					want = reference(op, uint64(uint32(arg)), v, two)
					if got := run(t, prog, d32) == retAllow; got != want {
						t.Errorf("i386 %s(arg%d=%#x, %#x, %#x): matched %v, want %v", op, index, uint32(arg), v, two, got, want)
					}
				}
			}
		}
	}
}

func TestRulesOrderAndArgs(t *testing.T) {
	p := &specs.LinuxSeccomp{
		DefaultAction:   specs.ActErrno,
		DefaultErrnoRet: errno(unix.EACCES),
		Syscalls: []specs.LinuxSyscall{
			// Both conditions must hold.
			{Names: []string{"openat"}, Action: specs.ActErrno, ErrnoRet: errno(unix.EROFS), Args: []specs.LinuxSeccompArg{
				{Index: 0, Value: 7, Op: specs.OpEqualTo},
				{Index: 2, Value: unix.O_WRONLY | unix.O_RDWR, ValueTwo: unix.O_WRONLY, Op: specs.OpMaskedEqual},
			}},
			// Then any call with arg0 7 is allowed, others fall through.
			{Names: []string{"openat"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 0, Value: 7, Op: specs.OpEqualTo}}},
			{Names: []string{"openat"}, Action: specs.ActLog, Args: []specs.LinuxSeccompArg{{Index: 0, Value: 100, Op: specs.OpGreaterEqual}}},
			// The same index twice: either condition (runc's behaviour).
			{Names: []string{"kill"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{
				{Index: 1, Value: 0, Op: specs.OpEqualTo},
				{Index: 1, Value: uint64(unix.SIGTERM), Op: specs.OpEqualTo},
			}},
			// An unconditional rule hides later ones.
			{Names: []string{"getpid"}, Action: specs.ActTrap},
			{Names: []string{"getpid"}, Action: specs.ActAllow},
			{Names: []string{"nosuchcall", "getppid"}, Action: specs.ActKill},
		},
	}
	prog := mustCompile(t, p)
	openat, kill := nr64(t, "openat"), nr64(t, "kill")
	eacces := unix.SECCOMP_RET_ERRNO | uint32(unix.EACCES)
	for name, c := range map[string]struct {
		d    seccompData
		want uint32
	}{
		"openat 7 write":   {call64(openat, 7, 0, unix.O_WRONLY|unix.O_CREAT), unix.SECCOMP_RET_ERRNO | uint32(unix.EROFS)},
		"openat 7 read":    {call64(openat, 7, 0, unix.O_RDONLY), retAllow},
		"openat 7 rdwr":    {call64(openat, 7, 0, unix.O_RDWR), retAllow},
		"openat 8 write":   {call64(openat, 8, 0, unix.O_WRONLY), eacces},
		"openat 100":       {call64(openat, 100), unix.SECCOMP_RET_LOG},
		"openat 7 high":    {call64(openat, 7|1<<32, 0, unix.O_WRONLY), unix.SECCOMP_RET_LOG},
		"kill 0":           {call64(kill, 1, 0), retAllow},
		"kill TERM":        {call64(kill, 1, uint64(unix.SIGTERM)), retAllow},
		"kill KILL":        {call64(kill, 1, uint64(unix.SIGKILL)), eacces},
		"getpid":           {call64(nr64(t, "getpid")), unix.SECCOMP_RET_TRAP},
		"getppid":          {call64(nr64(t, "getppid")), unix.SECCOMP_RET_KILL_THREAD},
		"read":             {call64(0), eacces},
		"above getppid nr": {call64(nr64(t, "getppid") + 1), eacces},
		"above openat nr":  {call64(openat + 1), retNOSYS},
	} {
		if got := run(t, prog, c.d); got != c.want {
			t.Errorf("%s: action %#x, want %#x", name, got, c.want)
		}
	}
}

func TestActions(t *testing.T) {
	for _, c := range []struct {
		act   specs.LinuxSeccompAction
		errno *uint
		want  uint32
	}{
		{specs.ActAllow, nil, unix.SECCOMP_RET_ALLOW},
		{specs.ActErrno, nil, retEPERM},
		{specs.ActErrno, errno(unix.ENOENT), unix.SECCOMP_RET_ERRNO | uint32(unix.ENOENT)},
		{specs.ActErrno, errno(0), unix.SECCOMP_RET_ERRNO},
		{specs.ActKill, nil, unix.SECCOMP_RET_KILL_THREAD},
		{specs.ActKillThread, nil, unix.SECCOMP_RET_KILL_THREAD},
		{specs.ActKillProcess, nil, unix.SECCOMP_RET_KILL_PROCESS},
		{specs.ActTrap, nil, unix.SECCOMP_RET_TRAP},
		{specs.ActTrace, nil, unix.SECCOMP_RET_TRACE | uint32(unix.EPERM)},
		{specs.ActTrace, errno(7), unix.SECCOMP_RET_TRACE | 7},
		{specs.ActLog, nil, unix.SECCOMP_RET_LOG},
	} {
		// As a rule's action and as the default action.
		prog := mustCompile(t, &specs.LinuxSeccomp{
			DefaultAction:   c.act,
			DefaultErrnoRet: c.errno,
			Syscalls: []specs.LinuxSyscall{
				{Names: []string{"write"}, Action: c.act, ErrnoRet: c.errno},
				{Names: []string{"read"}, Action: specs.ActAllow},
			},
		})
		if got := run(t, prog, call64(1)); got != c.want {
			t.Errorf("rule %s: action %#x, want %#x", c.act, got, c.want)
		}
		if got := run(t, prog, call64(0)); got != retAllow {
			t.Errorf("rule %s: read got %#x, want allow", c.act, got)
		}
		if got := run(t, prog, call64(nr64(t, "getpid"))); c.act != specs.ActAllow && c.act != specs.ActLog && got != retNOSYS {
			t.Errorf("default %s: getpid (above profile) got %#x, want ENOSYS", c.act, got)
		}
		if c.act == specs.ActAllow || c.act == specs.ActLog {
			if got := run(t, prog, call64(nr64(t, "getpid"))); got != c.want {
				t.Errorf("default %s: getpid got %#x, want %#x", c.act, got, c.want)
			}
		}
	}
}

func TestCompileErrors(t *testing.T) {
	good := func() *specs.LinuxSeccomp {
		return &specs.LinuxSeccomp{
			DefaultAction: specs.ActErrno,
			Syscalls:      []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActAllow}},
		}
	}
	cases := []struct {
		name  string
		edit  func(p *specs.LinuxSeccomp)
		class error
	}{
		{"nil", nil, errdefs.ErrInvalid},
		{"no default", func(p *specs.LinuxSeccomp) { p.DefaultAction = "" }, errdefs.ErrInvalid},
		{"bad default", func(p *specs.LinuxSeccomp) { p.DefaultAction = "SCMP_ACT_MAYBE" }, errdefs.ErrInvalid},
		{"bad action", func(p *specs.LinuxSeccomp) { p.Syscalls[0].Action = "ALLOW" }, errdefs.ErrInvalid},
		{"notify", func(p *specs.LinuxSeccomp) { p.Syscalls[0].Action = specs.ActNotify }, errdefs.ErrNotSupported},
		{"listener", func(p *specs.LinuxSeccomp) { p.ListenerPath = "/run/x.sock" }, errdefs.ErrNotSupported},
		{"errno on allow", func(p *specs.LinuxSeccomp) { p.Syscalls[0].ErrnoRet = errno(1) }, errdefs.ErrInvalid},
		{"errno too big", func(p *specs.LinuxSeccomp) {
			p.Syscalls[0].Action = specs.ActErrno
			big := uint(0x10000)
			p.Syscalls[0].ErrnoRet = &big
		}, errdefs.ErrInvalid},
		{"bad op", func(p *specs.LinuxSeccomp) {
			p.Syscalls[0].Args = []specs.LinuxSeccompArg{{Index: 0, Op: "SCMP_CMP_ABOUT"}}
		}, errdefs.ErrInvalid},
		{"index 6", func(p *specs.LinuxSeccomp) {
			p.Syscalls[0].Args = []specs.LinuxSeccompArg{{Index: 6, Op: specs.OpEqualTo}}
		}, errdefs.ErrInvalid},
		{"no names", func(p *specs.LinuxSeccomp) { p.Syscalls[0].Names = nil }, errdefs.ErrInvalid},
		{"empty name", func(p *specs.LinuxSeccomp) { p.Syscalls[0].Names = []string{"read", ""} }, errdefs.ErrInvalid},
		{"bad arch", func(p *specs.LinuxSeccomp) { p.Architectures = []specs.Arch{"SCMP_ARCH_Z80"} }, errdefs.ErrInvalid},
		{"bad flag", func(p *specs.LinuxSeccomp) { p.Flags = []specs.LinuxSeccompFlag{"SECCOMP_FILTER_FLAG_FAST"} }, errdefs.ErrInvalid},
		{"killable recv", func(p *specs.LinuxSeccomp) {
			p.Flags = []specs.LinuxSeccompFlag{specs.LinuxSeccompFlagWaitKillableRecv}
		}, errdefs.ErrNotSupported},
	}
	for _, c := range cases {
		var p *specs.LinuxSeccomp
		if c.edit != nil {
			p = good()
			c.edit(p)
		}
		_, err := Compile(p)
		if !errors.Is(err, c.class) {
			t.Errorf("%s: Compile error %v, want %v", c.name, err, c.class)
		}
	}

	// Accepted: other architectures and the flags Load supports.
	p := good()
	p.Architectures = []specs.Arch{specs.ArchAARCH64, specs.ArchX86_64}
	p.Flags = []specs.LinuxSeccompFlag{specs.LinuxSeccompFlagLog, specs.LinuxSeccompFlagSpecAllow, "SECCOMP_FILTER_FLAG_TSYNC"}
	if _, err := Compile(p); err != nil {
		t.Errorf("Compile: %v", err)
	}
	flags, err := filterFlags(p)
	want := uintptr(unix.SECCOMP_FILTER_FLAG_TSYNC | unix.SECCOMP_FILTER_FLAG_LOG | unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW)
	if err != nil || flags != want {
		t.Errorf("filterFlags = %#x, %v; want %#x", flags, err, want)
	}
}

// TestLongJumps gives every x86-64 syscall its own argument rule and
// action, so the dispatch jumps to blocks hundreds of instructions away and
// the assembler must route them through unconditional jumps.
func TestLongJumps(t *testing.T) {
	p := &specs.LinuxSeccomp{DefaultAction: specs.ActAllow}
	names := make([]string, 0, len(syscallsX8664))
	for name := range syscallsX8664 {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		nr := syscallsX8664[name]
		p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{
			Names: []string{name}, Action: specs.ActErrno, ErrnoRet: errno(unix.Errno(nr + 1)),
			Args: []specs.LinuxSeccompArg{{Index: 1, Value: uint64(nr) << 32, Op: specs.OpEqualTo}},
		})
	}
	prog := mustCompile(t, p)
	long := 0
	for _, in := range prog {
		if in.Code == unix.BPF_JMP|unix.BPF_JA && in.K > maxShortJump {
			long++
		}
	}
	if long == 0 {
		t.Fatalf("program of %d instructions has no long jump; the test does not exercise them", len(prog))
	}
	for _, name := range names {
		nr := syscallsX8664[name]
		if got, want := run(t, prog, call64(nr, 0, uint64(nr)<<32)), unix.SECCOMP_RET_ERRNO|uint32(nr+1); got != want {
			t.Errorf("%s matching: action %#x, want %#x", name, got, want)
		}
		if got := run(t, prog, call64(nr, 0, uint64(nr)<<32|1)); got != retAllow {
			t.Errorf("%s not matching: action %#x, want allow", name, got)
		}
	}
}

func TestTooLong(t *testing.T) {
	p := &specs.LinuxSeccomp{DefaultAction: specs.ActErrno}
	for i := range 1000 {
		p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{
			Names: []string{"ioctl"}, Action: specs.ActAllow,
			Args: []specs.LinuxSeccompArg{{Index: 1, Value: uint64(i) << 32, Op: specs.OpEqualTo}},
		})
	}
	if _, err := Compile(p); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("Compile of 1000 rules: %v, want ErrInvalid", err)
	}
}

func TestDefaultIsFresh(t *testing.T) {
	a, b := Default(), Default()
	a.Syscalls[0].Names[0] = "changed"
	*a.DefaultErrnoRet = 99
	if b.Syscalls[0].Names[0] == "changed" || *b.DefaultErrnoRet != 1 {
		t.Fatal("Default returns shared state")
	}
	prog := mustCompile(t, Default())
	t.Logf("Default compiles to %d instructions", len(prog))
	unknown := UnknownSyscalls(Default())
	if !slices.Contains(unknown, "recv") || slices.Contains(unknown, "chown32") || slices.Contains(unknown, "read") {
		t.Errorf("UnknownSyscalls(Default()) = %v", unknown)
	}
	if nsFlags != unix.CLONE_NEWNS|unix.CLONE_NEWCGROUP|unix.CLONE_NEWUTS|unix.CLONE_NEWIPC|
		unix.CLONE_NEWUSER|unix.CLONE_NEWPID|unix.CLONE_NEWNET {
		t.Errorf("nsFlags %#x", nsFlags)
	}
	if errEPERM != int(unix.EPERM) || errENOSYS != int(unix.ENOSYS) || afVSOCK != unix.AF_VSOCK || afALG != unix.AF_ALG {
		t.Error("spelt-out constants differ from x/sys/unix")
	}
}

func ExampleCompile() {
	prog, err := Compile(Default())
	fmt.Println(len(prog) > 0 && len(prog) < 4096, err)
	// Output: true <nil>
}
