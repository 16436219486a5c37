package vm

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A template is named by what the saved guest depends on, and not by what
// each clone has of its own.
func TestTemplateKey(t *testing.T) {
	dir := t.TempDir()
	file := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg := Config{ID: "a", Dir: "/run/a", Scratch: "/run/a/scratch.img", QEMU: file("qemu"),
		Kernel: Kernel{Path: file("vmlinuz")}, Initramfs: file("initrd"), Layers: []string{file("layer0")}, Accel: AccelTCG}
	key := func(c Config) string {
		t.Helper()
		k, err := templateKey(c)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	base := key(cfg)
	same := cfg
	same.ID, same.Dir, same.Scratch, same.ConsoleLog = "b", "/run/b", "/run/b/scratch.img", "/run/b/console"
	same.RAMFile, same.RAMPrivate, same.RestoreFrom = "/t/ram", true, "/t/state"
	if key(same) != base {
		t.Error("the key depends on the instance's own names")
	}
	// The initramfs is named by its content; the cache marks it used.
	later := time.Now().Add(time.Hour)
	os.Chtimes(cfg.Initramfs, later, later)
	if key(cfg) != base {
		t.Error("the key depends on when the initramfs was last used")
	}
	for name, change := range map[string]func(c *Config){
		"memory":      func(c *Config) { c.MemoryMiB = 512 },
		"vcpus":       func(c *Config) { c.CPUs = 2 },
		"accelerator": func(c *Config) { c.Accel = AccelKVM },
		"kernel args": func(c *Config) { c.Append = []string{"berth.trace=1"} },
		"layers":      func(c *Config) { c.Layers = append(c.Layers, c.Layers[0]) },
		"no scratch":  func(c *Config) { c.Scratch = "" },
	} {
		c := cfg
		change(&c)
		if key(c) == base {
			t.Errorf("the key does not change with the %s", name)
		}
	}
	// A layer disk made again (a new file in its place) or a kernel
	// replaced with one of the same size.
	for _, p := range []string{cfg.Layers[0], cfg.Kernel.Path} {
		os.Remove(p)
		file(filepath.Base(p))
		os.Chtimes(p, later, later)
		if k := key(cfg); k == base {
			t.Errorf("the key does not change when %s is replaced", filepath.Base(p))
		} else {
			base = k
		}
	}
	os.Remove(cfg.Layers[0])
	if _, err := templateKey(cfg); err == nil {
		t.Error("a key for a missing layer disk")
	}
}

func TestPruneTemplates(t *testing.T) {
	root := t.TempDir()
	base := time.Now().Add(-time.Hour)
	mk := func(name string, age int) {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(p, templateState), []byte("x"), 0o600)
		at := base.Add(time.Duration(age) * time.Minute)
		os.Chtimes(p, at, at)
	}
	for i := 0; i < 6; i++ {
		mk(fmt.Sprintf("t%d", i), i)
		os.WriteFile(filepath.Join(root, fmt.Sprintf("t%d.lock", i)), nil, 0o600)
	}
	mk(".tmp-dead", 0) // a build that was killed: its lock is free
	mk(".tmp-live", 0) // a build under way
	live, _ := os.Create(filepath.Join(root, "live.lock"))
	defer live.Close()
	if err := unix.Flock(int(live.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	// t1 is old but cloned from right now.
	inUse, _ := os.Open(filepath.Join(root, "t1.lock"))
	defer inUse.Close()
	unix.Flock(int(inUse.Fd()), unix.LOCK_SH)
	if !used(filepath.Join(root, "t0")) { // the oldest, used now
		t.Fatal("t0 is not a template")
	}
	pruneTemplates(root, 4, "t2")
	for name, want := range map[string]bool{"t0": true, "t1": true, "t2": true, "t3": false, "t4": true, "t5": true,
		".tmp-dead": false, ".tmp-live": true} {
		if _, err := os.Stat(filepath.Join(root, name)); (err == nil) != want {
			t.Errorf("%s: kept %v, want %v", name, err == nil, want)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "t3.lock")); err == nil {
		t.Error("t3's lock file stayed")
	}
	if used(filepath.Join(root, "t9")) {
		t.Error("a missing template counts as one")
	}
}

// A lock won on a lock file that was removed meanwhile (a template
// pruned) is taken again on the file now at the path.
func TestLockPathRemoved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.lock")
	a, err := lockPath(path, unix.LOCK_EX)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *os.File, 1)
	go func() {
		b, err := lockPath(path, unix.LOCK_EX)
		if err != nil {
			t.Error(err)
		}
		got <- b
	}()
	time.Sleep(50 * time.Millisecond) // b waits on a's file (if it does not yet, it opens the new one: the same end)
	os.Remove(path)
	a.Close()
	b := <-got
	if b == nil {
		return
	}
	defer b.Close()
	var held, now unix.Stat_t
	if err := unix.Fstat(int(b.Fd()), &held); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(path, &now); err != nil {
		t.Fatalf("no lock file at the path: %v", err)
	}
	if held.Ino != now.Ino {
		t.Error("the lock is held on a removed file")
	}
}
