// Package sigfilter keeps a Go process that is PID 1 of a pid namespace
// alive whatever signals the processes of that namespace send it.
//
// The kernel makes a PID 1 without a handler immune to its namespace's
// signals, but a Go process handles every signal: by default by exiting
// (SIGTERM, SIGHUP, ...) or crashing with a traceback (SIGQUIT, SIGABRT,
// and SIGSEGV, SIGBUS, SIGFPE, SIGILL when sent by kill). signal.Notify
// turns most of that off, but not all of it: the runtime takes a SIGSEGV
// whose siginfo says it came from sigqueue(3) for a real fault, and the
// signals it does not handle (32 and 34) keep their default action, which
// the kernel lets through to a PID 1 in some cases (a signal the main
// thread is blocking when it arrives). And Notify cannot tell a signal
// the host sends (berth stop, kill) from one the workload sends, which a
// container's init relays to the workload.
//
// Install puts a filter in front of the runtime's handler of every
// signal: a signal passes when the kernel raised it (a fault, a timer, a
// child's end) or when kill(2) or tkill(2) sent it from outside the
// namespace (the kernel then gives no sender pid) or from the process
// itself (the runtime's preemption, SIGPIPE); everything else, whatever
// its siginfo claims, is dropped before the runtime sees it.
package sigfilter
