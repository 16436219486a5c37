package cgroups

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// devRequest is one device access as the kernel hands it to the program.
type devRequest struct {
	typ          byte // 'b' or 'c'
	major, minor uint32
	access       string // non-empty subset of "rwm"
}

func (q devRequest) String() string {
	return fmt.Sprintf("%c %d:%d %s", q.typ, q.major, q.minor, q.access)
}

// ctx is the request as struct bpf_cgroup_dev_ctx.
func (q devRequest) ctx() []byte {
	typ, acc := uint32(devChar), uint32(0)
	if q.typ == 'b' {
		typ = devBlock
	}
	for _, c := range q.access {
		acc |= map[rune]uint32{'m': accMknod, 'r': accRead, 'w': accWrite}[c]
	}
	b := make([]byte, 12)
	binary.NativeEndian.PutUint32(b[0:], acc<<16|typ)
	binary.NativeEndian.PutUint32(b[4:], q.major)
	binary.NativeEndian.PutUint32(b[8:], q.minor)
	return b
}

// interpret runs prog over ctx with a minimal eBPF interpreter knowing the
// instructions deviceProgram emits, and returns r0. It refuses anything else,
// backward jumps and reads of r0 before exit if unset, as the verifier would.
func interpret(prog []bpfInsn, ctx []byte) (uint64, error) {
	const ctxAddr = 0x10000 // r1: a pretend pointer to ctx
	var reg [11]uint64
	var set [11]bool
	reg[rCtx], set[rCtx] = ctxAddr, true
	for pc, steps := 0, 0; ; pc, steps = pc+1, steps+1 {
		if pc < 0 || pc >= len(prog) || steps > len(prog) {
			return 0, fmt.Errorf("pc %d out of the program (%d instructions)", pc, len(prog))
		}
		in := prog[pc]
		dst, src := in.regs&0xf, in.regs>>4
		if bigEndian {
			dst, src = in.regs>>4, in.regs&0xf
		}
		if dst > 10 || src > 10 {
			return 0, fmt.Errorf("pc %d: bad register", pc)
		}
		readSrc := func() (uint64, error) {
			if !set[src] {
				return 0, fmt.Errorf("pc %d: r%d read before set", pc, src)
			}
			return reg[src], nil
		}
		readDst := func() (uint32, error) {
			if !set[dst] {
				return 0, fmt.Errorf("pc %d: r%d read before set", pc, dst)
			}
			return uint32(reg[dst]), nil
		}
		imm := uint32(in.imm)
		var err error
		var v uint32
		switch in.code {
		case opLoadW:
			var base uint64
			if base, err = readSrc(); err != nil {
				return 0, err
			}
			addr := int64(base) + int64(in.off) - ctxAddr
			if addr < 0 || addr+4 > int64(len(ctx)) || addr%4 != 0 {
				return 0, fmt.Errorf("pc %d: load outside ctx", pc)
			}
			reg[dst], set[dst] = uint64(binary.NativeEndian.Uint32(ctx[addr:])), true
		case opMovImm:
			reg[dst], set[dst] = uint64(imm), true
		case opMovReg:
			var s uint64
			if s, err = readSrc(); err != nil {
				return 0, err
			}
			reg[dst], set[dst] = uint64(uint32(s)), true
		case opAndImm, opRshImm:
			if v, err = readDst(); err != nil {
				return 0, err
			}
			if in.code == opAndImm {
				reg[dst] = uint64(v & imm)
			} else {
				reg[dst] = uint64(v >> (imm & 31))
			}
		case opJneImm, opJeqImm:
			if v, err = readDst(); err != nil {
				return 0, err
			}
			if in.off < 0 {
				return 0, fmt.Errorf("pc %d: backward jump", pc)
			}
			if (v != imm) == (in.code == opJneImm) {
				pc += int(in.off)
			}
		case opExit:
			if !set[rRet] {
				return 0, fmt.Errorf("pc %d: exit with r0 unset", pc)
			}
			return reg[rRet], nil
		default:
			return 0, fmt.Errorf("pc %d: opcode %#x not known", pc, in.code)
		}
	}
}

