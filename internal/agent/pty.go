package agent

import (
	"errors"
	"io"
	"os"
	"syscall"
)

// PtyStdio returns a Task's stdin and stdout for a process whose terminal
// has master as its master side: reads turn the EIO a master gives once
// every slave is closed into EOF, and closing stdin leaves the master open
// (the host closing its stdin must not cut the process's output).
// Closing the returned stdout closes master.
func PtyStdio(master *os.File) (stdin io.WriteCloser, stdout io.ReadCloser) {
	return ptyIn{master}, ptyOut{master}
}

type ptyIn struct{ f *os.File }

func (p ptyIn) Write(b []byte) (int, error) { return p.f.Write(b) }
func (p ptyIn) Close() error                { return nil }

type ptyOut struct{ f *os.File }

func (p ptyOut) Read(b []byte) (int, error) {
	n, err := p.f.Read(b)
	if err != nil && errors.Is(err, syscall.EIO) {
		err = io.EOF
	}
	return n, err
}

func (p ptyOut) Close() error { return p.f.Close() }
