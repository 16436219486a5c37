package seccomp

import (
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
)

// Offsets in struct seccomp_data (include/uapi/linux/seccomp.h):
// int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6].
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
	maxArgs = 6
)

// x32Bit marks an x32 system call number (__X32_SYSCALL_BIT).
const x32Bit = 0x40000000

// cond is one argument comparison of a rule.
type cond struct {
	index uint
	op    specs.LinuxSeccompOperator
	value uint64 // the operand; the mask for SCMP_CMP_MASKED_EQ
	two   uint64 // the wanted value for SCMP_CMP_MASKED_EQ
}

// rule is one way a syscall can be matched: all conds hold, then ret.
type rule struct {
	conds []cond
	ret   uint32
}

// section is the code for one architecture: its syscall rules by number.
type section struct {
	audit  uint32
	bits32 bool
	rules  map[int][]rule // in profile order per number
	maxNr  int            // highest number the profile names; -1 for none
}

// Compile validates p and translates it into a seccomp BPF program for an
// x86-64 kernel (the package documentation describes what it does).
//
// An unknown action, operator, architecture or flag, an argument index over
// 5, an errnoRet on an action that takes none, or an empty syscall name is
// an error wrapping errdefs.ErrInvalid; SCMP_ACT_NOTIFY, a listener path and
// SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV wrap errdefs.ErrNotSupported.
//
// Default's profile is compiled when berth is built (defaultProgram), which
// spares each container start most of a millisecond of CPU.
func Compile(p *specs.LinuxSeccomp) ([]unix.SockFilter, error) {
	if p == nil {
		return nil, fmt.Errorf("seccomp: no profile: %w", errdefs.ErrInvalid)
	}
	if len(defaultProgram) > 0 && reflect.DeepEqual(p, Default()) {
		return slices.Clone(defaultProgram), nil
	}
	return compile(p)
}

// compile is Compile without the built-in program.
func compile(p *specs.LinuxSeccomp) ([]unix.SockFilter, error) {
	if _, err := filterFlags(p); err != nil {
		return nil, err
	}
	def, err := action(p.DefaultAction, p.DefaultErrnoRet, "defaultAction")
	if err != nil {
		return nil, err
	}
	i386, x32, err := arches(p.Architectures)
	if err != nil {
		return nil, err
	}

	s64 := &section{audit: unix.AUDIT_ARCH_X86_64, rules: map[int][]rule{}, maxNr: -1}
	s32 := &section{audit: unix.AUDIT_ARCH_I386, bits32: true, rules: map[int][]rule{}, maxNr: -1}
	for i, sc := range p.Syscalls {
		what := fmt.Sprintf("syscalls[%d]", i)
		rules, err := parseRules(sc, what)
		if err != nil {
			return nil, err
		}
		if len(sc.Names) == 0 {
			return nil, fmt.Errorf("seccomp: %s names no syscall: %w", what, errdefs.ErrInvalid)
		}
		for _, name := range sc.Names {
			if name == "" {
				return nil, fmt.Errorf("seccomp: %s has an empty syscall name: %w", what, errdefs.ErrInvalid)
			}
			s64.add(syscallsX8664, name, rules)
			s32.add(syscallsI386, name, rules)
		}
	}

	// Unless everything is allowed anyway, syscalls newer than the profile
	// fail with ENOSYS so that libc falls back (runc does the same).
	stub := !(p.DefaultAction == specs.ActAllow || p.DefaultAction == specs.ActLog)

	killProcess := uint32(unix.SECCOMP_RET_KILL_PROCESS)
	x32Ret := killProcess
	if x32 {
		x32Ret = def
	}

	a := &assembler{}
	l64, l32, bad := a.newLabel(), a.newLabel(), a.newLabel()
	a.load(offArch)
	if i386 {
		next := a.newLabel()
		a.jump(unix.BPF_JEQ, unix.AUDIT_ARCH_X86_64, l64, next)
		a.place(next)
		a.jump(unix.BPF_JEQ, unix.AUDIT_ARCH_I386, l32, bad)
	} else {
		a.jump(unix.BPF_JEQ, unix.AUDIT_ARCH_X86_64, l64, bad)
	}
	a.place(bad)
	a.ret(killProcess)

	a.place(l64)
	a.load(offNr)
	isX32, native := a.newLabel(), a.newLabel()
	a.jump(unix.BPF_JGE, x32Bit, isX32, native)
	a.place(isX32)
	a.ret(x32Ret)
	a.place(native)
	s64.emit(a, def, stub)

	if i386 {
		a.place(l32)
		a.load(offNr)
		s32.emit(a, def, stub)
	}
	return a.assemble()
}

