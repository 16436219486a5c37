package cgroups

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// cgroup v2 has no devices.allow and devices.deny: device access is decided
// by an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE attached to the
// cgroup directory. The kernel runs it for every open and mknod of a device
// node with struct bpf_cgroup_dev_ctx in r1:
//
//	u32 access_type  device type in the low 16 bits (block 1, char 2),
//	                 requested accesses in the high 16 (mknod 1, read 2, write 4)
//	u32 major, minor
//
// and denies the access (EPERM) when the program returns 0 in r0.
//
// deviceProgram compiles a rule list into such a program in two steps. First
// v1Devices replays the rules the way cgroup v1's devices controller
// (security/device_cgroup.c) applies lines written to devices.allow and
// devices.deny, from a fresh cgroup that allows everything: an 'a' rule sets
// the default and drops every exception; a rule that agrees with the default
// removes the access bits it names from the exception with exactly the same
// type, major and minor (not from wider ones: after "deny a", "allow c *:*
// rw", a "deny c 1:3 rw" changes nothing, as in v1); a rule that disagrees
// adds an exception (merged into one with the same device). Then the program
// tests the request against the exceptions as v1 does: with a default of
// allow, a request is denied if it shares any access bit with a matching
// exception; with a default of deny, it is allowed if one matching exception
// covers all its access bits.

// Device types and access bits of bpf_cgroup_dev_ctx (BPF_DEVCG_DEV_*,
// BPF_DEVCG_ACC_*), the same values as v1's DEVCG_*.
const (
	devBlock = 1
	devChar  = 2

	accMknod = 1
	accRead  = 2
	accWrite = 4
	accAll   = accMknod | accRead | accWrite
)

// devException is one entry of a v1 devices cgroup's exception list. major
// and minor are -1 for any.
type devException struct {
	typ          int32 // devBlock or devChar
	major, minor int64
	access       int32 // acc* bits, never 0
}

// v1Devices replays rules (valid ones, see DeviceRule.Check) on a fresh v1
// devices cgroup and returns its default (true: allow) and exceptions.
func v1Devices(rules []DeviceRule) (allow bool, exceptions []devException) {
	allow = true
	for _, r := range rules {
		if r.Type == 'a' {
			allow, exceptions = r.Allow, nil
			continue
		}
		ex := devException{typ: devChar, major: r.Major, minor: r.Minor}
		if r.Type == 'b' {
			ex.typ = devBlock
		}
		for i, c := range "mrw" { // accMknod, accRead, accWrite
			if strings.ContainsRune(r.Access, c) {
				ex.access |= 1 << i
			}
		}
		i := 0
		for ; i < len(exceptions); i++ {
			e := exceptions[i]
			if e.typ == ex.typ && e.major == ex.major && e.minor == ex.minor {
				break
			}
		}
		switch {
		case r.Allow != allow && i < len(exceptions):
			exceptions[i].access |= ex.access
		case r.Allow != allow:
			exceptions = append(exceptions, ex)
		case i < len(exceptions):
			exceptions[i].access &^= ex.access
			if exceptions[i].access == 0 {
				exceptions = append(exceptions[:i], exceptions[i+1:]...)
			}
		}
	}
	return allow, exceptions
}

// bpfInsn is one eBPF instruction, struct bpf_insn of <linux/bpf.h>, 8 bytes:
//
//	u8  code  class (low 3 bits) | source (BPF_K: imm, BPF_X: src reg) | operation
//	u8  regs  dst_reg:4, src_reg:4 (C bit fields: dst in the low nibble on
//	          little-endian machines, the high one on big-endian ones)
//	s16 off   jumps: instructions to skip, counted from the next one;
//	          loads: byte offset from the source register
//	s32 imm   immediate operand
type bpfInsn struct {
	code uint8
	regs uint8
	off  int16
	imm  int32
}

// The opcodes deviceProgram emits. ALU32 and JMP32 (kernel 5.1) work on the
// low 32 bits, so that majors and minors up to 2^32-1 compare correctly with
// a 32-bit immediate.
const (
	opLoadW  = unix.BPF_LDX | unix.BPF_MEM | unix.BPF_W   // dst = *(u32 *)(src + off)
	opMovImm = unix.BPF_ALU | unix.BPF_MOV | unix.BPF_K   // dst = imm
	opMovReg = unix.BPF_ALU | unix.BPF_MOV | unix.BPF_X   // dst = src
	opAndImm = unix.BPF_ALU | unix.BPF_AND | unix.BPF_K   // dst &= imm
	opRshImm = unix.BPF_ALU | unix.BPF_RSH | unix.BPF_K   // dst >>= imm
	opJneImm = unix.BPF_JMP32 | unix.BPF_JNE | unix.BPF_K // if dst != imm: pc += off
	opJeqImm = unix.BPF_JMP32 | unix.BPF_JEQ | unix.BPF_K // if dst == imm: pc += off
	opExit   = unix.BPF_JMP | unix.BPF_EXIT               // return r0
)

