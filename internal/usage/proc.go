package usage

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of /proc's process times (USER_HZ, 100 on every
// architecture Linux exposes to user space).
const clockTick = 10 * time.Millisecond

// Process is one process of an instance, as `berth top` lists it.
type Process struct {
	PID  int    `json:"pid"`
	PPID int    `json:"ppid"`
	UID  uint32 `json:"uid"` // effective
	// C is the CPU it used over its life, in percent of its lifetime.
	C int `json:"c"`
	// Start is when it started (Unix seconds); TTY its terminal ("?"
	// for none); CPUNanos its CPU time.
	Start    int64  `json:"start"`
	TTY      string `json:"tty"`
	CPUNanos uint64 `json:"cpuNanos"`
	// Cmd is its command line, or its name in brackets when it has none.
	Cmd string `json:"cmd"`
}

// Processes reads the processes pids from the proc file system mounted
// at proc, sorted by pid. A process that ended meanwhile is left out.
func Processes(proc string, pids []int) ([]Process, error) {
	boot, err := bootTime(proc)
	if err != nil {
		return nil, err
	}
	up, err := uptime(proc)
	if err != nil {
		return nil, err
	}
	seen := map[int]bool{}
	var out []Process
	for _, pid := range pids {
		if seen[pid] {
			continue
		}
		seen[pid] = true
		p, err := readProcess(proc, pid, boot, up)
		if err != nil {
			if os.IsNotExist(err) || os.IsPermission(err) {
				continue
			}
			return nil, err
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out, nil
}

func readProcess(proc string, pid int, boot time.Time, up time.Duration) (Process, error) {
	dir := filepath.Join(proc, strconv.Itoa(pid))
	name, f, err := StatFields(dir)
	if err != nil {
		return Process{}, err
	}
	if len(f) < 20 {
		return Process{}, fmt.Errorf("%s/stat: %d fields, want 22 or more", dir, len(f)+2)
	}
	p := Process{PID: pid, TTY: ttyName(atoi(f[4]))}
	p.PPID = int(atoi(f[1]))
	ticks := uint64(atoi(f[11]) + atoi(f[12]))
	p.CPUNanos = ticks * uint64(clockTick)
	started := time.Duration(atoi(f[19])) * clockTick
	p.Start = boot.Add(started).Unix()
	if life := up - started; life > 0 {
		p.C = int(time.Duration(p.CPUNanos) * 100 / life)
	}
	status, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return Process{}, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			if ids := strings.Fields(v); len(ids) >= 2 {
				p.UID = uint32(atoi(ids[1]))
			}
		}
	}
	cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if err != nil {
		return Process{}, err
	}
	p.Cmd = strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
	if p.Cmd == "" {
		p.Cmd = "[" + name + "]"
	}
	return p, nil
}

// statFields reads DIR/stat: the command name (field 2) and the fields
// after it, the state (field 3) first. The name may hold spaces and
// parentheses; the fields after it start past the last ')'.
func StatFields(dir string) (name string, fields []string, err error) {
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return "", nil, err
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return "", nil, fmt.Errorf("%s/stat: no command name in %q", dir, s)
	}
	return s[open+1 : end], strings.Fields(s[end+1:]), nil
}

// ttyName names a tty_nr of /proc/PID/stat as ps does.
func ttyName(nr int64) string {
	major := (nr >> 8) & 0xfff
	minor := (nr & 0xff) | ((nr >> 12) & 0xfff00)
	switch {
	case nr == 0:
		return "?"
	case major >= 136 && major <= 143:
		return "pts/" + strconv.FormatInt(minor+(major-136)*256, 10)
	case major == 4 && minor < 64:
		return "tty" + strconv.FormatInt(minor, 10)
	case major == 4:
		return "ttyS" + strconv.FormatInt(minor-64, 10)
	case major == 5 && minor == 1:
		return "console"
	}
	return "?"
}

func atoi(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// bootTime is /proc/stat's btime.
func bootTime(proc string) (time.Time, error) {
	b, err := os.ReadFile(filepath.Join(proc, "stat"))
	if err != nil {
		return time.Time{}, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			return time.Unix(atoi(strings.TrimSpace(v)), 0), nil
		}
	}
	return time.Time{}, fmt.Errorf("%s/stat: no btime line", proc)
}

// uptime is /proc/uptime's first figure.
func uptime(proc string) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(proc, "uptime"))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("%s/uptime: empty", proc)
	}
	sec, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("%s/uptime: %q is not a number", proc, f[0])
	}
	return time.Duration(sec * float64(time.Second)), nil
}

// NetDev sums the bytes received and sent on every interface but lo in a
// net/dev file (/proc/PID/net/dev shows PID's network namespace).
func NetDev(path string) (rx, tx int64, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		iface, rest, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(iface) == "lo" {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 16 {
			continue // the header lines
		}
		rx += atoi(f[0])
		tx += atoi(f[8])
	}
	return rx, tx, nil
}

// MemTotal is the machine's memory in bytes, from meminfo under proc.
func MemTotal(proc string) (int64, error) {
	v, err := KBField(filepath.Join(proc, "meminfo"), "MemTotal:")
	return v * 1024, err
}

// HostOf reads the CPU time (stat) and resident memory (smaps_rollup) of
// process pid under proc.
func HostOf(proc string, pid int) (*Host, error) {
	dir := filepath.Join(proc, strconv.Itoa(pid))
	_, f, err := StatFields(dir)
	if err != nil {
		return nil, fmt.Errorf("process %d: %w", pid, err)
	}
	if len(f) < 13 {
		return nil, fmt.Errorf("%s/stat: %d fields, want 15 or more", dir, len(f)+2)
	}
	h := &Host{PID: pid, CPUNanos: uint64(atoi(f[11])+atoi(f[12])) * uint64(clockTick)}
	rss, err := KBField(filepath.Join(dir, "smaps_rollup"), "Rss:")
	if err != nil {
		return nil, fmt.Errorf("process %d: %w", pid, err)
	}
	h.RSS = rss * 1024
	return h, nil
}

// kbField reads the kB figure of the line starting with key in a
// "Key:   N kB" file.
func KBField(path, key string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			if f := strings.Fields(v); len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("%s: no %s line", path, key)
}