// add records rules for name under its number in table, if it has one.
func (s *section) add(table map[string]int, name string, rules []rule) {
	nr, ok := table[name]
	if !ok {
		return
	}
	s.rules[nr] = append(s.rules[nr], rules...)
	if nr > s.maxNr {
		s.maxNr = nr
	}
}

// emit writes the section's dispatch, with the syscall number in A: a
// binary search over the numbers that have rules, each leading to the
// block of its rules; syscalls without rules get def.
func (s *section) emit(a *assembler, def uint32, stub bool) {
	defLabel := a.newLabel()
	if stub && s.maxNr >= 0 {
		enosys, rest := a.newLabel(), a.newLabel()
		a.jump(unix.BPF_JGT, uint32(s.maxNr), enosys, rest)
		a.place(enosys)
		a.ret(unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS))
		a.place(rest)
	}

	// Syscalls whose rules are identical share one block.
	nrs := make([]int, 0, len(s.rules))
	blockOf := map[int]label{}
	blocks := map[string]label{}
	var order []string
	bodies := map[string][]rule{}
	for nr, rules := range s.rules {
		nrs = append(nrs, nr)
		key := rulesKey(rules)
		l, ok := blocks[key]
		if !ok {
			l = a.newLabel()
			blocks[key] = l
			order = append(order, key)
			bodies[key] = rules
		}
		blockOf[nr] = l
	}
	sort.Ints(nrs)
	sort.Strings(order)

	s.tree(a, nrs, blockOf, defLabel)
	for _, key := range order {
		a.place(blocks[key])
		s.block(a, bodies[key], def)
	}
	a.place(defLabel)
	a.ret(def)
}

// leafSize is how many numbers the dispatch tree compares one by one
// instead of splitting further.
const leafSize = 4

// tree emits a binary search over the sorted numbers nrs.
func (s *section) tree(a *assembler, nrs []int, blockOf map[int]label, def label) {
	if len(nrs) <= leafSize {
		for i, nr := range nrs {
			next := def
			if i < len(nrs)-1 {
				next = a.newLabel()
			}
			a.jump(unix.BPF_JEQ, uint32(nr), blockOf[nr], next)
			if next != def {
				a.place(next)
			}
		}
		if len(nrs) == 0 {
			a.ja(def)
		}
		return
	}
	mid := len(nrs) / 2
	lo, hi := a.newLabel(), a.newLabel()
	a.jump(unix.BPF_JGE, uint32(nrs[mid]), hi, lo)
	a.place(lo)
	s.tree(a, nrs[:mid], blockOf, def)
	a.place(hi)
	s.tree(a, nrs[mid:], blockOf, def)
}

// block emits the rules of one syscall, tried in order.
func (s *section) block(a *assembler, rules []rule, def uint32) {
	for _, r := range rules {
		if len(r.conds) == 0 {
			a.ret(r.ret)
			return // later rules can never be reached
		}
		next := a.newLabel()
		for _, c := range r.conds {
			match := a.newLabel()
			s.cond(a, c, match, next)
			a.place(match)
		}
		a.ret(r.ret)
		a.place(next)
	}
	a.ret(def)
}

