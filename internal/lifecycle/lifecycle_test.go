package lifecycle

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/engine"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/testutil"
)

// ownerEnv makes the test binary an instance's owner (see runOwner)
// instead of running the tests.
const ownerEnv = "BERTH_LIFECYCLE_TEST_OWNER"

// TestMain lets the test binary serve as the container's stages and as
// an owner process that a test kills.
func TestMain(m *testing.M) {
	if container.RunStage(os.Args) {
		return
	}
	if spec := os.Getenv(ownerEnv); spec != "" {
		runOwner(spec)
		return
	}
	code := m.Run()
	for _, d := range cgroupDirs(cgroupParent()) {
		os.Remove(d)
	}
	os.Exit(code)
}

// cgroupParent holds the cgroups of this test process's instances (and of
// its owners').
func cgroupParent() string {
	if p := os.Getenv("BERTH_LIFECYCLE_TEST_CGROUP"); p != "" {
		return p
	}
	return fmt.Sprintf("/berthtest-lifecycle-%d", os.Getpid())
}

// cgroupDirs are the directories of cgroup cg that exist, on v1 or v2.
func cgroupDirs(cg string) []string {
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*" + cg)
	if _, err := os.Stat("/sys/fs/cgroup" + cg); err == nil {
		dirs = append(dirs, "/sys/fs/cgroup"+cg)
	}
	return dirs
}

// frozen reports whether cgroup cg is frozen (v1 freezer or v2).
func frozen(cg string) bool {
	if b, err := os.ReadFile("/sys/fs/cgroup/freezer" + cg + "/freezer.state"); err == nil {
		return strings.TrimSpace(string(b)) != "THAWED"
	}
	b, err := os.ReadFile("/sys/fs/cgroup" + cg + "/cgroup.freeze")
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// ownerSpec is what an owner process is told to do.
type ownerSpec struct {
	Root, Rootfs, Script string
	AutoRemove           bool
	Start                bool // start the workload; else only create the record
}

// newRecord creates, in st, the record and bundle of a container that
// runs script over rootfs, owned by this process.
func newRecord(st *instance.Store, rootfs, script string, autoRemove bool) (*instance.Instance, error) {
	id := instance.NewID()
	spec := container.DefaultSpec(id)
	spec.Root.Path = rootfs
	spec.Process.Args = []string{"sh", "-c", script}
	in := &instance.Instance{
		ID:         id,
		Name:       id[:12],
		Isolation:  instance.IsolationContainer,
		Command:    spec.Process.Args,
		AutoRemove: autoRemove,
		Cgroup:     cgroupParent() + "/" + id,
		Created:    time.Now().UTC(),
		Status:     instance.Created,
		MonitorPid: os.Getpid(),
		MonStart:   instance.ProcStart(os.Getpid()),
	}
	if err := st.Create(in); err != nil {
		return nil, err
	}
	if err := st.SaveBundle(id, &instance.Bundle{Spec: spec}); err != nil {
		return nil, err
	}
	return in, nil
}

// runOwner is the owner process of one instance: it creates the record,
// starts the workload when told to, says "ok ID" on stdout and waits to
// be killed.
func runOwner(arg string) {
	fail := func(err error) {
		fmt.Printf("error %s\n", errdefs.OneLine(err))
		os.Exit(1)
	}
	var o ownerSpec
	if err := json.Unmarshal([]byte(arg), &o); err != nil {
		fail(err)
	}
	st, err := instance.OpenStore(o.Root)
	if err != nil {
		fail(err)
	}
	in, err := newRecord(st, o.Rootfs, o.Script, o.AutoRemove)
	if err != nil {
		fail(err)
	}
	if o.Start {
		if _, err := Start(context.Background(), StartOptions{Store: st, Instance: in, Root: o.Root}); err != nil {
			fail(err)
		}
	}
	fmt.Printf("ok %s\n", in.ID)
	select {}
}

// env is a store and a busybox root file system for containers.
type env struct {
	st           *instance.Store
	root, rootfs string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testutil.NeedRoot(t, "containers need namespaces, mounts and cgroups")
	if _, err := os.Stat(testutil.BusyboxPath); err != nil {
		testutil.Missing(t, "%s (busybox-static)", testutil.BusyboxPath)
	}
	root := t.TempDir()
	st, err := instance.OpenStore(root)
	if err != nil {
		t.Fatal(err)
	}
	return &env{st: st, root: root, rootfs: testutil.BusyboxRootfs(t)}
}

// owned is an instance this test process owns; done is closed when its
// Finish has returned.
type owned struct {
	in   *instance.Instance
	done chan struct{}
	exit engine.Exit
	err  error
}

// start runs a container of script owned by the test, with Finish waiting
// for it in the background.
func (e *env) start(t *testing.T, script string) *owned {
	t.Helper()
	in, err := newRecord(e.st, e.rootfs, script, false)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Start(context.Background(), StartOptions{Store: e.st, Instance: in, Root: e.root})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	o := &owned{done: make(chan struct{})}
	if o.in, err = e.st.Get(in.ID); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(o.done)
		o.exit, o.err = Finish(e.st, in, c, nil)
	}()
	t.Cleanup(func() {
		_ = c.Signal(syscall.SIGKILL)
		_ = container.Cleanup(in.Cgroup) // thaws and kills what is left
		<-o.done
	})
	return o
}

