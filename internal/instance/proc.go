package instance

import (
	"strconv"

	"github.com/berth-dev/berth/internal/usage"
)

// ProcStart returns the start time of process pid in clock ticks since
// boot (field 22 of /proc/PID/stat), or 0 when there is no such process.
// A pid together with its start time names one process even after the pid
// is reused.
func ProcStart(pid int) uint64 {
	f := statFields(pid)
	if len(f) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}

// statFields returns the fields of /proc/PID/stat after the command name
// (field 3, the state, first), nil when there is no such process.
func statFields(pid int) []string {
	if pid <= 0 {
		return nil
	}
	_, f, err := usage.StatFields("/proc/" + strconv.Itoa(pid))
	if err != nil {
		return nil
	}
	return f
}

// Alive reports whether the process recorded as (pid, start) still runs.
// Zombies count as gone.
func Alive(pid int, start uint64) bool {
	if pid <= 0 || start == 0 {
		return false
	}
	f := statFields(pid)
	if len(f) < 20 || f[0] == "Z" {
		return false
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v == start
}
