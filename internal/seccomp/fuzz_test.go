//go:build linux

package seccomp

import (
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// A bundle's config.json brings its own seccomp profile, which berth
// compiles: FuzzCompile builds profiles from the fuzzer's bytes, compiles
// them, checks the program as the kernel would and runs it on calls made
// to hit the profile's edges, comparing every action with what the
// profile says (model below, written from the package documentation, not
// from the compiler).

// fuzzNames are the syscalls fuzzed profiles name: neighbours in the
// dispatch tree, names only one architecture has, the highest numbers, and
// a name no architecture has.
var fuzzNames = []string{
	"read", "write", "open", "close", "socket", "clone", "clone3", "personality", "mount",
	"chown32", "socketcall", "futex_waitv", "io_uring_setup", "getpid", "lseek", "ioctl",
	"rseq_slice_yield", "nosuchcall",
}

var fuzzActions = []specs.LinuxSeccompAction{
	specs.ActAllow, specs.ActErrno, specs.ActKill, specs.ActKillProcess, specs.ActTrap,
	specs.ActTrace, specs.ActLog, specs.ActKillThread,
}

var fuzzOps = []specs.LinuxSeccompOperator{
	specs.OpEqualTo, specs.OpNotEqual, specs.OpGreaterThan, specs.OpGreaterEqual,
	specs.OpLessThan, specs.OpLessEqual, specs.OpMaskedEqual,
}

// fuzzBytes hands out the fuzzer's bytes; zeros once they run out.
type fuzzBytes []byte

func (b *fuzzBytes) byte() byte {
	if len(*b) == 0 {
		return 0
	}
	c := (*b)[0]
	*b = (*b)[1:]
	return c
}

// u64 is a number that is often near a boundary: small, a word boundary,
// or anything.
func (b *fuzzBytes) u64() uint64 {
	switch k := b.byte(); k % 4 {
	case 0:
		return uint64(b.byte())
	case 1:
		return uint64(b.byte()) << 32
	case 2:
		return 1<<32 - uint64(b.byte())
	default:
		var v uint64
		for range 8 {
			v = v<<8 | uint64(b.byte())
		}
		return v
	}
}

// profile builds a profile from the bytes.
func (b *fuzzBytes) profile() *specs.LinuxSeccomp {
	p := &specs.LinuxSeccomp{DefaultAction: fuzzActions[int(b.byte())%len(fuzzActions)]}
	if p.DefaultAction == specs.ActErrno && b.byte()%2 == 0 {
		e := uint(b.byte())
		p.DefaultErrnoRet = &e
	}
	arch := b.byte()
	p.Architectures = []specs.Arch{specs.ArchX86_64}
	if arch&1 != 0 {
		p.Architectures = append(p.Architectures, specs.ArchX86)
	}
	if arch&2 != 0 {
		p.Architectures = append(p.Architectures, specs.ArchX32)
	}
	for n := int(b.byte() % 12); n > 0; n-- {
		sc := specs.LinuxSyscall{Action: fuzzActions[int(b.byte())%len(fuzzActions)]}
		if sc.Action == specs.ActErrno || sc.Action == specs.ActTrace {
			e := uint(b.byte())
			sc.ErrnoRet = &e
		}
		for k := 1 + int(b.byte()%3); k > 0; k-- {
			sc.Names = append(sc.Names, fuzzNames[int(b.byte())%len(fuzzNames)])
		}
		for k := int(b.byte() % 4); k > 0; k-- {
			sc.Args = append(sc.Args, specs.LinuxSeccompArg{
				Index:    uint(b.byte() % 3),
				Op:       fuzzOps[int(b.byte())%len(fuzzOps)],
				Value:    b.u64(),
				ValueTwo: b.u64(),
			})
		}
		p.Syscalls = append(p.Syscalls, sc)
	}
	return p
}

// modelRet is the action the profile gives a call, as the package
// documentation describes it.
func modelRet(t *testing.T, p *specs.LinuxSeccomp, d seccompData) uint32 {
	has := func(a specs.Arch) bool {
		for _, x := range p.Architectures {
			if x == a {
				return true
			}
		}
		return false
	}
	ret := func(act specs.LinuxSeccompAction, e *uint) uint32 {
		r, err := action(act, e, "model")
		if err != nil {
			t.Fatalf("model: %v", err)
		}
		return r
	}
	def := ret(p.DefaultAction, p.DefaultErrnoRet)
	table := syscallsX8664
	switch {
	case d.arch == unix.AUDIT_ARCH_X86_64 && d.nr >= x32Bit:
		if has(specs.ArchX32) {
			return def
		}
		return unix.SECCOMP_RET_KILL_PROCESS
	case d.arch == unix.AUDIT_ARCH_X86_64:
	case d.arch == unix.AUDIT_ARCH_I386 && has(specs.ArchX86):
		table = syscallsI386
		for i := range d.args {
			d.args[i] &= 0xffffffff // what an i386 call can pass
		}
	default:
		return unix.SECCOMP_RET_KILL_PROCESS
	}
	holds := func(a specs.LinuxSeccompArg) bool {
		v := d.args[a.Index]
		switch a.Op {
		case specs.OpEqualTo:
			return v == a.Value
		case specs.OpNotEqual:
			return v != a.Value
		case specs.OpGreaterThan:
			return v > a.Value
		case specs.OpGreaterEqual:
			return v >= a.Value
		case specs.OpLessThan:
			return v < a.Value
		case specs.OpLessEqual:
			return v <= a.Value
		}
		return v&a.Value == a.ValueTwo // SCMP_CMP_MASKED_EQ
	}
	maxNr := -1
	for _, sc := range p.Syscalls {
		for _, name := range sc.Names {
			if nr, ok := table[name]; ok {
				maxNr = max(maxNr, nr)
			}
		}
	}
	for _, sc := range p.Syscalls {
		named := false
		for _, name := range sc.Names {
			if nr, ok := table[name]; ok && uint32(nr) == d.nr {
				named = true
			}
		}
		if !named {
			continue
		}
		// Conditions on distinct arguments must all hold; when an
		// argument is named twice, any one condition is enough (runc).
		seen, repeated := map[uint]bool{}, false
		for _, a := range sc.Args {
			repeated = repeated || seen[a.Index]
			seen[a.Index] = true
		}
		all, any := true, false
		for _, a := range sc.Args {
			h := holds(a)
			all, any = all && h, any || h
		}
		if (!repeated && all) || (repeated && any) {
			return ret(sc.Action, sc.ErrnoRet)
		}
	}
	stub := p.DefaultAction != specs.ActAllow && p.DefaultAction != specs.ActLog
	if stub && maxNr >= 0 && int64(d.nr) > int64(maxNr) {
		return unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	}
	return def
}

func FuzzCompile(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 0, 3, 4, 0, 2, 4, 3, 1, 1, 0, 40, 0, 38, 6, 1, 0, 4, 5, 1, 9, 1, 2, 1, 0, 7, 0, 0})
	f.Add([]byte{0, 1, 1, 11, 3, 2, 1, 5, 9, 3, 0, 6, 3, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 2, 0, 1, 5, 1, 4})
	f.Add([]byte("the default profile, more or less: errno, three arches, a dozen rules"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b := fuzzBytes(data)
		p := b.profile()
		prog, err := compile(p)
		if err != nil {
			if msg := err.Error(); strings.ContainsAny(msg, "\n\r") {
				t.Fatalf("error of more than one line: %q", msg)
			}
			return
		}
		verify(t, prog)
		// Calls on every named syscall (each architecture's number),
		// just above the highest, x32 and foreign ones, with arguments
		// at and around the values the rules compare with.
		var nrs []uint32
		for _, name := range fuzzNames {
			for _, table := range []map[string]int{syscallsX8664, syscallsI386} {
				if nr, ok := table[name]; ok {
					nrs = append(nrs, uint32(nr), uint32(nr)+1)
				}
			}
		}
		nrs = append(nrs, 0, 471, 472, x32Bit, x32Bit|1, 0xffffffff)
		var vals []uint64
		for _, sc := range p.Syscalls {
			for _, a := range sc.Args {
				for _, v := range []uint64{a.Value, a.ValueTwo, a.Value & a.ValueTwo, a.ValueTwo | ^a.Value} {
					vals = append(vals, v, v+1, v-1, v^1<<32, v&0xffffffff)
				}
			}
		}
		vals = append(vals, 0, ^uint64(0))
		pick := func(i int) uint64 { return vals[(int(b.byte())+i)%len(vals)] }
		for i, nr := range nrs {
			for _, arch := range []uint32{unix.AUDIT_ARCH_X86_64, unix.AUDIT_ARCH_I386, unix.AUDIT_ARCH_AARCH64} {
				for k := range 3 {
					d := seccompData{nr: nr, arch: arch, args: [6]uint64{pick(i + k), pick(i + 2*k + 1), pick(i + 3*k + 2), pick(k), 0, 0}}
					if got, want := run(t, prog, d), modelRet(t, p, d); got != want {
						t.Fatalf("profile %+v\ncall nr %d arch %#x args %#x: program says %#x, profile %#x", p, d.nr, d.arch, d.args, got, want)
					}
				}
			}
		}
	})
}
