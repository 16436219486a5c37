package seccomp

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
)

// maxInsns is the kernel's limit on the length of a classic BPF program
// (BPF_MAXINSNS).
const maxInsns = 4096

// maxShortJump is the farthest a conditional jump can reach: its true and
// false offsets are 8-bit.
const maxShortJump = 255

// label names a position in a program under construction. Every jump in
// the assembler targets a label, so code can be emitted before the
// distances are known.
type label int

// insn is one instruction, or (when mark is set) the position of label id.
type insn struct {
	code   uint16
	k      uint32
	jt, jf label // conditional jumps
	target label // BPF_JA
	mark   bool
	id     label
}

func (in insn) isCond() bool {
	return in.code&0x07 == unix.BPF_JMP && in.code&0xf0 != unix.BPF_JA
}

func (in insn) isJA() bool {
	return in.code == unix.BPF_JMP|unix.BPF_JA
}

// assembler collects instructions with symbolic jump targets and lays them
// out so that every conditional jump is short (see assemble).
type assembler struct {
	code   []insn
	labels int
}

// newLabel returns a label that is not yet placed.
func (a *assembler) newLabel() label {
	a.labels++
	return label(a.labels)
}

// place puts l at the current end of the program.
func (a *assembler) place(l label) {
	a.code = append(a.code, insn{mark: true, id: l})
}

// load emits A = 32-bit word of seccomp_data at off.
func (a *assembler) load(off uint32) {
	a.code = append(a.code, insn{code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, k: off})
}

// and emits A &= k.
func (a *assembler) and(k uint32) {
	a.code = append(a.code, insn{code: unix.BPF_ALU | unix.BPF_AND | unix.BPF_K, k: k})
}

// jump emits a conditional jump: op is BPF_JEQ, BPF_JGT, BPF_JGE or
// BPF_JSET, compared with k; it goes to jt when the test holds, else to jf.
func (a *assembler) jump(op uint16, k uint32, jt, jf label) {
	if jt == jf {
		a.ja(jt)
		return
	}
	a.code = append(a.code, insn{code: unix.BPF_JMP | op | unix.BPF_K, k: k, jt: jt, jf: jf})
}

// ja emits an unconditional jump to l.
func (a *assembler) ja(l label) {
	a.code = append(a.code, insn{code: unix.BPF_JMP | unix.BPF_JA, target: l})
}

// ret emits a return of the seccomp action k.
func (a *assembler) ret(k uint32) {
	a.code = append(a.code, insn{code: unix.BPF_RET | unix.BPF_K, k: k})
}

// positions gives, by label, the index of the instruction that follows
// where the label was placed, or -1 where it was not.
func (a *assembler) positions() []int {
	pos := make([]int, a.labels+1)
	for i := range pos {
		pos[i] = -1
	}
	n := 0
	for _, in := range a.code {
		if in.mark {
			pos[in.id] = n
		} else {
			n++
		}
	}
	return pos
}

// assemble resolves labels into offsets. A conditional jump whose target
// lies more than 255 instructions ahead is rewritten as a short jump onto
// an adjacent unconditional jump (BPF_JA has a 32-bit offset):
//
//	jeq K, far, near   becomes   jeq K, +0, +1 ; ja far ; ja near
//
// Rewriting moves later code, so it repeats until no jump is too long.
// Every jump goes forward, as the kernel requires.
func (a *assembler) assemble() ([]unix.SockFilter, error) {
	for {
		pos := a.positions()
		out := make([]insn, 0, len(a.code)+len(a.code)/8)
		changed := false
		n := 0
		for _, in := range a.code {
			if in.mark {
				out = append(out, in)
				continue
			}
			if in.isCond() && (pos[in.jt]-n-1 > maxShortJump || pos[in.jf]-n-1 > maxShortJump) {
				lt, lf := a.newLabel(), a.newLabel()
				cond := in
				cond.jt, cond.jf = lt, lf
				out = append(out, cond,
					insn{mark: true, id: lt}, insn{code: unix.BPF_JMP | unix.BPF_JA, target: in.jt},
					insn{mark: true, id: lf}, insn{code: unix.BPF_JMP | unix.BPF_JA, target: in.jf})
				changed = true
			} else {
				out = append(out, in)
			}
			n++
		}
		a.code = out
		if !changed {
			break
		}
	}

	pos := a.positions()
	prog := make([]unix.SockFilter, 0, len(a.code))
	for _, in := range a.code {
		if in.mark {
			continue
		}
		n := len(prog)
		f := unix.SockFilter{Code: in.code, K: in.k}
		switch {
		case in.isJA():
			off, err := forward(pos, in.target, n)
			if err != nil {
				return nil, err
			}
			f.K = uint32(off)
		case in.isCond():
			jt, err := forward(pos, in.jt, n)
			if err != nil {
				return nil, err
			}
			jf, err := forward(pos, in.jf, n)
			if err != nil {
				return nil, err
			}
			f.Jt, f.Jf = uint8(jt), uint8(jf)
		}
		prog = append(prog, f)
	}
	if len(prog) > maxInsns {
		return nil, fmt.Errorf("seccomp: profile compiles to %d BPF instructions, more than the kernel's limit of %d: %w",
			len(prog), maxInsns, errdefs.ErrInvalid)
	}
	return prog, nil
}

// forward returns the offset from the instruction at n to label l, which
// must be placed after it. A failure here is a bug in the compiler.
func forward(pos []int, l label, n int) (int, error) {
	p := -1
	if int(l) < len(pos) {
		p = pos[l]
	}
	if p < 0 || p <= n {
		return 0, fmt.Errorf("seccomp: internal error: jump from instruction %d to unplaced or earlier label %d", n, l)
	}
	return p - n - 1, nil
}
