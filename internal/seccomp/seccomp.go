// Package seccomp compiles OCI seccomp profiles (runtime-spec LinuxSeccomp)
// into classic BPF and loads them, without libseccomp or cgo.
package seccomp
