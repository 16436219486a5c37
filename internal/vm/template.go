package vm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/lockfile"
)

// A template is a guest booted up to the moment its agent waits for the
// host, then saved: its RAM as a file (ram), its device state (state) and
// its scratch disk as it left it (scratch). A clone is a QEMU with the same
// devices that maps ram copy-on-write, loads state and gets its own copy of
// scratch: its guest goes on from where the template stopped, without a
// kernel boot, and the clones share the template's RAM pages until they
// write to them. The host's first message gives each clone the wall clock
// and fresh entropy (the agent reseeds the kernel's RNG), since all clones
// start with the template's.
//
// Everything a saved guest depends on names its template: QEMU, kernel,
// initramfs and firmware (path and file identity), layer disks (ditto),
// and QEMU's command line (RAM, vCPUs, accelerator, devices, kernel
// arguments). A VM with shares or the vsock channel boots cold.
const (
	templateFormat = "berth-template-1"
	templatesDir   = "templates"
	// keepTemplates is how many templates the cache keeps (most recently
	// used first); each holds the RAM the guest touched while booting,
	// about 120 MB under software emulation.
	keepTemplates = 4
)

// Files of a template's directory.
const (
	templateRAM     = "ram"
	templateState   = "state"
	templateScratch = "scratch"
)

// TemplatesEnabled says whether VMs start from templates:
// BERTH_VM_TEMPLATE=off (or 0, false, no) makes every VM boot cold.
func TemplatesEnabled() bool {
	switch strings.ToLower(os.Getenv("BERTH_VM_TEMPLATE")) {
	case "off", "0", "false", "no":
		return false
	}
	return true
}

// templateable says whether cfg can start from a template.
func templateable(cfg Config) bool {
	return len(cfg.Shares) == 0 && cfg.Transport != TransportVsock && TemplatesEnabled()
}

