package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/agent"
)

// shimArg0 is argv[0] of the exec stage.
const shimArg0 = "berth-agent-exec"

// defaultPath is the PATH used to find a command when its env has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

var rlimitTypes = map[string]int{
	"RLIMIT_CPU": unix.RLIMIT_CPU, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_DATA": unix.RLIMIT_DATA,
	"RLIMIT_STACK": unix.RLIMIT_STACK, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK,
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS, "RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE, "RLIMIT_NICE": unix.RLIMIT_NICE, "RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO,
	"RLIMIT_RTTIME": unix.RLIMIT_RTTIME,
}

// shimMain is the exec stage: a fresh child of the agent, already in the
// workload's cgroup, session and terminal, with the process's stdio on fds
// 0-2, its shimConfig on fd 3 and an error pipe on fd 4. It sets rlimits
// (as root, so hard limits may rise), the working directory, groups, gid
// and uid, finds the command and execs it. Go's SysProcAttr cannot set
// rlimits on a child, hence this stage. On failure it writes an
// agent.StartError (126 cannot invoke, 127 not found, 125 other) to fd 4
// and exits; on success fd 4 closes on exec.
func shimMain() {
	errPipe := os.NewFile(4, "error")
	syscall.CloseOnExec(4)
	fail := func(code int, format string, args ...any) {
		_ = json.NewEncoder(errPipe).Encode(agent.StartError{Code: code, Msg: fmt.Sprintf(format, args...)})
		os.Exit(code)
	}
	var c shimConfig
	cfg := os.NewFile(3, "config")
	if err := json.NewDecoder(cfg).Decode(&c); err != nil {
		fail(125, "exec stage: read config: %v", err)
	}
	cfg.Close()
	if len(c.Args) == 0 {
		fail(125, "exec stage: no command")
	}
	for _, rl := range c.Rlimits {
		res, ok := rlimitTypes[rl.Type]
		if !ok {
			fail(125, "unknown rlimit %q", rl.Type)
		}
		if err := unix.Prlimit(0, res, &unix.Rlimit{Cur: rl.Soft, Max: rl.Hard}, nil); err != nil {
			fail(125, "set %s: %v", rl.Type, err)
		}
	}
	if _, err := os.Stat(c.Cwd); errors.Is(err, os.ErrNotExist) {
		_ = os.MkdirAll(c.Cwd, 0o755) // as runc does for a missing working directory
	}
	if err := syscall.Setgroups(toInts(c.Groups)); err != nil {
		fail(125, "setgroups: %v", err)
	}
	if err := syscall.Setresgid(int(c.GID), int(c.GID), int(c.GID)); err != nil {
		fail(125, "setgid %d: %v", c.GID, err)
	}
	if err := syscall.Setresuid(int(c.UID), int(c.UID), int(c.UID)); err != nil {
		fail(125, "setuid %d: %v", c.UID, err)
	}
	if err := unix.Chdir(c.Cwd); err != nil {
		fail(125, "chdir to working directory %s: %v", c.Cwd, err)
	}
	path, code, err := lookPath(c.Args[0], c.Env)
	if err != nil {
		fail(code, "%v", err)
	}
	err = syscall.Exec(path, c.Args, c.Env)
	if errors.Is(err, syscall.ENOENT) {
		fail(127, "exec %q: %v", c.Args[0], err)
	}
	fail(126, "exec %q: %v", c.Args[0], err)
}

func toInts(u []uint32) []int {
	out := make([]int, len(u))
	for i, v := range u {
		out[i] = int(v)
	}
	return out
}

// lookPath finds cmd in env's PATH as execvp does; a name with a slash is
// used as it is. It returns the exit code that a failure maps to: 127 for
// not found, 126 for found but not executable.
func lookPath(cmd string, env []string) (string, int, error) {
	if strings.Contains(cmd, "/") {
		return cmd, 0, nil
	}
	pathEnv := defaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathEnv = v
		}
	}
	denied := ""
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, cmd)
		st, err := os.Stat(p)
		if err != nil || st.IsDir() {
			continue
		}
		if err := unix.Access(p, unix.X_OK); err != nil {
			if denied == "" {
				denied = p
			}
			continue
		}
		return p, 0, nil
	}
	if denied != "" {
		return "", 126, fmt.Errorf("exec %q: %s: permission denied", cmd, denied)
	}
	return "", 127, fmt.Errorf("exec %q: executable file not found in $PATH", cmd)
}