// refCgroup is a straight transcription of cgroup v1's devices controller
// (security/device_cgroup.c: devcgroup_update_access, dev_exception_add,
// dev_exception_rm, match_exception, match_exception_partial), for a
// cgroup whose parent allows everything. It is the reference the programs
// are compared with.
type refCgroup struct {
	denyByDefault bool
	exceptions    []refException
}

type refException struct {
	typ          byte
	major, minor int64 // -1: any
	access       string
}

// write applies r as a line written to devices.allow (r.Allow) or devices.deny.
func (c *refCgroup) write(r DeviceRule) {
	if r.Type == 'a' {
		c.denyByDefault = !r.Allow
		c.exceptions = nil
		return
	}
	ex := refException{r.Type, r.Major, r.Minor, r.Access}
	if r.Allow == !c.denyByDefault {
		c.remove(ex)
	} else {
		c.add(ex)
	}
}

func (c *refCgroup) add(ex refException) {
	for i, e := range c.exceptions {
		if e.typ == ex.typ && e.major == ex.major && e.minor == ex.minor {
			c.exceptions[i].access += ex.access
			return
		}
	}
	c.exceptions = append(c.exceptions, ex)
}

func (c *refCgroup) remove(ex refException) {
	var keep []refException
	for _, e := range c.exceptions {
		if e.typ == ex.typ && e.major == ex.major && e.minor == ex.minor {
			e.access = strings.Map(func(r rune) rune {
				if strings.ContainsRune(ex.access, r) {
					return -1
				}
				return r
			}, e.access)
		}
		if e.access != "" {
			keep = append(keep, e)
		}
	}
	c.exceptions = keep
}

// allowed is __devcgroup_check_permission.
func (c *refCgroup) allowed(q devRequest) bool {
	for _, e := range c.exceptions {
		if e.typ != q.typ || (e.major != -1 && e.major != int64(q.major)) || (e.minor != -1 && e.minor != int64(q.minor)) {
			continue
		}
		if c.denyByDefault {
			// match_exception: the exception must cover every access asked for.
			if strings.Trim(q.access, e.access) == "" {
				return true
			}
		} else {
			// match_exception_partial: any access in common denies.
			if strings.ContainsAny(q.access, e.access) {
				return false
			}
		}
	}
	return !c.denyByDefault
}

func refAllowed(rules []DeviceRule, q devRequest) bool {
	var c refCgroup
	for _, r := range rules {
		c.write(r)
	}
	return c.allowed(q)
}

func rule(allow bool, s string) DeviceRule {
	var typ byte
	var major, minor, access string
	if _, err := fmt.Sscanf(strings.Replace(s, ":", " ", 1), "%c %s %s %s", &typ, &major, &minor, &access); err != nil {
		panic(s + ": " + err.Error())
	}
	num := func(s string) int64 {
		if s == "*" {
			return -1
		}
		var n int64
		fmt.Sscan(s, &n)
		return n
	}
	return DeviceRule{Allow: allow, Type: typ, Major: num(major), Minor: num(minor), Access: access}
}

// fmtRules lists rules as "allow c 1:3 rw, deny a *:* rwm".
func fmtRules(rules []DeviceRule) string {
	var out []string
	for _, r := range rules {
		verb := "deny "
		if r.Allow {
			verb = "allow "
		}
		out = append(out, verb+r.String())
	}
	return "[" + strings.Join(out, ", ") + "]"
}

func allow(s string) DeviceRule { return rule(true, s) }
func deny(s string) DeviceRule  { return rule(false, s) }

func req(s string) devRequest {
	r := rule(true, s)
	return devRequest{typ: r.Type, major: uint32(r.Major), minor: uint32(r.Minor), access: r.Access}
}

// programAllows runs deviceProgram(rules) over q in the interpreter.
func programAllows(t *testing.T, rules []DeviceRule, q devRequest) bool {
	t.Helper()
	r0, err := interpret(deviceProgram(rules), q.ctx())
	if err != nil {
		t.Fatalf("rules %s, request %v: %v", fmtRules(rules), q, err)
	}
	if r0 > 1 {
		t.Fatalf("rules %s, request %v: program returned %d, want 0 or 1", fmtRules(rules), q, r0)
	}
	return r0 == 1
}

