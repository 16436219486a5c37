package instance

import (
	"os"
	"syscall"
)

// Relayed are the signals a front end that waits on its instance (`berth
// run`, `berth-runtime run`) passes on to it: those a user or a
// supervisor sends to end or poke a process. Job control and SIGWINCH stay
// the front end's own business (its terminal sends them to it).
var Relayed = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}
