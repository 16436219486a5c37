package instance

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/testutil"
)

// fill writes to a file under dir until the file system is full.
func fill(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill: %v", err)
			}
			return
		}
	}
}

// A workload that fills the data root's file system must not keep berth
// from recording how it ended, and a failed write leaves no temporary
// file behind.
func TestRecordEndOnFullFileSystem(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.Missing(t, "needs root to mount a small tmpfs")
	}
	dir := t.TempDir()
	if err := unix.Mount("none", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	st, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	in := newInstance("full")
	if err := st.Create(in); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Update(in.ID, func(x *Instance) error { x.Status = Running; return nil }); err != nil {
		t.Fatal(err)
	}
	fill(t, dir)
	code := 0
	_, err = st.Update(in.ID, func(x *Instance) error {
		x.Status, x.ExitCode, x.Error = Stopped, &code, "a long enough error text to need a block of its own"
		return nil
	})
	if err != nil {
		t.Fatalf("recording the end on a full file system: %v", err)
	}
	got, err := st.Get(in.ID)
	if err != nil || got.Status != Stopped || got.ExitCode == nil || *got.ExitCode != 0 {
		t.Fatalf("record after the end: %+v, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(st.Dir(in.ID), "state.json.tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state.json.tmp left behind: %v", err)
	}
	// With the reserve spent, a write that cannot be made fails cleanly.
	_, err = st.Update(in.ID, func(x *Instance) error { x.Error = string(make([]byte, 64<<10)); return nil })
	if !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("oversized record on a full file system: %v", err)
	}
	if _, err := os.Stat(filepath.Join(st.Dir(in.ID), "state.json.tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state.json.tmp left behind by a failed write: %v", err)
	}
	if err := st.Remove(in.ID); err != nil {
		t.Fatal(err)
	}
}

// setImmutable sets or clears a file's immutable flag (chattr +i / -i).
func setImmutable(t *testing.T, path string, on bool) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flags := 0
	if on {
		flags = 0x10 // FS_IMMUTABLE_FL
	}
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, flags); err != nil {
		t.Skipf("chattr on %s: %v", path, err)
	}
}

// A removal that cannot finish (here a file berth cannot delete; in life
// a remover killed midway) must not leave an instance directory without
// its record, which no berth command could show or remove; what is left
// goes with the next OpenStore once it can.
func TestInterruptedRemoveLeavesNoHalfInstance(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.Missing(t, "needs root to make a file immutable")
	}
	root := t.TempDir()
	st, err := OpenStore(root)
	if err != nil {
		t.Fatal(err)
	}
	in := newInstance("half")
	if err := st.Create(in); err != nil {
		t.Fatal(err)
	}
	stuck := filepath.Join(st.Dir(in.ID), "upper", "stuck")
	if err := os.MkdirAll(stuck, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stuck, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	setImmutable(t, stuck, true)
	defer func() {
		for _, p := range []string{stuck, filepath.Join(root, "instances", trashDir, in.ID, "upper", "stuck")} {
			if _, err := os.Stat(p); err == nil {
				setImmutable(t, p, false)
			}
		}
	}()
	if err := st.Remove(in.ID); err == nil {
		t.Fatal("Remove of an undeletable tree reported success")
	}
	ents, _ := os.ReadDir(filepath.Join(root, "instances"))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if _, err := st.Get(e.Name()); err != nil {
			t.Errorf("instance directory %s is left without a readable record: %v", e.Name()[:12], err)
		}
	}
	if _, err := st.Get("half"); err == nil {
		t.Error("the name of a removed instance still resolves")
	}
	setImmutable(t, filepath.Join(root, "instances", trashDir, in.ID, "upper", "stuck"), false)
	if _, err := OpenStore(root); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "instances", trashDir)); len(ents) != 0 {
		t.Errorf("OpenStore left the trash of an interrupted removal: %d entries", len(ents))
	}
}

// A creator killed midway leaves its stage under .new, never a directory
// without a record among the instances; the next OpenStore removes the
// stages of dead creators and keeps those of live ones.
func TestSweepStagesOfDeadCreators(t *testing.T) {
	root := t.TempDir()
	st, err := OpenStore(root)
	if err != nil {
		t.Fatal(err)
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	me := os.Getpid()
	stages := filepath.Join(root, "instances", newDir)
	deadStage := filepath.Join(stages, fmt.Sprintf("%s.%d.%d", NewID(), dead.Process.Pid, 12345))
	liveStage := filepath.Join(stages, fmt.Sprintf("%s.%d.%d", NewID(), me, ProcStart(me)))
	for _, d := range []string{deadStage, liveStage} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := writeReserve(filepath.Join(d, reserveFile)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := OpenStore(root); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(deadStage); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stage of a dead creator survived OpenStore: %v", err)
	}
	if _, err := os.Stat(liveStage); err != nil {
		t.Errorf("the stage of a live creator was removed: %v", err)
	}
	// Create itself leaves nothing under .new.
	in := newInstance("staged")
	if err := st.Create(in); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(stages); len(ents) != 1 {
		t.Errorf(".new holds %d entries after Create, want only the live stage", len(ents))
	}
	if got, err := st.Get("staged"); err != nil || got.ID != in.ID {
		t.Fatalf("Get(staged) = %v, %v", got, err)
	}
}

// An unreadable record is neither hidden nor a dead end: Get says what
// is wrong, List shows it, and Remove frees its directory and name.
func TestCorruptRecord(t *testing.T) {
	st, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	in := newInstance("broken")
	if err := st.Create(in); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(st.Dir(in.ID), "state.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"broken", in.ID, in.ID[:12]} {
		var ce *CorruptError
		if _, err := st.Get(ref); !errors.As(err, &ce) || ce.ID != in.ID {
			t.Errorf("Get(%q) = %v; want a CorruptError for %s", ref, err, in.ShortID())
		}
	}
	list, err := st.List()
	if err != nil || len(list) != 1 || list[0].ID != in.ID || list[0].Error == "" {
		t.Fatalf("List = %v, %v; want the unreadable instance, with an error", list, err)
	}
	if err := st.Remove(in.ID); err != nil {
		t.Fatal(err)
	}
	if err := st.Create(newInstance("broken")); err != nil {
		t.Errorf("the name of a removed unreadable instance is still taken: %v", err)
	}
}