// TestDeviceFilterCases checks hand-picked v1 outcomes, on the reference
// and on the generated program.
func TestDeviceFilterCases(t *testing.T) {
	def := DefaultDevices()
	a := func(rules ...DeviceRule) []DeviceRule { return rules }
	for _, tc := range []struct {
		name  string
		rules []DeviceRule
		req   string
		want  bool
	}{
		{"no rules allow all", nil, "b 8:0 rwm", true},
		{"default null", def, "c 1:3 rw", true},
		{"default kmsg", def, "c 1:11 r", false},
		{"default mknod char", def, "c 1:11 m", true},
		{"default mknod block", def, "b 8:0 m", true},
		{"default read block", def, "b 8:0 r", false},
		{"default pts", def, "c 136:4 rw", true},
		{"default tun", def, "c 10:200 rwm", true},
		{"default misc", def, "c 10:201 r", false},
		{"partial deny hits rw", a(deny("c 1:3 w")), "c 1:3 rw", false},
		{"partial deny spares r", a(deny("c 1:3 w")), "c 1:3 r", true},
		{"partial deny other minor", a(deny("c 1:3 w")), "c 1:5 w", true},
		{"partial deny block untouched", a(deny("c 1:3 w")), "b 1:3 w", true},
		{"wildcard deny", a(deny("c 1:* w")), "c 1:7 rw", false},
		{"deny trims allow", a(deny("a *:* rwm"), allow("c 1:3 rw"), deny("c 1:3 w")), "c 1:3 r", true},
		{"deny trims allow w", a(deny("a *:* rwm"), allow("c 1:3 rw"), deny("c 1:3 w")), "c 1:3 w", false},
		// v1 removes only the exception with exactly the same device.
		{"narrow deny keeps wide allow", a(deny("a *:* rwm"), allow("c *:* rw"), deny("c 1:3 rw")), "c 1:3 r", true},
		{"narrow allow keeps wide deny", a(deny("c 1:* w"), allow("c 1:3 w")), "c 1:3 w", false},
		// One exception must cover the whole request.
		{"no combining", a(deny("a *:* rwm"), allow("c 1:* r"), allow("c 1:3 w")), "c 1:3 rw", false},
		{"merge same device", a(deny("a *:* rwm"), allow("c 1:3 r"), allow("c 1:3 w")), "c 1:3 rw", true},
		{"only allows", a(allow("c 1:3 r")), "b 8:0 rwm", true},
		{"allow a resets", a(deny("a *:* rwm"), allow("a *:* rwm")), "b 8:0 rwm", true},
		{"deny a resets", a(allow("c 1:3 rwm"), deny("a *:* rwm")), "c 1:3 r", false},
		{"big numbers", a(deny("a *:* rwm"), allow("c 4294967294:4294967293 r")), "c 4294967294:4294967293 r", true},
		{"big numbers mismatch", a(deny("a *:* rwm"), allow("c 4294967294:4294967293 r")), "c 2147483646:4294967293 r", false},
	} {
		q := req(tc.req)
		if got := refAllowed(tc.rules, q); got != tc.want {
			t.Errorf("%s: reference says %v for %v, want %v", tc.name, got, q, tc.want)
		}
		if got := programAllows(t, tc.rules, q); got != tc.want {
			t.Errorf("%s: program says %v for %v, want %v", tc.name, got, q, tc.want)
		}
	}
}

// randomRules makes n rules over a small set of devices, so that they
// overlap often.
func randomRules(rng *rand.Rand, n int) []DeviceRule {
	nums := []int64{-1, 1, 5}
	accs := []string{"r", "w", "m", "rw", "rm", "wm", "rwm"}
	var rules []DeviceRule
	for range n {
		r := DeviceRule{Allow: rng.IntN(2) == 0, Type: "bccc"[rng.IntN(4)], Major: nums[rng.IntN(3)], Minor: nums[rng.IntN(3)], Access: accs[rng.IntN(7)]}
		if rng.IntN(12) == 0 {
			r = DeviceRule{Allow: r.Allow, Type: 'a', Major: -1, Minor: -1, Access: "rwm"}
		}
		rules = append(rules, r)
	}
	return rules
}