// wait waits for the owner's Finish.
func (o *owned) wait(t *testing.T) {
	t.Helper()
	select {
	case <-o.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("instance %s did not end (frozen: %v)", o.in.ShortID(), frozen(o.in.Cgroup))
	}
}

func (e *env) status(t *testing.T, id string) instance.Status {
	t.Helper()
	in, err := e.st.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	return in.Status
}

// wantConflict checks that err refuses a verb in one line.
func wantConflict(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("%s: %v, want a conflict", what, err)
	} else if strings.Contains(err.Error(), "\n") {
		t.Errorf("%s: error of more than one line: %q", what, err)
	}
}

// The verbs refuse what the transition table forbids before touching the
// instance: no process is needed to see it.
func TestVerbsFollowTheTransitionTable(t *testing.T) {
	st, err := instance.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	verbs := map[string]func(*instance.Store, *instance.Instance) error{
		"pause":  Pause,
		"resume": Resume,
		"kill": func(st *instance.Store, in *instance.Instance) error {
			return Signal(st, in, syscall.SIGKILL)
		},
	}
	for _, tc := range []struct {
		status  instance.Status
		refused []string
	}{
		{instance.Created, []string{"pause", "resume", "kill"}},
		{instance.Running, []string{"resume"}},
		{instance.Paused, []string{"pause"}},
		{instance.Stopped, []string{"pause", "resume", "kill"}},
	} {
		id := instance.NewID()
		in := &instance.Instance{ID: id, Name: id[:12], Status: tc.status, Created: time.Now()}
		if err := st.Create(in); err != nil {
			t.Fatal(err)
		}
		for _, v := range tc.refused {
			wantConflict(t, fmt.Sprintf("%s of a %s instance", v, tc.status), verbs[v](st, in))
			if got, _ := st.Get(id); got.Status != tc.status {
				t.Errorf("%s of a %s instance: it became %s", v, tc.status, got.Status)
			}
		}
	}
	// The record's status decides, not the caller's copy of it.
	id := instance.NewID()
	in := &instance.Instance{ID: id, Name: id[:12], Status: instance.Stopped, Created: time.Now()}
	if err := st.Create(in); err != nil {
		t.Fatal(err)
	}
	stale := *in
	stale.Status = instance.Running
	wantConflict(t, "pause of a stopped instance through a stale record", Pause(st, &stale))
}

