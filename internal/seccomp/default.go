package seccomp

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Linux constants, spelt out so that this file builds on every OS.
const (
	errEPERM  = 1          // EPERM
	errENOSYS = 38         // ENOSYS
	afALG     = 38         // AF_ALG
	afVSOCK   = 40         // AF_VSOCK
	nsFlags   = 0x7e020000 // CLONE_NEW{NS,CGROUP,UTS,IPC,USER,PID,NET}
	lowWord   = 0xffffffff // the bits of an int argument the kernel reads
)

// dockerAllowed are the syscalls Docker's default profile allows outright to
// a container with Docker's default capabilities, whatever the
// architecture. Names an architecture lacks (chown32, socketcall, ...) are
// skipped for it. As in Docker since 25.0, io_uring_setup, io_uring_enter
// and io_uring_register are not among them: the operations a ring performs
// never pass through seccomp. docs/seccomp.md lists where berth's default
// differs from Docker's.
var dockerAllowed = []string{
	"accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "capget", "capset",
	"chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64",
	"clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64",
	"clock_nanosleep", "clock_nanosleep_time64", "close", "close_range", "connect",
	"copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1",
	"epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait",
	"epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat", "exit", "exit_group",
	"faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fanotify_mark",
	"fchdir", "fchmod", "fchmodat", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64",
	"fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr",
	"fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate",
	"ftruncate64", "futex", "futex_time64", "futex_waitv", "futimesat", "getcpu", "getcwd",
	"getdents", "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid",
	"getgid32", "getgroups", "getgroups32", "getitimer", "getpeername", "getpgid",
	"getpgrp", "getpid", "getppid", "getpriority", "getrandom", "getresgid", "getresgid32",
	"getresuid", "getresuid32", "getrlimit", "get_robust_list", "getrusage", "getsid",
	"getsockname", "getsockopt", "get_thread_area", "gettid", "gettimeofday", "getuid",
	"getuid32", "getxattr", "inotify_add_watch", "inotify_init", "inotify_init1",
	"inotify_rm_watch", "io_cancel", "ioctl", "io_destroy", "io_getevents", "io_pgetevents",
	"io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup", "io_submit", "ipc", "kill",
	"landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lchown",
	"lchown32", "lgetxattr", "link", "linkat", "listen", "listxattr", "llistxattr",
	"_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "madvise",
	"membarrier", "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod",
	"mknodat", "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr",
	"mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend",
	"mq_timedsend_time64", "mq_unlink", "mremap", "msgctl", "msgget", "msgrcv", "msgsnd",
	"msync", "munlock", "munlockall", "munmap", "name_to_handle_at", "nanosleep",
	"newfstatat", "_newselect", "open", "openat", "openat2", "pause", "pidfd_open",
	"pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect",
	"poll", "ppoll", "ppoll_time64", "prctl", "pread64", "preadv", "preadv2", "prlimit64",
	"process_mrelease", "pselect6", "pselect6_time64", "pwrite64", "pwritev", "pwritev2",
	"read", "readahead", "readlink", "readlinkat", "readv", "recv", "recvfrom", "recvmmsg",
	"recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr", "rename", "renameat",
	"renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending",
	"rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
	"rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr",
	"sched_getparam", "sched_get_priority_max", "sched_get_priority_min",
	"sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64",
	"sched_setaffinity", "sched_setattr", "sched_setparam", "sched_setscheduler",
	"sched_yield", "seccomp", "select", "semctl", "semget", "semop", "semtimedop",
	"semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto",
	"setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups",
	"setgroups32", "setitimer", "setpgid", "setpriority", "setregid", "setregid32",
	"setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32",
	"setrlimit", "set_robust_list", "setsid", "setsockopt", "set_thread_area",
	"set_tid_address", "setuid", "setuid32", "setxattr", "shmat", "shmctl", "shmdt",
	"shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4", "sigprocmask",
	"sigreturn", "socketcall", "socketpair", "splice", "stat", "stat64", "statfs",
	"statfs64", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs",
	"sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete", "timer_getoverrun",
	"timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64",
	"timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
	"timerfd_settime64", "times", "tkill", "truncate", "truncate64", "ugetrlimit", "umask",
	"uname", "unlink", "unlinkat", "utime", "utimensat", "utimensat_time64", "utimes",
	"vfork", "vmsplice", "wait4", "waitid", "waitpid", "write", "writev",
}