// Registers: r1 holds the context; the program keeps the request in r2-r5
// and uses r6 as scratch.
const (
	rRet, rCtx, rAccess, rType, rMajor, rMinor, rTmp = 0, 1, 2, 3, 4, 5, 6
)

// bigEndian says how this machine lays out the regs bit fields.
var bigEndian = binary.NativeEndian.Uint16([]byte{0, 1}) == 1

func insn(code uint8, dst, src uint8, off int16, imm int32) bpfInsn {
	regs := dst | src<<4
	if bigEndian {
		regs = dst<<4 | src
	}
	return bpfInsn{code: code, regs: regs, off: off, imm: imm}
}

// deviceProgram returns the program enforcing rules (valid ones, see
// DeviceRule.Check):
//
//	r2 = ctx.access_type; r3 = r2 & 0xffff; r2 >>= 16; r4 = ctx.major; r5 = ctx.minor
//	for each exception:
//	    if r3 != type  goto next
//	    if r4 != major goto next          (left out for any major)
//	    if r5 != minor goto next          (left out for any minor)
//	    default allow: r6 = r2 & access; if r6 == 0 goto next  (no shared bit)
//	    default deny:  r6 = r2 &^ access; if r6 != 0 goto next (a bit not covered)
//	    return !default
//	next:
//	return default
func deviceProgram(rules []DeviceRule) []bpfInsn {
	allow, exceptions := v1Devices(rules)
	def := int32(0)
	if allow {
		def = 1
	}
	prog := []bpfInsn{
		insn(opLoadW, rAccess, rCtx, 0, 0),
		insn(opMovReg, rType, rAccess, 0, 0),
		insn(opAndImm, rType, 0, 0, 0xffff),
		insn(opRshImm, rAccess, 0, 0, 16),
		insn(opLoadW, rMajor, rCtx, 4, 0),
		insn(opLoadW, rMinor, rCtx, 8, 0),
	}
	const next = -1 // placeholder offset: to the end of the block
	for _, e := range exceptions {
		block := []bpfInsn{insn(opJneImm, rType, 0, next, e.typ)}
		if e.major >= 0 {
			block = append(block, insn(opJneImm, rMajor, 0, next, int32(uint32(e.major))))
		}
		if e.minor >= 0 {
			block = append(block, insn(opJneImm, rMinor, 0, next, int32(uint32(e.minor))))
		}
		switch {
		case allow && e.access != accAll:
			block = append(block,
				insn(opMovReg, rTmp, rAccess, 0, 0),
				insn(opAndImm, rTmp, 0, 0, e.access),
				insn(opJeqImm, rTmp, 0, next, 0))
		case !allow && e.access != accAll:
			block = append(block,
				insn(opMovReg, rTmp, rAccess, 0, 0),
				insn(opAndImm, rTmp, 0, 0, accAll&^e.access),
				insn(opJneImm, rTmp, 0, next, 0))
		}
		block = append(block, insn(opMovImm, rRet, 0, 0, 1-def), insn(opExit, 0, 0, 0, 0))
		for i := range block {
			if block[i].off == next {
				block[i].off = int16(len(block) - i - 1)
			}
		}
		prog = append(prog, block...)
	}
	return append(prog, insn(opMovImm, rRet, 0, 0, def), insn(opExit, 0, 0, 0, 0))
}

// setDeviceFilter replaces the device program of the cgroup2 directory dir
// (cgroup path cg, for error messages) with one that enforces rules
// (DeviceRule: v1 semantics, in order, later rules override earlier ones, an
// 'a' rule resets everything; default before any rule: allow everything, as
// a fresh v1 cgroup does).
//
// The program is attached without BPF_F_ALLOW_MULTI or
// BPF_F_ALLOW_OVERRIDE: it replaces the one attached before, and cgroups
// below dir cannot attach programs of their own.
func setDeviceFilter(cg, dir string, rules []DeviceRule) error {
	for _, r := range rules {
		if err := r.Check(); err != nil {
			return fmt.Errorf("cgroup %s: device filter: %w", cg, err)
		}
	}
	prog, err := loadDeviceProgram(deviceProgram(rules))
	if err != nil {
		return fmt.Errorf("cgroup %s: device filter: %w", cg, err)
	}
	defer unix.Close(prog) // the attachment keeps its own reference
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fsError(cg, "device filter: open", dir, err)
	}
	defer unix.Close(fd)
	attr := progAttachAttr{targetFD: uint32(fd), attachFD: uint32(prog), attachType: unix.BPF_CGROUP_DEVICE}
	if _, err := bpf(unix.BPF_PROG_ATTACH, unsafe.Pointer(&attr), unsafe.Sizeof(attr)); err != nil {
		return bpfError(cg, "attach", err, "")
	}
	return nil
}

