package container

import (
	"encoding/json"
	"os"
	"runtime"
)

// Hidden verbs of the berth binary that run a container stage.
const (
	verbInit = "__init" // the container's init, PID 1 until it execs or forks the workload (see init_linux.go)
	verbExec = "__exec" // a process joining a running container (see execstage_linux.go)
)

// stageProtocol names the version of the parent/stage protocol. A stage
// started by a parent of another version (a berth-init left from another
// build) exits with exitStageMismatch before reading anything. Change it
// whenever a message or the stage's arguments change.
const stageProtocol = "berth-stage-4"

// StageProtocol is the stage protocol's version, for `berth version`.
const StageProtocol = stageProtocol

// exitStageMismatch is a stage's exit status when its parent speaks
// another version of the protocol.
const exitStageMismatch = 3

// A stage's setup runs on the process's first thread (the thread group
// leader): its name is the process's comm (what /proc/1/comm and ps
// show), and its namespaces and credentials are the ones the workload
// forked from it inherits. Go runs init functions on that thread with
// the main goroutine locked to it; locking once more here keeps it there
// through main, where the goroutine could otherwise move to another
// thread before the stage locks it.
func init() {
	if len(os.Args) > 1 && (os.Args[1] == verbInit || os.Args[1] == verbExec) {
		runtime.LockOSThread()
	}
}

// RunStage runs a container stage when args (os.Args) name one: the
// caller's main must call it first, before anything else. A stage never
// returns: it exits the process. Otherwise RunStage returns false at once.
func RunStage(args []string) bool {
	if len(args) < 2 || (args[1] != verbInit && args[1] != verbExec) {
		return false
	}
	if len(args) < 3 || args[2] != stageProtocol {
		exitMismatch(args)
	}
	switch args[1] {
	case verbInit:
		runInitStage()
	case verbExec:
		runExecStage()
	}
	panic("unreachable: a stage returned")
}

// exitMismatch tells the parent, on the sync socket (fd 3), in the
// "error" message every version understands, that this stage binary is
// from another build, and exits.
func exitMismatch(args []string) {
	want := "none"
	if len(args) > 2 {
		want = args[2]
	}
	b, _ := json.Marshal(map[string]string{
		"type":  "error",
		"err":   "the container stage binary (" + args[0] + ") speaks " + stageProtocol + ", berth " + want + ": reinstall berth",
		"class": "unavailable",
	})
	os.NewFile(3, "sync").Write(append(b, '\n'))
	os.Exit(exitStageMismatch)
}
