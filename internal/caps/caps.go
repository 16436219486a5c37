// Package caps names Linux capabilities and applies an OCI capability set
// (bounding, effective, permitted, inheritable, ambient) to the calling thread.
//
// Names are the kernel's, with the "CAP_" prefix ("CAP_NET_RAW"); Parse also
// takes them without the prefix and in any case. Apply skips capabilities the
// running kernel does not know (numbers above Last), so one spec serves old
// and new kernels alike.
package caps

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/errdefs"
)

// names are the capabilities by number, as in linux/capability.h.
var names = [...]string{
	"CAP_CHOWN",              // 0
	"CAP_DAC_OVERRIDE",       // 1
	"CAP_DAC_READ_SEARCH",    // 2
	"CAP_FOWNER",             // 3
	"CAP_FSETID",             // 4
	"CAP_KILL",               // 5
	"CAP_SETGID",             // 6
	"CAP_SETUID",             // 7
	"CAP_SETPCAP",            // 8
	"CAP_LINUX_IMMUTABLE",    // 9
	"CAP_NET_BIND_SERVICE",   // 10
	"CAP_NET_BROADCAST",      // 11
	"CAP_NET_ADMIN",          // 12
	"CAP_NET_RAW",            // 13
	"CAP_IPC_LOCK",           // 14
	"CAP_IPC_OWNER",          // 15
	"CAP_SYS_MODULE",         // 16
	"CAP_SYS_RAWIO",          // 17
	"CAP_SYS_CHROOT",         // 18
	"CAP_SYS_PTRACE",         // 19
	"CAP_SYS_PACCT",          // 20
	"CAP_SYS_ADMIN",          // 21
	"CAP_SYS_BOOT",           // 22
	"CAP_SYS_NICE",           // 23
	"CAP_SYS_RESOURCE",       // 24
	"CAP_SYS_TIME",           // 25
	"CAP_SYS_TTY_CONFIG",     // 26
	"CAP_MKNOD",              // 27
	"CAP_LEASE",              // 28
	"CAP_AUDIT_WRITE",        // 29
	"CAP_AUDIT_CONTROL",      // 30
	"CAP_SETFCAP",            // 31
	"CAP_MAC_OVERRIDE",       // 32
	"CAP_MAC_ADMIN",          // 33
	"CAP_SYSLOG",             // 34
	"CAP_WAKE_ALARM",         // 35
	"CAP_BLOCK_SUSPEND",      // 36
	"CAP_AUDIT_READ",         // 37
	"CAP_PERFMON",            // 38
	"CAP_BPF",                // 39
	"CAP_CHECKPOINT_RESTORE", // 40
}

// MaxKnown is the highest capability number this package has a name for.
const MaxKnown = len(names) - 1

// byName maps a name without prefix, in upper case, to its number.
var byName = func() map[string]int {
	m := make(map[string]int, len(names))
	for i, n := range names {
		m[strings.TrimPrefix(n, "CAP_")] = i
	}
	return m
}()

// Default returns Docker's default capability set for containers, as names.
// The caller owns the returned slice.
func Default() []string {
	return []string{
		"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER",
		"CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID",
		"CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
		"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
	}
}

// Parse returns the number of the capability called name: "CAP_NET_RAW",
// "NET_RAW" and "net_raw" are the same. An unknown name is ErrInvalid.
func Parse(name string) (int, error) {
	key := strings.ToUpper(name)
	key = strings.TrimPrefix(key, "CAP_")
	if n, ok := byName[key]; ok {
		return n, nil
	}
	return -1, fmt.Errorf("capability %q: unknown: %w", name, errdefs.ErrInvalid)
}

// Name returns the name of capability n ("CAP_CHOWN" for 0). A number this
// package has no name for comes back as "CAP_" and the number, e.g. "CAP_41".
func Name(n int) string {
	if n >= 0 && n < len(names) {
		return names[n]
	}
	return "CAP_" + strconv.Itoa(n)
}