// templateKey names cfg's template (cfg as Start's check completed it).
func templateKey(cfg Config) (string, error) {
	n := cfg
	n.ID, n.Dir = "template", "/template"
	if n.Scratch != "" {
		n.Scratch = "/template/scratch"
	}
	n.RAMFile, n.RAMPrivate, n.SaveTo, n.RestoreFrom = "", false, "", ""
	n.NIC, n.NetNS = templateNIC(cfg.NIC), nil
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%q\n", templateFormat, CommandLine(n))
	// Files are known by path, size, inode and modification time (a
	// rebuilt file is a new one, written aside and renamed), except the
	// initramfs: it is named by its content and built reproducibly, and
	// its cache marks it used by its time.
	files := append([]string{cfg.QEMU, cfg.Kernel.Path, cfg.Firmware}, cfg.Layers...)
	for _, p := range append(files, cfg.Initramfs) {
		if p == "" {
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d", p, st.Size())
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && p != cfg.Initramfs {
			fmt.Fprintf(h, " %d %d", sys.Ino, st.ModTime().UnixNano())
		}
		fmt.Fprintln(h)
	}
	// With KVM the guest runs on the host's CPU (-cpu host), and the
	// host's kernel does the virtualisation: a saved guest is tied to
	// both.
	flags, _ := cpuFlags("/proc/cpuinfo")
	fmt.Fprintf(h, "host %s %s\n", hostRelease(), flags)
	return hex.EncodeToString(h.Sum(nil))[:32], nil
}

// hostRelease is the host kernel's release.
func hostRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// templateFor returns the directory of cfg's template in cacheDir, making
// it first when there is none (once, whoever asks at the same time), and
// a release of the shared lock that keeps it from being pruned until the
// clone's QEMU has it open. wait bounds the template guest's boot;
// makeScratch makes a fresh scratch disk at a path.
func templateFor(ctx context.Context, cfg Config, cacheDir string, wait time.Duration, makeScratch func(string) error) (string, func(), error) {
	scratch := cfg.Scratch
	cfg.Scratch = "" // not made yet
	if err := check(&cfg); err != nil {
		return "", nil, err
	}
	cfg.Scratch = scratch
	key, err := templateKey(cfg)
	if err != nil {
		return "", nil, fmt.Errorf("vm %s: template: %w", cfg.ID, err)
	}
	root := filepath.Join(cacheDir, templatesDir)
	dir := filepath.Join(root, key)
	if err := os.MkdirAll(root, 0o700); err != nil {
		return "", nil, templateErr(cfg.ID, err)
	}
	lock, err := lockPath(dir+".lock", unix.LOCK_SH)
	if err != nil {
		return "", nil, templateErr(cfg.ID, err)
	}
	if used(dir) {
		return dir, func() { lock.Close() }, nil
	}
	lock.Close()
	if lock, err = lockPath(dir+".lock", unix.LOCK_EX); err != nil {
		return "", nil, templateErr(cfg.ID, err)
	}
	release := func() { lock.Close() }
	if !used(dir) { // else made while this waited for the lock
		if err := makeTemplate(ctx, cfg, root, key, wait, makeScratch); err != nil {
			os.Remove(dir + ".lock") // held: whoever waits on it takes a new one
			release()
			return "", nil, err
		}
		pruneTemplates(root, keepTemplates, key)
	}
	if err := lockfile.Flock(lock, unix.LOCK_SH); err != nil {
		release()
		return "", nil, fmt.Errorf("vm %s: template: %w", cfg.ID, err)
	}
	return dir, release, nil
}

// lockPath opens the lock file path and flocks it. A template's lock file
// goes with the template (removeUnlocked), so a lock won on a file that
// is no longer the one at path locks nothing: it is taken again.
func lockPath(path string, how int) (*os.File, error) {
	for {
		f, err := lockfile.Open(path, how)
		if err != nil {
			return nil, err
		}
		if stillAt(f, path) {
			return f, nil
		}
		f.Close()
	}
}

// stillAt says whether the open file f is still the file at path.
func stillAt(f *os.File, path string) bool {
	var held, now unix.Stat_t
	return unix.Fstat(int(f.Fd()), &held) == nil && unix.Stat(path, &now) == nil && held.Ino == now.Ino && held.Dev == now.Dev
}

// makeTemplate boots and saves cfg's template as root/key, by way of a
// directory of its own that is renamed into place once complete.
func makeTemplate(ctx context.Context, cfg Config, root, key string, wait time.Duration, makeScratch func(string) error) error {
	trace("making template " + key)
	tmp := filepath.Join(root, ".tmp-"+key)
	os.RemoveAll(tmp) // a build that was killed
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return templateErr(cfg.ID, err)
	}
	if err := saveTemplate(ctx, cfg, tmp, wait, makeScratch); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	removeDir(filepath.Join(root, key)) // an incomplete one: used() said so
	if err := os.Rename(tmp, filepath.Join(root, key)); err != nil {
		os.RemoveAll(tmp)
		return templateErr(cfg.ID, err)
	}
	syncFile(root)
	trace("template made")
	return nil
}

// used says whether dir is a complete template, and marks it used now for
// pruneTemplates.
func used(dir string) bool {
	if _, err := os.Stat(filepath.Join(dir, templateState)); err != nil {
		return false
	}
	markUsed(dir)
	return true
}