// setDevices enforces rules on the cgroup with a device program. nil rules
// leave the cgroup's device program (or its absence) as it is, and so do
// the rules this process attached there last: loading a program (the
// verifier, the JIT) is the dearest part of a cgroup's set-up under
// software emulation, and berth-agent attaches berth's default rules to
// its workload cgroup before its guest is saved as a template.
func (m *v2) setDevices(rules []DeviceRule) error {
	if rules == nil {
		return nil
	}
	key := fmt.Sprint(rules)
	if k, ok := attachedRules.Load(m.dir); ok && k == key {
		return nil
	}
	if err := setDeviceFilter(m.path, m.dir, rules); err != nil {
		attachedRules.Delete(m.dir)
		return err
	}
	attachedRules.Store(m.dir, key)
	return nil
}

// attachedRules are the device rules this process attached to each
// cgroup directory (setDevices), until Destroy.
var attachedRules sync.Map

// progLoadAttr is the BPF_PROG_LOAD part of union bpf_attr, up to
// expected_attach_type (kernel 4.17; older kernels accept the zero tail).
type progLoadAttr struct {
	progType           uint32
	insnCnt            uint32
	insns              uint64
	license            uint64
	logLevel           uint32
	logSize            uint32
	logBuf             uint64
	kernVersion        uint32
	progFlags          uint32
	progName           [16]byte
	progIfindex        uint32
	expectedAttachType uint32
}

// progAttachAttr is the BPF_PROG_ATTACH part of union bpf_attr, up to
// replace_bpf_fd.
type progAttachAttr struct {
	targetFD, attachFD, attachType, attachFlags, replaceFD uint32
}

// bpfLicense is the program's license. Only programs calling GPL-only
// helpers must be GPL-compatible; this one calls no helper at all.
var bpfLicense = []byte("Apache-2.0\x00")

// loadDeviceProgram loads insns as a BPF_PROG_TYPE_CGROUP_DEVICE program and
// returns its fd. If the verifier rejects it, the load is repeated with the
// verifier's log, whose verdict goes into the error.
func loadDeviceProgram(insns []bpfInsn) (int, error) {
	fd, err := progLoad(insns, nil)
	if err == nil {
		return fd, nil
	}
	log := make([]byte, 64<<10)
	if fd, err := progLoad(insns, log); err == nil {
		return fd, nil // passed the second time
	}
	return -1, bpfError("", "load", err, verifierMessage(log))
}

func progLoad(insns []bpfInsn, log []byte) (int, error) {
	attr := progLoadAttr{
		progType: unix.BPF_PROG_TYPE_CGROUP_DEVICE,
		insnCnt:  uint32(len(insns)),
		insns:    uint64(uintptr(unsafe.Pointer(&insns[0]))),
		license:  uint64(uintptr(unsafe.Pointer(&bpfLicense[0]))),
	}
	copy(attr.progName[:], "berth_devices")
	if len(log) > 0 {
		attr.logLevel = 1
		attr.logSize = uint32(len(log))
		attr.logBuf = uint64(uintptr(unsafe.Pointer(&log[0])))
	}
	var fd uintptr
	var err error
	// The verifier gives up with EAGAIN when a signal (such as the Go
	// runtime's preemption signal) arrives while it works.
	for range 10 {
		fd, err = bpf(unix.BPF_PROG_LOAD, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
			break
		}
	}
	runtime.KeepAlive(insns)
	runtime.KeepAlive(log)
	if err != nil {
		return -1, err
	}
	return int(fd), nil
}

// bpf is the bpf(2) system call.
func bpf(cmd uintptr, attr unsafe.Pointer, size uintptr) (uintptr, error) {
	r, _, errno := unix.Syscall(unix.SYS_BPF, cmd, uintptr(attr), size)
	if errno != 0 {
		return 0, errno
	}
	return r, nil
}

// bpfError is the one-line error for a failed bpf(2) operation, with the
// verifier's message when there is one (then the program is at fault, and
// the error is not classed), otherwise wrapped in the errno's class. cg is
// empty when the caller adds the "cgroup CG: device filter:" prefix.
func bpfError(cg, op string, err error, verifier string) error {
	prefix := ""
	if cg != "" {
		prefix = "cgroup " + cg + ": device filter: "
	}
	if verifier != "" {
		verifier = " (verifier: " + verifier + ")"
	}
	if class := classify(err); class != nil && verifier == "" {
		return fmt.Errorf("%s%s: %w: %w", prefix, op, err, class)
	}
	return fmt.Errorf("%s%s: %w%s", prefix, op, err, verifier)
}

// verifierMessage is the verifier's verdict in its log (NUL-terminated): the
// last non-empty line that is not one of the statistics ("processed N insns
// ...", "verification time ...") the kernel appends.
func verifierMessage(log []byte) string {
	if i := bytes.IndexByte(log, 0); i >= 0 {
		log = log[:i]
	}
	lines := strings.Split(string(log), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l != "" && !strings.HasPrefix(l, "processed ") && !strings.HasPrefix(l, "verification time") {
			return l
		}
	}
	return ""
}
