// Package rlimit names Linux's resource limits as the OCI runtime spec
// writes them ("RLIMIT_NOFILE"): the one table both the container's
// process setup and the VM guest's agent read.
package rlimit