// saveTemplate boots cfg's guest in dir until its agent opens its port,
// and saves it there.
func saveTemplate(ctx context.Context, cfg Config, dir string, wait time.Duration, makeScratch func(string) error) error {
	t := cfg // named as the instance it is made for: errors and ps name it
	t.Dir = dir
	t.ConsoleLog = filepath.Join(dir, "console.log")
	t.RAMFile, t.RAMPrivate = filepath.Join(dir, templateRAM), false
	t.SaveTo, t.RestoreFrom = filepath.Join(dir, templateState), ""
	t.NIC = templateNIC(cfg.NIC)
	// The agent opens its port once its modules and cgroups are ready
	// and it has mounted the root's disks (by serial, as Boot's run
	// request names them).
	t.Append = append(append([]string{}, cfg.Append...), "berth.template=1")
	if len(cfg.Layers) > 0 {
		root := strings.Join(layerSerials(len(cfg.Layers)), ",")
		if cfg.Scratch != "" {
			root += "/" + scratchSerial
		}
		t.Append = append(t.Append, "berth.root="+root)
	}
	if t.Scratch != "" {
		t.Scratch = filepath.Join(dir, "scratch.img")
		if err := makeScratch(t.Scratch); err != nil {
			return err
		}
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	v, err := Start(ctx, t)
	if err != nil && parent.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("vm %s: no answer from the guest agent within %v: %w", t.ID, wait, errdefs.ErrUnavailable)
	} else if err != nil {
		return err
	}
	defer v.Cleanup()
	if err := v.waitAgentPort(ctx, wait); err != nil {
		return guestError(v, err)
	}
	trace("template guest ready")
	if err := v.SaveState(ctx); err != nil {
		return &templateError{err}
	}
	trace("template state saved")
	v.qmp.Quit(ctx)
	select {
	case <-v.exited:
	case <-time.After(qemuDying):
		return templateErr(t.ID, fmt.Errorf("qemu did not quit after saving the guest: %w", errdefs.ErrUnavailable))
	}
	if e := v.Exit(); e.Code != 0 || e.Signal != 0 {
		return templateErr(t.ID, fmt.Errorf("qemu failed after saving the guest (status %d, signal %d): %w", e.Code, int(e.Signal), errdefs.ErrUnavailable))
	}
	if t.Scratch != "" {
		if err := os.Rename(t.Scratch, filepath.Join(dir, templateScratch)); err != nil {
			return templateErr(t.ID, err)
		}
	}
	// A template torn by a crash would be restored into a broken guest.
	for _, f := range []string{templateRAM, templateState, templateScratch} {
		if err := syncFile(filepath.Join(dir, f)); err != nil && !(f == templateScratch && t.Scratch == "") {
			return templateErr(t.ID, err)
		}
	}
	return nil
}

// templateNIC is the network card of the template of a VM with nic:
// none for none, else one without a peer or an address of its own.
// Templates are keyed by whether the VM has a card, so that one without
// (--network none) starts as it did before VMs had any. A clone's card
// is joined to its tap by QEMU's command line (the device's peer is not
// part of the saved state), and the agent gives it the clone's MAC,
// since the saved state holds the template's. A card saved without a
// peer negotiated no offloads with the guest; restored on a tap that
// offers them, it simply does not use them.
func templateNIC(nic *NIC) *NIC {
	if nic == nil {
		return nil
	}
	return &NIC{}
}

// templateError is a template that could not be saved although its guest
// came up (a full disk, say): the VM can still boot cold.
type templateError struct{ err error }

// templateErr is err, in making instance id's template, as a templateError.
func templateErr(id string, err error) error {
	return &templateError{fmt.Errorf("vm %s: template: %w", id, err)}
}

func (e *templateError) Error() string { return e.err.Error() }
func (e *templateError) Unwrap() error { return e.err }

// waitAgentPort waits until the guest opens the agent's port: its agent
// then waits for the host, which is the moment a template is saved at.
func (v *VM) waitAgentPort(ctx context.Context, wait time.Duration) error {
	for {
		select {
		case ev, ok := <-v.events:
			if !ok {
				<-v.exited
				return v.endedEarly("its agent answered")
			}
			if ch, ok := ev.SerialPort(); ok && ch.ID == agentPortID && ch.Open {
				return nil
			}
		case <-v.exited:
			return v.endedEarly("its agent answered")
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return ctx.Err()
			}
			return fmt.Errorf("no answer from the guest agent within %v", wait)
		}
	}
}

