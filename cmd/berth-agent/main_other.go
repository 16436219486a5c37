//go:build !linux

// Command berth-agent is the PID 1 of a berth guest VM; it runs on Linux only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "berth-agent: runs only as PID 1 of a Linux guest")
	os.Exit(2)
}
