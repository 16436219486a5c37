package container

// Hidden verbs of the berth binary that run a container stage.
const (
	verbInit = "__init" // the container's PID 1 (see init_linux.go)
	verbExec = "__exec" // a process joining a running container (see execstage_linux.go)
)

// RunStage runs a container stage when args (os.Args) name one: the
// caller's main must call it first, before anything else. A stage never
// returns: it exits the process. Otherwise RunStage returns false at once.
func RunStage(args []string) bool {
	if len(args) < 2 {
		return false
	}
	switch args[1] {
	case verbInit:
		runInitStage()
	case verbExec:
		runExecStage()
	default:
		return false
	}
	panic("unreachable: a stage returned")
}