// TestDeviceFilterAgainstReference compares the program with the reference
// for random rule lists and every request over their devices.
func TestDeviceFilterAgainstReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var reqs []devRequest
	for _, typ := range []byte{'b', 'c'} {
		for _, major := range []uint32{1, 5, 7} {
			for _, minor := range []uint32{1, 5, 7} {
				for _, acc := range []string{"r", "w", "m", "rw", "rm", "wm", "rwm"} {
					reqs = append(reqs, devRequest{typ, major, minor, acc})
				}
			}
		}
	}
	lists := [][]DeviceRule{nil, DefaultDevices()}
	for i := range 3000 {
		lists = append(lists, randomRules(rng, 1+i%12))
	}
	for _, rules := range lists {
		for _, q := range reqs {
			want := refAllowed(rules, q)
			if got := programAllows(t, rules, q); got != want {
				t.Fatalf("rules %s, request %v: program says %v, v1 says %v", fmtRules(rules), q, got, want)
			}
		}
	}
}

// requireBPF skips the test unless this process may load BPF programs.
func requireBPF(t *testing.T) {
	t.Helper()
	requireRoot(t)
	fd, err := loadDeviceProgram(deviceProgram(nil))
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL) {
		t.Skipf("needs bpf(BPF_PROG_LOAD) of a cgroup device program: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
}

// TestDeviceFilterVerifier loads programs for various rule lists into the
// kernel, whose verifier must accept them, and checks that a rejected
// program's error carries the verifier's message.
func TestDeviceFilterVerifier(t *testing.T) {
	requireBPF(t)
	rng := rand.New(rand.NewPCG(3, 4))
	lists := [][]DeviceRule{
		nil,
		{},
		DefaultDevices(),
		{deny("a *:* rwm")},
		{deny("c 1:3 w"), deny("b *:* r")},
		{deny("a *:* rwm"), allow("c 4294967294:4294967295 rwm"), allow("b *:7 m")},
		append(DefaultDevices(), deny("c 1:3 rwm"), deny("c *:* m")),
		randomRules(rng, 500),
	}
	for i := range 20 {
		lists = append(lists, randomRules(rng, 1+i))
	}
	for _, rules := range lists {
		prog := deviceProgram(rules)
		fd, err := loadDeviceProgram(prog)
		if err != nil {
			t.Fatalf("rules %s (%d instructions): %v", fmtRules(rules), len(prog), err)
		}
		unix.Close(fd)
	}
	_, err := loadDeviceProgram([]bpfInsn{insn(opExit, 0, 0, 0, 0)})
	if err == nil || !strings.Contains(err.Error(), "(verifier: ") || !strings.Contains(err.Error(), "R0") {
		t.Errorf("loading a program that exits with r0 unset: got error %v, want one quoting the verifier about R0", err)
	}
	t.Logf("verifier error, as reported: %v", err)
}

// childEnv makes the test binary a child that tries device accesses (see
// TestDeviceFilterChild); its value is a scratch directory for mknod.
const childEnv = "BERTH_DEVFILTER_CHILD"

// TestDeviceFilterChild is not a test by itself: TestDeviceFilterEnforced
// runs it in a cgroup, where it tries device accesses and prints one line
// "name result" each, result "ok" or the errno's name.
func TestDeviceFilterChild(t *testing.T) {
	dir := os.Getenv(childEnv)
	if dir == "" {
		t.Skip("helper process of TestDeviceFilterEnforced, not a test by itself")
	}
	try := func(name string, err error) { fmt.Printf("%s %s\n", name, errName(err)) }
	open := func(path string, flags int) error {
		fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
		if err == nil {
			unix.Close(fd)
		}
		return err
	}
	try("null-rw", open("/dev/null", unix.O_RDWR))
	try("zero-r", open("/dev/zero", unix.O_RDONLY))
	try("kmsg-r", open("/dev/kmsg", unix.O_RDONLY))
	try("mknod-c", unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))))
	try("mknod-b", unix.Mknod(filepath.Join(dir, "loop"), unix.S_IFBLK|0o600, int(unix.Mkdev(7, 0))))
	os.Exit(0)
}

func errName(err error) string {
	var errno unix.Errno
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &errno) && unix.ErrnoName(errno) != "":
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

// progQueryAttr is the BPF_PROG_QUERY part of union bpf_attr.
type progQueryAttr struct {
	targetFD, attachType, queryFlags, attachFlags uint32
	progIDs                                       uint64
	progCnt                                       uint32
	_                                             uint32
}

