//go:build !linux || !amd64

package sigfilter

// Install does nothing where the filter is not written for the machine:
// the process keeps the runtime's handlers alone.
func Install() bool { return false }