// endedEarly says how a QEMU that exited before something happened
// (before "its agent answered") ended.
func (v *VM) endedEarly(before string) error {
	if e := v.Exit(); e.Signal != 0 {
		return fmt.Errorf("qemu was killed by signal %d (%v) before %s", int(e.Signal), e.Signal, before)
	}
	return fmt.Errorf("the guest stopped before %s", before)
}

// guestError is err about a guest that failed to come up, with the last
// lines of its console.
func guestError(v *VM, err error) error {
	tail := lastLines(v.ConsoleTail(20), 3)
	if tail == "" {
		tail = "(console empty)"
	}
	return fmt.Errorf("vm %s: %v; console: %s: %w", v.cfg.ID, err, tail, errdefs.ErrUnavailable)
}

// pruneTemplates keeps the keep most recently used templates in root
// besides current, and removes what killed builds left, leaving alone
// anything whose lock someone holds (while a template is made, or a clone
// of it; a clone that runs keeps its RAM mapped after the file is gone).
func pruneTemplates(root string, keep int, current string) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return
	}
	type tmpl struct {
		key  string
		used time.Time
	}
	var list []tmpl
	for _, e := range ents {
		name := e.Name()
		switch {
		case !e.IsDir():
			// The lock of a template that was never made (its build
			// failed) or is gone.
			if key, ok := strings.CutSuffix(name, ".lock"); ok && key != current {
				if _, err := os.Stat(filepath.Join(root, key)); errors.Is(err, os.ErrNotExist) {
					removeUnlocked(root, key, key)
				}
			}
		case strings.HasPrefix(name, ".tmp-"):
			removeUnlocked(root, strings.TrimPrefix(name, ".tmp-"), name)
		case strings.HasPrefix(name, ".del-"):
			os.RemoveAll(filepath.Join(root, name))
		case name == current:
		default:
			if info, err := e.Info(); err == nil {
				list = append(list, tmpl{name, info.ModTime()})
			}
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].used.After(list[j].used) })
	for i := keep - 1; i < len(list); i++ {
		removeUnlocked(root, list[i].key, list[i].key)
	}
}

// removeUnlocked removes root/name and key's lock file if nobody holds
// that lock.
func removeUnlocked(root, key, name string) {
	lock := filepath.Join(root, key+".lock")
	f, err := os.OpenFile(lock, os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			removeDir(filepath.Join(root, name))
		}
		return
	}
	defer f.Close()
	if lockfile.Flock(f, unix.LOCK_EX|unix.LOCK_NB) != nil || !stillAt(f, lock) {
		return // in use, or replaced since it was opened
	}
	removeDir(filepath.Join(root, name))
	os.Remove(lock)
}

// removeDir removes a template's directory by first renaming it aside, so
// that one half removed (berth killed meanwhile) is never taken for a
// template, nor blocks the making of a new one.
func removeDir(dir string) {
	aside := filepath.Join(filepath.Dir(dir), ".del-"+filepath.Base(dir))
	if os.Rename(dir, aside) == nil {
		dir = aside
	}
	os.RemoveAll(dir)
}

// cloneConfig is cfg started from the template in dir; its scratch disk
// becomes a copy of the template's.
func cloneConfig(cfg Config, dir string) (Config, error) {
	if cfg.Scratch != "" {
		if err := copySparse(filepath.Join(dir, templateScratch), cfg.Scratch); err != nil {
			return cfg, fmt.Errorf("vm %s: scratch disk from template: %w", cfg.ID, err)
		}
	}
	cfg.RAMFile, cfg.RAMPrivate = filepath.Join(dir, templateRAM), true
	cfg.RestoreFrom = filepath.Join(dir, templateState)
	return cfg, nil
}