// A real container goes through the table: pause, pause again (refused),
// resume, resume again (refused), kill, and nothing once stopped.
func TestPauseResumeKill(t *testing.T) {
	e := newEnv(t)
	o := e.start(t, "sleep 1000")
	in := o.in
	wantConflict(t, "resume of a running instance", Resume(e.st, in))
	if err := Pause(e.st, in); err != nil {
		t.Fatalf("pause: %v", err)
	}
	if s := e.status(t, in.ID); s != instance.Paused || !frozen(in.Cgroup) {
		t.Fatalf("after pause: %s, frozen %v", s, frozen(in.Cgroup))
	}
	wantConflict(t, "pause of a paused instance", Pause(e.st, in))
	if err := Resume(e.st, in); err != nil {
		t.Fatalf("resume: %v", err)
	}
	if s := e.status(t, in.ID); s != instance.Running || frozen(in.Cgroup) {
		t.Fatalf("after resume: %s, frozen %v", s, frozen(in.Cgroup))
	}
	// Killed while paused: the kill thaws it, so it can end.
	if err := Pause(e.st, in); err != nil {
		t.Fatalf("pause: %v", err)
	}
	if err := Signal(e.st, in, syscall.SIGKILL); err != nil {
		t.Fatalf("kill: %v", err)
	}
	o.wait(t)
	if o.err != nil || o.exit.Code != 137 {
		t.Errorf("finish: exit %+v, %v; want 137", o.exit, o.err)
	}
	got, err := e.st.Get(in.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != instance.Stopped || got.ExitCode == nil || *got.ExitCode != 137 || got.Error != "" {
		t.Errorf("record after kill: %s, exit %v, error %q", got.Status, got.ExitCode, got.Error)
	}
	if d := cgroupDirs(in.Cgroup); len(d) > 0 {
		t.Errorf("cgroup left: %v", d)
	}
	wantConflict(t, "pause of a stopped instance", Pause(e.st, in))
	wantConflict(t, "resume of a stopped instance", Resume(e.st, in))
	wantConflict(t, "kill of a stopped instance", Signal(e.st, in, syscall.SIGKILL))
}

// Of concurrent pauses of one instance, exactly one succeeds.
func TestConcurrentPauses(t *testing.T) {
	e := newEnv(t)
	o := e.start(t, "sleep 1000")
	const n = 4
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = Pause(e.st, o.in) // each with the record it looked up
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
		} else {
			wantConflict(t, "a concurrent pause", err)
		}
	}
	if ok != 1 {
		t.Errorf("%d of %d concurrent pauses succeeded, want 1: %v", ok, n, errs)
	}
	if s := e.status(t, o.in.ID); s != instance.Paused || !frozen(o.in.Cgroup) {
		t.Errorf("after the pauses: %s, frozen %v", s, frozen(o.in.Cgroup))
	}
	if err := Resume(e.st, o.in); err != nil {
		t.Fatalf("resume: %v", err)
	}
}

// A pause racing a kill (and the owner's finish) never leaves the
// instance frozen or recorded paused: it ends stopped and its cgroup goes.
func TestPauseRacingKill(t *testing.T) {
	e := newEnv(t)
	for i := range 8 {
		o := e.start(t, "sleep 1000")
		var wg sync.WaitGroup
		wg.Add(2)
		pause := func() { defer wg.Done(); _ = Pause(e.st, o.in) }
		kill := func() {
			defer wg.Done()
			if err := Signal(e.st, o.in, syscall.SIGKILL); err != nil {
				t.Errorf("round %d: kill: %v", i, err)
			}
		}
		if i%2 == 0 {
			go pause()
			go kill()
		} else {
			// The kill first, so the pause comes while the workload
			// dies.
			go kill()
			time.Sleep(time.Duration(i) * 100 * time.Microsecond)
			go pause()
		}
		wg.Wait()
		o.wait(t)
		got, err := e.st.Get(o.in.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != instance.Stopped {
			t.Errorf("round %d: recorded %s after the kill", i, got.Status)
		}
		wantNothingLeft(t, o.in)
	}
}

// owner is an owner process of an instance, started from this test
// binary (runOwner).
type owner struct {
	cmd *exec.Cmd
	id  string
}

func (e *env) startOwner(t *testing.T, o ownerSpec) *owner {
	t.Helper()
	o.Root, o.Rootfs = e.root, e.rootfs
	b, _ := json.Marshal(o)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), ownerEnv+"="+string(b), "BERTH_LIFECYCLE_TEST_CGROUP="+cgroupParent())
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ow := &owner{cmd: cmd}
	t.Cleanup(ow.kill)
	line, _ := bufio.NewReader(out).ReadString('\n')
	id, ok := strings.CutPrefix(strings.TrimSpace(line), "ok ")
	if !ok {
		t.Fatalf("owner: %q", line)
	}
	ow.id = id
	return ow
}