// attachedDevicePrograms counts the device programs attached to dir itself.
func attachedDevicePrograms(t *testing.T, dir string) int {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ids := make([]uint32, 16)
	attr := progQueryAttr{targetFD: uint32(fd), attachType: unix.BPF_CGROUP_DEVICE, progIDs: uint64(uintptr(unsafe.Pointer(&ids[0]))), progCnt: uint32(len(ids))}
	if _, err := bpf(unix.BPF_PROG_QUERY, unsafe.Pointer(&attr), unsafe.Sizeof(attr)); err != nil {
		t.Fatalf("BPF_PROG_QUERY %s: %v", dir, err)
	}
	return int(attr.progCnt)
}

// TestDeviceFilterEnforced attaches filters to a real cgroup2 cgroup and
// checks what a process inside may do with devices.
func TestDeviceFilterEnforced(t *testing.T) {
	requireRoot(t)
	const mount = "/sys/fs/cgroup/unified"
	var st unix.Statfs_t
	if err := unix.Statfs(mount, &st); err != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		t.Skipf("needs cgroup2 mounted at %s (hybrid host): statfs: %v, type %#x", mount, err, st.Type)
	}
	requireBPF(t)
	mgr, err := NewV2(mount, fmt.Sprintf("/berth-test-%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.Create(Resources{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := mgr.Destroy(); err != nil {
			t.Error(err)
		}
	})
	m := mgr.(*v2)

	run := func(t *testing.T, want map[string]string) {
		t.Helper()
		fd, _, err := m.FD()
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		cmd := exec.Command(os.Args[0], "-test.run=^TestDeviceFilterChild$")
		cmd.Env = append(os.Environ(), childEnv+"="+t.TempDir())
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		got := map[string]string{}
		for _, line := range strings.Split(string(out), "\n") {
			if name, res, ok := strings.Cut(line, " "); ok {
				got[name] = res
			}
		}
		for _, name := range slices.Sorted(maps.Keys(want)) {
			if got[name] != want[name] {
				t.Errorf("%s: got %q, want %q", name, got[name], want[name])
			}
		}
	}

	t.Run("no filter", func(t *testing.T) {
		run(t, map[string]string{"null-rw": "ok", "zero-r": "ok", "kmsg-r": "ok", "mknod-c": "ok", "mknod-b": "ok"})
	})
	t.Run("default devices", func(t *testing.T) {
		if err := setDeviceFilter(m.path, m.dir, DefaultDevices()); err != nil {
			t.Fatal(err)
		}
		run(t, map[string]string{"null-rw": "ok", "zero-r": "ok", "kmsg-r": "EPERM", "mknod-c": "ok", "mknod-b": "ok"})
	})
	t.Run("replaced", func(t *testing.T) {
		rules := append(DefaultDevices(), deny("c 1:3 rwm"), deny("c *:* m"))
		if err := m.setDevices(rules); err != nil {
			t.Fatal(err)
		}
		if n := attachedDevicePrograms(t, m.dir); n != 1 {
			t.Errorf("%d device programs attached after two filters, want 1", n)
		}
		run(t, map[string]string{"null-rw": "EPERM", "zero-r": "ok", "kmsg-r": "EPERM", "mknod-c": "EPERM", "mknod-b": "ok"})
	})
	t.Run("nil rules", func(t *testing.T) {
		if err := m.setDevices(nil); err != nil {
			t.Fatal(err)
		}
		if n := attachedDevicePrograms(t, m.dir); n != 1 {
			t.Errorf("%d device programs attached, want 1 (nil rules leave it)", n)
		}
	})
	t.Run("errors", func(t *testing.T) {
		err := setDeviceFilter(m.path, m.dir, []DeviceRule{{Type: 'x', Access: "r"}})
		if err == nil || !strings.HasPrefix(err.Error(), "cgroup "+m.path+": device filter: ") {
			t.Errorf("bad rule: got %v", err)
		}
		err = setDeviceFilter(m.path, filepath.Join(m.dir, "missing"), nil)
		if err == nil || !strings.HasPrefix(err.Error(), "cgroup "+m.path+": device filter: ") {
			t.Errorf("missing directory: got %v", err)
		}
	})
}
