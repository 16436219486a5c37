// Package seccomp compiles OCI seccomp profiles (runtime-spec LinuxSeccomp)
// into classic BPF and loads them, without libseccomp or cgo.
//
// Default returns a profile with the effect of Docker's default profile for
// a container with Docker's default capabilities. Compile turns any profile
// into a seccomp BPF program for an x86-64 kernel; Load compiles a profile
// and installs it on every thread of the calling process.
//
// # What a compiled program does
//
// The program first checks seccomp_data.arch:
//
//   - AUDIT_ARCH_X86_64 with the x32 bit (0x40000000) set in the syscall
//     number is an x32 call. berth compiles no x32 rules: such a call gets the
//     profile's default action when the profile lists SCMP_ARCH_X32, and
//     SECCOMP_RET_KILL_PROCESS when it does not.
//   - AUDIT_ARCH_X86_64 otherwise: the profile's rules, with x86-64 numbers.
//   - AUDIT_ARCH_I386 when the profile lists SCMP_ARCH_X86: the profile's rules,
//     with i386 numbers; arguments are compared as the 32-bit values the
//     kernel passes (their high word taken as zero).
//   - any other architecture (an i386 call when the profile does not list
//     SCMP_ARCH_X86): SECCOMP_RET_KILL_PROCESS, as libseccomp does with a
//     "bad architecture" by default.
//
// Other architectures a profile names (SCMP_ARCH_AARCH64 and the like) are
// accepted and ignored: an x86-64 kernel never reports them.
//
// Within an architecture, the rules that name a syscall are tried in profile
// order and the first whose argument conditions all hold decides; when none
// does, the default action applies. A syscall name the architecture does not
// have is skipped (UnknownSyscalls lists them), as runc does.
//
// Two rules follow runc so that Docker-style profiles behave as they do under
// runc:
//
//   - a rule whose argument conditions name the same argument index more than
//     once is split into one rule per condition (the conditions are ORed
//     instead of ANDed);
//   - unless the default action is SCMP_ACT_ALLOW or SCMP_ACT_LOG, a syscall
//     whose number is higher than every syscall the profile names for that
//     architecture fails with ENOSYS rather than the default action, so a C
//     library falls back from syscalls newer than the profile (fchmodat2,
//     futex_wait, ...) instead of failing with EPERM.
package seccomp

import (
	"sort"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Syscall returns the x86-64 number of the named system call ("openat",
// "clone3", ...), and false when x86-64 has no system call of that name.
func Syscall(name string) (int, bool) {
	nr, ok := syscallsX8664[name]
	return nr, ok
}

// UnknownSyscalls returns, sorted and without duplicates, the syscall names
// in p that none of the x86 architectures the profile covers (x86-64, and
// i386 when listed) has. Compile skips those names; callers may log them.
func UnknownSyscalls(p *specs.LinuxSeccomp) []string {
	if p == nil {
		return nil
	}
	i386 := false
	for _, a := range p.Architectures {
		if a == specs.ArchX86 {
			i386 = true
		}
	}
	seen := map[string]bool{}
	var out []string
	for _, sc := range p.Syscalls {
		for _, name := range sc.Names {
			if seen[name] {
				continue
			}
			seen[name] = true
			_, in64 := syscallsX8664[name]
			_, in32 := syscallsI386[name]
			if !in64 && !(i386 && in32) {
				out = append(out, name)
			}
		}
	}
	sort.Strings(out)
	return out
}