// cond emits one 64-bit argument comparison, going to match when it holds
// and to fail when not. BPF words are 32 bits: the high words decide unless
// they are equal, then the low words do. On a 32-bit architecture the
// argument's high word is zero, so that step is decided here.
func (s *section) cond(a *assembler, c cond, match, fail label) {
	lo := offArgs + 8*uint32(c.index)
	hi := lo + 4
	vh, vl := uint32(c.value>>32), uint32(c.value)
	th, tl := uint32(c.two>>32), uint32(c.two)

	// Where to go on the high word: above vh, equal (check low words), below.
	lowStep := a.newLabel()
	var above, below label
	switch c.op {
	case specs.OpEqualTo, specs.OpMaskedEqual:
		above, below = fail, fail
	case specs.OpNotEqual:
		above, below = match, match
	case specs.OpGreaterThan, specs.OpGreaterEqual:
		above, below = match, fail
	case specs.OpLessThan, specs.OpLessEqual:
		above, below = fail, match
	}

	switch {
	case c.op == specs.OpMaskedEqual && s.bits32:
		if th != 0 {
			a.ja(fail) // 0 & mask can only be 0
			return
		}
	case c.op == specs.OpMaskedEqual:
		a.load(hi)
		a.and(vh)
		a.jump(unix.BPF_JEQ, th, lowStep, fail)
	case s.bits32:
		if vh != 0 {
			a.ja(below) // the argument (high word 0) is below the value
			return
		}
	case above == below:
		a.load(hi)
		a.jump(unix.BPF_JEQ, vh, lowStep, above)
	default:
		eq := a.newLabel()
		a.load(hi)
		a.jump(unix.BPF_JGT, vh, above, eq)
		a.place(eq)
		a.jump(unix.BPF_JEQ, vh, lowStep, below)
	}

	a.place(lowStep)
	a.load(lo)
	switch c.op {
	case specs.OpEqualTo:
		a.jump(unix.BPF_JEQ, vl, match, fail)
	case specs.OpNotEqual:
		a.jump(unix.BPF_JEQ, vl, fail, match)
	case specs.OpGreaterThan:
		a.jump(unix.BPF_JGT, vl, match, fail)
	case specs.OpGreaterEqual:
		a.jump(unix.BPF_JGE, vl, match, fail)
	case specs.OpLessThan:
		a.jump(unix.BPF_JGE, vl, fail, match)
	case specs.OpLessEqual:
		a.jump(unix.BPF_JGT, vl, fail, match)
	case specs.OpMaskedEqual:
		a.and(vl)
		a.jump(unix.BPF_JEQ, tl, match, fail)
	}
}

// rulesKey identifies a list of rules, so syscalls with the same rules can
// share their code.
func rulesKey(rules []rule) string {
	b := make([]byte, 0, 16*len(rules))
	for _, r := range rules {
		b = strconv.AppendUint(b, uint64(r.ret), 16)
		for _, c := range r.conds {
			b = append(b, ',')
			b = strconv.AppendUint(b, uint64(c.index), 10)
			b = append(b, c.op...)
			b = strconv.AppendUint(b, c.value, 16)
			b = append(b, '/')
			b = strconv.AppendUint(b, c.two, 16)
		}
		b = append(b, ';')
	}
	return string(b)
}

// parseRules validates one syscalls[] entry and returns its rules: one, or
// one per condition when conditions share an argument index (as runc does).
func parseRules(sc specs.LinuxSyscall, what string) ([]rule, error) {
	ret, err := action(sc.Action, sc.ErrnoRet, what)
	if err != nil {
		return nil, err
	}
	var conds []cond
	seen := map[uint]bool{}
	split := false
	for j, arg := range sc.Args {
		if arg.Index >= maxArgs {
			return nil, fmt.Errorf("seccomp: %s.args[%d]: argument index %d is out of range 0-5: %w",
				what, j, arg.Index, errdefs.ErrInvalid)
		}
		switch arg.Op {
		case specs.OpEqualTo, specs.OpNotEqual, specs.OpGreaterThan, specs.OpGreaterEqual,
			specs.OpLessThan, specs.OpLessEqual, specs.OpMaskedEqual:
		default:
			return nil, fmt.Errorf("seccomp: %s.args[%d]: unknown operator %q: %w", what, j, arg.Op, errdefs.ErrInvalid)
		}
		if seen[arg.Index] {
			split = true
		}
		seen[arg.Index] = true
		conds = append(conds, cond{index: arg.Index, op: arg.Op, value: arg.Value, two: arg.ValueTwo})
	}
	if !split {
		return []rule{{conds: conds, ret: ret}}, nil
	}
	rules := make([]rule, len(conds))
	for j, c := range conds {
		rules[j] = rule{conds: []cond{c}, ret: ret}
	}
	return rules, nil
}

