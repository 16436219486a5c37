package cgroups

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
)

// Bounds on the polling loops of Freeze and Destroy. They bound how long berth
// waits for the kernel, they are not timings the tests rely on.
const (
	settleTimeout = 5 * time.Second
	pollInterval  = 10 * time.Millisecond
)

// classify maps a system call error to one of errdefs' classes.
func classify(err error) error {
	switch {
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ERANGE):
		return errdefs.ErrInvalid
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ESRCH):
		return errdefs.ErrNotFound
	case errors.Is(err, unix.EBUSY):
		return errdefs.ErrConflict
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES), errors.Is(err, unix.EROFS):
		return errdefs.ErrUnavailable
	}
	return nil
}

// fsError is the one-line error for a failed operation on file name of the
// cgroup cg, wrapped in the class its errno belongs to.
func fsError(cg, op, name string, err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	if class := classify(err); class != nil {
		return fmt.Errorf("cgroup %s: %s %s: %w: %w", cg, op, name, err, class)
	}
	return fmt.Errorf("cgroup %s: %s %s: %w", cg, op, name, err)
}

// mkdirOnce makes dir, adding it to made; one that exists is fine (and
// not added).
func mkdirOnce(cg, dir string, made []string) ([]string, error) {
	err := unix.Mkdir(dir, 0o755)
	switch {
	case err == nil:
		return append(made, dir), nil
	case errors.Is(err, unix.EEXIST):
		return made, nil
	}
	return made, fsError(cg, "create", dir, err)
}

// writeFile writes val to an existing cgroup interface file in one write
// system call, as the kernel expects. It never creates the file.
func writeFile(cg, dir, name, val string) error {
	return writeLines(cg, dir, name, []string{val})
}

// writeLines writes each of vals to an existing cgroup interface file in
// a write system call of its own, through one open. It never creates the
// file.
func writeLines(cg, dir, name string, vals []string) error {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fsError(cg, "write", name, err)
	}
	defer f.Close()
	for _, val := range vals {
		if _, err := f.WriteString(val); err != nil {
			return fsError(cg, fmt.Sprintf("write %q to", val), name, err)
		}
	}
	if err := f.Close(); err != nil {
		return fsError(cg, "write", name, err)
	}
	return nil
}

// readString reads a cgroup interface file without its trailing newline.
func readString(cg, dir, name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return "", fsError(cg, "read", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// readInt reads a file holding one integer; "max" reads as -1.
func readInt(cg, dir, name string) (int64, error) {
	s, err := readString(cg, dir, name)
	if err != nil {
		return 0, err
	}
	if s == "max" {
		return -1, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cgroup %s: %s holds %q, not a number: %w", cg, name, s, errdefs.ErrInvalid)
	}
	return n, nil
}

// readFileInt reads an open interface file holding one integer, from its
// start; "max" reads as -1.
func readFileInt(f *os.File) (int64, error) {
	var buf [32]byte
	n, err := f.ReadAt(buf[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	s := strings.TrimSpace(string(buf[:n]))
	if s == "max" {
		return -1, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s holds %q, not a number: %w", f.Name(), s, errdefs.ErrInvalid)
	}
	return v, nil
}

// openPidsFiles opens pids.current and pids.max in dir.
func openPidsFiles(cg, dir string) (*PidsFiles, error) {
	cur, err := os.Open(filepath.Join(dir, "pids.current"))
	if err != nil {
		return nil, fsError(cg, "open", "pids.current", err)
	}
	lim, err := os.Open(filepath.Join(dir, "pids.max"))
	if err != nil {
		cur.Close()
		return nil, fsError(cg, "open", "pids.max", err)
	}
	return &PidsFiles{Current: cur, Max: lim}, nil
}

// pidsValue is pids.max's spelling of limit n (0 or less: none).
func pidsValue(n int64) string {
	if n > 0 {
		return strconv.FormatInt(n, 10)
	}
	return "max"
}

// readKey reads the value of key in a flat keyed file ("key value" lines,
// such as memory.events or cpu.stat). found is false when the key is absent.
func readKey(cg, dir, name, key string) (v uint64, found bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return 0, false, fsError(cg, "read", name, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || k != key {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(val), 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("cgroup %s: %s: %s holds %q, not a number: %w", cg, name, key, val, errdefs.ErrInvalid)
		}
		return n, true, nil
	}
	return 0, false, nil
}

// readProcs lists the pids in dir's cgroup.procs.
func readProcs(cg, dir string) ([]int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, fsError(cg, "read", "cgroup.procs", err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("cgroup %s: cgroup.procs holds %q, not a pid: %w", cg, f, errdefs.ErrInvalid)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// subdirs lists dir and every cgroup below it, deepest first, so that the
// result is the order in which they can be removed. A missing dir gives nil.
func subdirs(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		sub, err := subdirs(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, sub...)
	}
	return append(out, dir), nil
}

// treeProcs lists the pids in dir's cgroup and every cgroup below it.
func treeProcs(cg, dir string) ([]int, error) {
	dirs, err := subdirs(dir)
	if err != nil {
		return nil, fsError(cg, "list", dir, err)
	}
	var all []int
	for _, d := range dirs {
		pids, err := readProcs(cg, d)
		if errors.Is(err, errdefs.ErrNotFound) {
			continue // removed under us
		}
		if err != nil {
			return nil, err
		}
		all = append(all, pids...)
	}
	return all, nil
}

// killAll sends SIGKILL to every pid, ignoring those already gone.
func killAll(cg string, pids []int) error {
	for _, pid := range pids {
		if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("cgroup %s: kill pid %d: %w", cg, pid, err)
		}
	}
	return nil
}

// removeTree removes dir and every cgroup below it, bottom-up. cgroupfs
// directories are removed with rmdir alone (their interface files go with
// them). A cgroup the kernel still counts as busy for a moment after its last
// task exited is retried until settleTimeout.
func removeTree(cg, dir string) error {
	// A leaf with no task left, the usual case, goes at once.
	if err := unix.Rmdir(dir); err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	deadline := time.Now().Add(settleTimeout)
	for {
		dirs, err := subdirs(dir)
		if err != nil {
			return fsError(cg, "list", dir, err)
		}
		var busy error
		for _, d := range dirs {
			err := unix.Rmdir(d)
			if err == nil || errors.Is(err, unix.ENOENT) {
				continue
			}
			if errors.Is(err, unix.EBUSY) {
				busy = err
				break
			}
			return fsError(cg, "remove", d, err)
		}
		if busy == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fsError(cg, "remove", dir, busy)
		}
		time.Sleep(pollInterval)
	}
}

// exists reports whether dir exists.
func exists(dir string) bool {
	_, err := os.Stat(dir)
	return err == nil
}
