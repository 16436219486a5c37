// Command berth-init is the stage binary of berth's container engine: the
// container's PID 1 and the process that joins a running container for
// exec. berth and berth-runtime start it; it is never run by hand. It
// holds the stages alone, so it starts in about half the time of berth's
// whole binary (see internal/container/binary_linux.go).
package main

import (
	"os"

	"github.com/berth-dev/berth/internal/container"
)

func main() {
	container.RunStage(os.Args)
	os.Stderr.WriteString("berth-init: a stage of berth's container engine, started by berth and berth-runtime\n")
	os.Exit(2)
}