// kill ends the owner as kill -9 does and reaps it.
func (ow *owner) kill() {
	if ow.cmd.ProcessState == nil {
		_ = ow.cmd.Process.Kill()
		_ = ow.cmd.Wait()
	}
}

// gone waits a little for the process (pid, start) to end.
func gone(pid int, start uint64) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if !instance.Alive(pid, start) {
			return true
		}
	}
	return false
}

// wantNothingLeft checks that in's workload and cgroup are gone.
func wantNothingLeft(t *testing.T, in *instance.Instance) {
	t.Helper()
	if !gone(in.Pid, in.PidStart) {
		t.Errorf("the workload's init %d lives on", in.Pid)
	}
	if d := cgroupDirs(in.Cgroup); len(d) > 0 {
		t.Errorf("cgroup left: %v (frozen: %v)", d, frozen(in.Cgroup))
	}
}

// Reconcile after the owner was killed (kill -9) at each step of an
// instance's life.
func TestReconcileAfterOwnerKilled(t *testing.T) {
	e := newEnv(t)
	wantLost := func(t *testing.T, got *instance.Instance) {
		t.Helper()
		if got.Status != instance.Stopped || got.ExitCode == nil || *got.ExitCode != 137 || got.Error != LostError || got.Finished.IsZero() {
			t.Errorf("reconciled: %s, exit %v, error %q, finished %v", got.Status, got.ExitCode, got.Error, got.Finished)
		}
		if stored, err := e.st.Get(got.ID); err != nil || stored.Status != instance.Stopped {
			t.Errorf("stored record: %v, %v", stored, err)
		}
	}
	t.Run("created", func(t *testing.T) {
		ow := e.startOwner(t, ownerSpec{Script: "true"})
		ow.kill()
		in, err := e.st.Get(ow.id)
		if err != nil || in.Status != instance.Created {
			t.Fatalf("before: %v, %v", in, err)
		}
		wantLost(t, Reconcile(e.st, in))
	})
	t.Run("running", func(t *testing.T) {
		ow := e.startOwner(t, ownerSpec{Script: "sleep 1000", Start: true})
		ow.kill()
		in, err := e.st.Get(ow.id)
		if err != nil || in.Status != instance.Running {
			t.Fatalf("before: %v, %v", in, err)
		}
		if !instance.Alive(in.Pid, in.PidStart) {
			t.Fatal("the workload died with its owner")
		}
		wantLost(t, Reconcile(e.st, in))
		wantNothingLeft(t, in)
	})
	t.Run("paused", func(t *testing.T) {
		ow := e.startOwner(t, ownerSpec{Script: "sleep 1000", Start: true})
		in, err := e.st.Get(ow.id)
		if err != nil {
			t.Fatal(err)
		}
		if err := Pause(e.st, in); err != nil {
			t.Fatal(err)
		}
		ow.kill()
		if in, err = e.st.Get(ow.id); err != nil || in.Status != instance.Paused {
			t.Fatalf("before: %v, %v", in, err)
		}
		wantLost(t, Reconcile(e.st, in))
		wantNothingLeft(t, in)
	})
	t.Run("rm", func(t *testing.T) {
		ow := e.startOwner(t, ownerSpec{Script: "sleep 1000", Start: true, AutoRemove: true})
		ow.kill()
		in, err := e.st.Get(ow.id)
		if err != nil {
			t.Fatal(err)
		}
		got := Reconcile(e.st, in)
		if got.Status != instance.Stopped {
			t.Errorf("reconciled: %s", got.Status)
		}
		if _, err := e.st.Get(in.ID); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("the --rm instance was not removed: %v", err)
		}
		if _, err := os.Stat(e.st.Dir(in.ID)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("its directory is left: %v", err)
		}
		wantNothingLeft(t, in)
	})
}