// action translates an action and its errnoRet into a seccomp return value.
// An ERRNO or TRACE action without errnoRet returns EPERM, as runc does.
func action(act specs.LinuxSeccompAction, errnoRet *uint, what string) (uint32, error) {
	data := uint32(unix.EPERM)
	if errnoRet != nil {
		if act != specs.ActErrno && act != specs.ActTrace {
			return 0, fmt.Errorf("seccomp: %s: errnoRet is only valid with SCMP_ACT_ERRNO and SCMP_ACT_TRACE, not %q: %w",
				what, act, errdefs.ErrInvalid)
		}
		if *errnoRet > unix.SECCOMP_RET_DATA {
			return 0, fmt.Errorf("seccomp: %s: errnoRet %d is over %d: %w", what, *errnoRet, unix.SECCOMP_RET_DATA, errdefs.ErrInvalid)
		}
		data = uint32(*errnoRet)
	}
	switch act {
	case specs.ActAllow:
		return unix.SECCOMP_RET_ALLOW, nil
	case specs.ActErrno:
		return unix.SECCOMP_RET_ERRNO | data, nil
	case specs.ActTrace:
		return unix.SECCOMP_RET_TRACE | data, nil
	case specs.ActKill, specs.ActKillThread:
		return unix.SECCOMP_RET_KILL_THREAD, nil
	case specs.ActKillProcess:
		return unix.SECCOMP_RET_KILL_PROCESS, nil
	case specs.ActTrap:
		return unix.SECCOMP_RET_TRAP, nil
	case specs.ActLog:
		return unix.SECCOMP_RET_LOG, nil
	case specs.ActNotify:
		return 0, fmt.Errorf("seccomp: %s: action SCMP_ACT_NOTIFY (user-space notification): %w", what, errdefs.ErrNotSupported)
	case "":
		return 0, fmt.Errorf("seccomp: %s: no action: %w", what, errdefs.ErrInvalid)
	default:
		return 0, fmt.Errorf("seccomp: %s: unknown action %q: %w", what, act, errdefs.ErrInvalid)
	}
}

// arches validates the profile's architectures and reports whether i386
// and x32 are among them.
func arches(list []specs.Arch) (i386, x32 bool, err error) {
	for _, a := range list {
		switch a {
		case specs.ArchX86_64:
		case specs.ArchX86:
			i386 = true
		case specs.ArchX32:
			x32 = true
		case specs.ArchARM, specs.ArchAARCH64, specs.ArchMIPS, specs.ArchMIPS64, specs.ArchMIPS64N32,
			specs.ArchMIPSEL, specs.ArchMIPSEL64, specs.ArchMIPSEL64N32, specs.ArchPPC, specs.ArchPPC64,
			specs.ArchPPC64LE, specs.ArchS390, specs.ArchS390X, specs.ArchPARISC, specs.ArchPARISC64,
			specs.ArchRISCV64, specs.ArchLOONGARCH64, specs.ArchM68K, specs.ArchSH, specs.ArchSHEB:
			// Never reported by an x86-64 kernel.
		default:
			return false, false, fmt.Errorf("seccomp: unknown architecture %q: %w", a, errdefs.ErrInvalid)
		}
	}
	return i386, x32, nil
}

// filterFlags returns the seccomp(2) flags Load passes for p:
// SECCOMP_FILTER_FLAG_TSYNC always, plus the profile's LOG and SPEC_ALLOW.
func filterFlags(p *specs.LinuxSeccomp) (uintptr, error) {
	if p.ListenerPath != "" {
		return 0, fmt.Errorf("seccomp: listenerPath %q (user-space notification): %w", p.ListenerPath, errdefs.ErrNotSupported)
	}
	flags := uintptr(unix.SECCOMP_FILTER_FLAG_TSYNC)
	for _, f := range p.Flags {
		switch f {
		case "SECCOMP_FILTER_FLAG_TSYNC":
		case specs.LinuxSeccompFlagLog:
			flags |= unix.SECCOMP_FILTER_FLAG_LOG
		case specs.LinuxSeccompFlagSpecAllow:
			flags |= unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW
		case specs.LinuxSeccompFlagWaitKillableRecv:
			return 0, fmt.Errorf("seccomp: flag %s needs user-space notification: %w", f, errdefs.ErrNotSupported)
		default:
			return 0, fmt.Errorf("seccomp: unknown flag %q: %w", f, errdefs.ErrInvalid)
		}
	}
	return flags, nil
}