// startGuest starts cfg and waits for its agent with answer (given how
// long to wait): as a clone of cfg's template (made first if needed)
// when templates is set and cfg can have one, else booted cold;
// makeScratch makes a fresh scratch disk at a path (cfg.Scratch does not
// exist yet). It returns the VM and its template's directory, "" for a
// cold boot. A template that cannot be saved, restored, or whose clone
// dies or never answers, is dropped and the VM boots cold; a cancel or a
// kill ends the start instead.
func startGuest(ctx context.Context, cfg Config, templates bool, cacheDir string, wait time.Duration,
	makeScratch func(string) error, answer func(*VM, time.Duration) error) (*VM, string, error) {
	if templates && templateable(cfg) {
		v, dir, err := startClone(ctx, cfg, cacheDir, wait, makeScratch, answer)
		var te *templateError
		var re *RestoreError
		switch {
		case err == nil:
			return v, dir, nil
		case ctx.Err() != nil:
			return nil, "", err
		case errors.As(err, &te):
			trace("no template: " + err.Error())
		case errors.As(err, &re) && dir != "":
			dropTemplate(dir, err)
		default:
			return nil, "", err
		}
	}
	v, err := startCold(ctx, cfg, makeScratch)
	if err == nil {
		if err = answer(v, wait); err != nil {
			v.Cleanup()
		}
	}
	if err != nil {
		return nil, "", err
	}
	return v, "", nil
}

// cloneAnswer bounds the wait for the agent of a clone, which answers
// in about 0.1 s under software emulation where a cold boot takes 2 s or
// more: one that has not answered in this time will not.
const cloneAnswer = 30 * time.Second

// startClone starts cfg as a clone of its template, made first if
// needed, and waits for its agent. A clone whose guest dies or does not
// answer within cloneAnswer (it answers in about 0.1 s) is a
// RestoreError, as is one whose QEMU could not load the template.
func startClone(ctx context.Context, cfg Config, cacheDir string, wait time.Duration,
	makeScratch func(string) error, answer func(*VM, time.Duration) error) (*VM, string, error) {
	dir, release, err := templateFor(ctx, cfg, cacheDir, wait, makeScratch)
	if err != nil {
		return nil, "", err
	}
	clone, err := cloneConfig(cfg, dir)
	if err != nil {
		release()
		return nil, "", err
	}
	v, err := Start(ctx, clone)
	release()
	if err != nil {
		return nil, dir, err
	}
	if err := answer(v, min(wait, cloneAnswer)); err != nil {
		// Killed from outside, cancelled, or still running when a
		// boot timeout shorter than cloneAnswer ran out: not the
		// template's doing. (Cleanup kills it too: look first.)
		exited := false
		select {
		case <-v.exited:
			exited = true
		default:
		}
		if ctx.Err() == nil && v.Exit().Signal == 0 && (exited || wait >= cloneAnswer) {
			err = &RestoreError{err}
		}
		v.Cleanup()
		return nil, dir, err
	}
	return v, dir, nil
}

// startCold boots cfg's kernel, on a new scratch disk.
func startCold(ctx context.Context, cfg Config, makeScratch func(string) error) (*VM, error) {
	if cfg.Scratch != "" {
		if err := makeScratch(cfg.Scratch); err != nil {
			return nil, err
		}
	}
	v, err := Start(ctx, cfg)
	if err != nil && cfg.Scratch != "" {
		os.Remove(cfg.Scratch) // Start leaves it when cfg is refused
	}
	return v, err
}

// dropTemplate removes the template in dir, which could not be restored
// or whose guest did not come up.
func dropTemplate(dir string, why error) {
	trace("template unusable, removed: " + why.Error())
	removeUnlocked(filepath.Dir(dir), filepath.Base(dir), filepath.Base(dir))
}

// TemplateUsage counts the templates kept in cacheDir and the disk space
// their files take.
func TemplateUsage(cacheDir string) (n int, bytes int64) {
	root := filepath.Join(cacheDir, templatesDir)
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		n++
		files, _ := os.ReadDir(filepath.Join(root, e.Name()))
		for _, f := range files {
			if info, err := f.Info(); err == nil {
				if st, ok := info.Sys().(*syscall.Stat_t); ok {
					bytes += st.Blocks * 512
				}
			}
		}
	}
	return n, bytes
}
