//go:build linux

#include "textflag.h"

// func filter()
//
// Not called from Go: the kernel enters it as an SA_SIGINFO handler, on
// the thread's signal stack, with the signal number in DI, the siginfo in
// SI and the ucontext in DX. A signal that passes goes on to the handler
// that was there before (next), with every register and the stack as the
// kernel left them; a dropped one returns to the restorer (rt_sigreturn).
TEXT ·filter(SB),NOSPLIT|NOFRAME,$0-0
	MOVL	8(SI), AX	// si_code
	CMPL	AX, $0
	JGT	pass		// raised by the kernel
	JEQ	sender		// SI_USER: kill(2)
	CMPL	AX, $-6		// SI_TKILL: tkill(2), tgkill(2)
	JNE	drop		// sigqueue(3) and the like: the sender wrote the siginfo
sender:
	MOVL	16(SI), AX	// si_pid, the sender as this process's namespace sees it
	CMPL	AX, $0
	JEQ	pass		// not in the namespace: an ancestor's (the host)
	CMPL	AX, ·self(SB)
	JEQ	pass		// this process itself
drop:
	RET
pass:
	MOVL	DI, AX
	CMPQ	AX, $65
	JAE	drop
	LEAQ	·next(SB), R11
	MOVQ	(R11)(AX*8), R11
	TESTQ	R11, R11
	JEQ	drop
	JMP	R11

// func filterPC() uintptr
TEXT ·filterPC(SB),NOSPLIT,$0-8
	MOVQ	$·filter(SB), AX
	MOVQ	AX, ret+0(FP)
	RET
