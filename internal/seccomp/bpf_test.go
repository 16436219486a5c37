//go:build linux

package seccomp

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

// seccompData is struct seccomp_data, which the kernel hands a filter.
type seccompData struct {
	nr   uint32
	arch uint32
	ip   uint64
	args [6]uint64
}

// call64 is an x86-64 system call nr with the given arguments.
func call64(nr int, args ...uint64) seccompData {
	d := seccompData{nr: uint32(nr), arch: unix.AUDIT_ARCH_X86_64}
	copy(d.args[:], args)
	return d
}

// call32 is an i386 system call nr with the given arguments.
func call32(nr int, args ...uint64) seccompData {
	d := seccompData{nr: uint32(nr), arch: unix.AUDIT_ARCH_I386}
	copy(d.args[:], args)
	return d
}

// bytes lays d out as the kernel does on a little-endian machine.
func (d seccompData) bytes() []byte {
	b := make([]byte, 64)
	binary.LittleEndian.PutUint32(b[0:], d.nr)
	binary.LittleEndian.PutUint32(b[4:], d.arch)
	binary.LittleEndian.PutUint64(b[8:], d.ip)
	for i, a := range d.args {
		binary.LittleEndian.PutUint64(b[16+8*i:], a)
	}
	return b
}

// verify applies the kernel's static checks on a seccomp program
// (bpf_check_classic and seccomp_check_filter) for the instructions the
// compiler emits: length, known opcodes, aligned in-bounds loads, forward
// jumps that land inside the program, and a final return.
func verify(t *testing.T, prog []unix.SockFilter) {
	t.Helper()
	if len(prog) == 0 || len(prog) > maxInsns {
		t.Fatalf("program has %d instructions", len(prog))
	}
	for pc, in := range prog {
		switch in.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			if in.K%4 != 0 || in.K >= 64 {
				t.Fatalf("insn %d: load at offset %d", pc, in.K)
			}
		case unix.BPF_ALU | unix.BPF_AND | unix.BPF_K, unix.BPF_RET | unix.BPF_K:
		case unix.BPF_JMP | unix.BPF_JA:
			if pc+1+int(in.K) >= len(prog) {
				t.Fatalf("insn %d: ja +%d leaves the program", pc, in.K)
			}
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K,
			unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K, unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K:
			if pc+1+int(in.Jt) >= len(prog) || pc+1+int(in.Jf) >= len(prog) {
				t.Fatalf("insn %d: jump +%d/+%d leaves the program", pc, in.Jt, in.Jf)
			}
		default:
			t.Fatalf("insn %d: opcode %#x is not in the subset", pc, in.Code)
		}
	}
	if last := prog[len(prog)-1]; last.Code != unix.BPF_RET|unix.BPF_K {
		t.Fatalf("program ends with opcode %#x, not a return", last.Code)
	}
}

// run interprets prog on d, as the kernel would, and returns the action.
func run(t *testing.T, prog []unix.SockFilter, d seccompData) uint32 {
	t.Helper()
	data := d.bytes()
	var a uint32
	pc := 0
	for steps := 0; steps <= len(prog); steps++ {
		if pc >= len(prog) {
			t.Fatalf("ran off the end of the program")
		}
		in := prog[pc]
		pc++
		switch in.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			a = binary.LittleEndian.Uint32(data[in.K:])
		case unix.BPF_ALU | unix.BPF_AND | unix.BPF_K:
			a &= in.K
		case unix.BPF_JMP | unix.BPF_JA:
			pc += int(in.K)
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K:
			pc += branch(a == in.K, in)
		case unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K:
			pc += branch(a > in.K, in)
		case unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K:
			pc += branch(a >= in.K, in)
		case unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K:
			pc += branch(a&in.K != 0, in)
		case unix.BPF_RET | unix.BPF_K:
			return in.K
		default:
			t.Fatalf("insn %d: opcode %#x is not in the subset", pc-1, in.Code)
		}
	}
	t.Fatalf("program did not return within %d steps", len(prog)+1)
	return 0
}

func branch(cond bool, in unix.SockFilter) int {
	if cond {
		return int(in.Jt)
	}
	return int(in.Jf)
}