// personas are the personality(2) arguments Docker allows: PER_LINUX,
// PER_LINUX32, UNAME26, PER_LINUX32|UNAME26, and 0xffffffff (a query).
var personas = []uint64{0x0, 0x8, 0x20000, 0x20008, 0xffffffff}

// Default returns a new profile with the effect of Docker's default seccomp
// profile on x86-64 for a container with Docker's default capabilities
// (no CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_MODULE, ...; CAP_SYS_CHROOT
// kept). Everything not allowed fails with EPERM, among them mount,
// umount2, pivot_root, unshare, setns, clone with namespace flags, keyctl,
// add_key, request_key, bpf, kexec_load, init_module, open_by_handle_at,
// perf_event_open, userfaultfd, reboot, the clock setters and io_uring.
//
// As in Docker: ptrace, process_vm_readv and process_vm_writev are allowed
// (without CAP_SYS_PTRACE they reach only the caller's own processes);
// clone3 fails with ENOSYS so that libc falls back to clone, whose flags
// can be checked; socket(AF_ALG) and socket(AF_VSOCK) are refused;
// personality accepts only the personas above. The profile covers x86-64,
// i386 and x32 (x32 calls get EPERM), as Docker's does on an x86-64 host.
//
// The socket families are refused by rules that compare the argument's low
// 32 bits only: the kernel reads the family as an int, so high bits set in
// the register must not carry a refused family past the filter.
func Default() *specs.LinuxSeccomp {
	p := &specs.LinuxSeccomp{
		DefaultAction:   specs.ActErrno,
		DefaultErrnoRet: errnoRet(errEPERM),
		Architectures:   []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
		Syscalls: []specs.LinuxSyscall{
			{Names: append([]string(nil), dockerAllowed...), Action: specs.ActAllow},
			// Docker allows these from kernel 4.8, which makes ptrace
			// respect seccomp; berth needs newer kernels anyway.
			{Names: []string{"process_vm_readv", "process_vm_writev", "ptrace"}, Action: specs.ActAllow},
			{Names: []string{"arch_prctl", "modify_ldt"}, Action: specs.ActAllow},
			// CAP_SYS_CHROOT is a default capability.
			{Names: []string{"chroot"}, Action: specs.ActAllow},
			// Refused families first: the first rule that holds decides.
			// AF_ALG is the kernel's crypto API, the way in of
			// CVE-2026-31431 ("Copy Fail").
			{
				Names:    []string{"socket"},
				Action:   specs.ActErrno,
				ErrnoRet: errnoRet(errEPERM),
				Args:     []specs.LinuxSeccompArg{{Index: 0, Value: lowWord, ValueTwo: afALG, Op: specs.OpMaskedEqual}},
			},
			{
				Names:    []string{"socket"},
				Action:   specs.ActErrno,
				ErrnoRet: errnoRet(errEPERM),
				Args:     []specs.LinuxSeccompArg{{Index: 0, Value: lowWord, ValueTwo: afVSOCK, Op: specs.OpMaskedEqual}},
			},
			{Names: []string{"socket"}, Action: specs.ActAllow},
			{
				Names:  []string{"clone"},
				Action: specs.ActAllow,
				Args:   []specs.LinuxSeccompArg{{Index: 0, Value: nsFlags, ValueTwo: 0, Op: specs.OpMaskedEqual}},
			},
			{Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: errnoRet(errENOSYS)},
		},
	}
	for _, v := range personas {
		p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{
			Names:  []string{"personality"},
			Action: specs.ActAllow,
			Args:   []specs.LinuxSeccompArg{{Index: 0, Value: v, Op: specs.OpEqualTo}},
		})
	}
	return p
}

// errnoRet returns a new pointer to e, so that no two rules of a profile
// share one.
func errnoRet(e uint) *uint { return &e }
