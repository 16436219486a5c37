package main

import (
	"io"
	"os"
)

// copyTerminal relays a terminal's master to this process's stdio (for
// run and exec in the foreground without --console-socket). The returned
// function waits for the output to drain, then closes the master.
func copyTerminal(master *os.File) func() {
	done := make(chan struct{})
	go func() {
		io.Copy(os.Stdout, master) // ends with EIO once every slave is closed
		close(done)
	}()
	go io.Copy(master, os.Stdin)
	return func() {
		<-done
		master.Close()
	}
}