// An instance whose owner lives is not Reconcile's business.
func TestReconcileLeavesALiveOwnersInstance(t *testing.T) {
	e := newEnv(t)
	ow := e.startOwner(t, ownerSpec{Script: "sleep 1000", Start: true})
	in, err := e.st.Get(ow.id)
	if err != nil {
		t.Fatal(err)
	}
	got := Reconcile(e.st, in)
	if got.Status != instance.Running || got.Error != "" {
		t.Errorf("reconciled: %s, %q", got.Status, got.Error)
	}
	if stored, _ := e.st.Get(in.ID); stored.Status != instance.Running {
		t.Errorf("stored: %s", stored.Status)
	}
	if !instance.Alive(in.Pid, in.PidStart) {
		t.Error("the workload was killed")
	}
	// Done: the owner goes, and what it owned with it.
	ow.kill()
	Reconcile(e.st, in)
	if !gone(in.Pid, in.PidStart) {
		t.Errorf("the workload's init %d lives on", in.Pid)
	}
}

// TestStop: a workload that ends on SIGTERM ends with it; one that does
// not (here PID 1 without a handler, which the kernel spares, as under
// Docker) is killed once the grace period is over.
func TestStop(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		script string
		code   int
	}{
		{"trap 'exit 3' TERM; sleep 1000 & wait", 3},
		{"exec sleep 1000", 137},
	} {
		o := e.start(t, c.script)
		if c.code == 3 {
			waitCatching(t, o.in.Cgroup, syscall.SIGTERM)
		}
		if err := Stop(e.st, o.in, 300*time.Millisecond); err != nil {
			t.Fatalf("stop %q: %v", c.script, err)
		}
		o.wait(t)
		got, err := e.st.Get(o.in.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != instance.Stopped || got.ExitCode == nil || *got.ExitCode != c.code {
			t.Errorf("stop %q: %s, exit %v; want stopped, %d", c.script, got.Status, exitOf(got), c.code)
		}
		wantNothingLeft(t, got)
		// Stopping a stopped instance does nothing.
		if err := Stop(e.st, got, time.Second); err != nil {
			t.Errorf("stop of a stopped instance: %v", err)
		}
	}
}

// exitOf is a record's exit code as text, "none" when it has none.
func exitOf(in *instance.Instance) string {
	if in.ExitCode == nil {
		return "none"
	}
	return strconv.Itoa(*in.ExitCode)
}

// waitCatching waits until a process of cgroup cg catches sig (its shell
// has set its trap).
func waitCatching(t *testing.T, cg string, sig syscall.Signal) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, d := range cgroupDirs(cg) {
			procs, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			for _, pid := range strings.Fields(string(procs)) {
				status, _ := os.ReadFile("/proc/" + pid + "/status")
				for _, line := range strings.Split(string(status), "\n") {
					if mask, ok := strings.CutPrefix(line, "SigCgt:\t"); ok {
						if m, err := strconv.ParseUint(mask, 16, 64); err == nil && m&(1<<(sig-1)) != 0 {
							return
						}
					}
				}
			}
		}
	}
	t.Fatalf("no process of %s came to catch %v", cg, sig)
}
