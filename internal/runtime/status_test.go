package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/instance"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// liveProcess starts a process that lives until the test ends; with
// awaiting its command line is that of berth's init waiting for start.
func liveProcess(t *testing.T, awaiting bool) (pid int, start uint64) {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if awaiting {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "__init"), []byte("sleep 60; exit 0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd = exec.Command("/bin/sh", "__init")
		cmd.Args[0] = "berth-init"
		cmd.Dir = dir
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	pid = cmd.Process.Pid
	start = instance.ProcStart(pid)
	if start == 0 {
		t.Fatalf("no start time for pid %d", pid)
	}
	return pid, start
}

// record writes a record by hand, as raw JSON (so that a record of an
// older berth-runtime can be written too), with an empty config.json.
func record(t *testing.T, st *Store, id string, fields map[string]any) {
	t.Helper()
	if err := os.MkdirAll(st.Dir(id), 0o700); err != nil {
		t.Fatal(err)
	}
	fields["id"] = id
	b, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"state.json": b, "config.json": []byte("{}")} {
		if err := os.WriteFile(filepath.Join(st.Dir(id), name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func newTestStore(t *testing.T) *Store {
	t.Helper()
	st, err := NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// stored reads the status state.json holds.
func stored(t *testing.T, st *Store, id string) instance.Status {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(st.Dir(id), "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s.Status
}

func mustLoad(t *testing.T, st *Store, id string) *State {
	t.Helper()
	s, err := st.Load(id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A running record whose process is gone, or whose pid now names
// another process, is stopped: OCI pid 0, and a verb holding the lock
// writes the observation back.
func TestReconcileDeadIsStopped(t *testing.T) {
	st := newTestStore(t)
	pid, start := liveProcess(t, false)
	record(t, st, "reused", map[string]any{"isolation": "container", "status": "running", "pid": pid, "pidStart": start + 1})
	record(t, st, "gone", map[string]any{"isolation": "vm", "status": "paused", "pid": 0, "pidStart": 0})
	for _, id := range []string{"reused", "gone"} {
		s := mustLoad(t, st, id)
		if s.Status != instance.Stopped {
			t.Fatalf("%s: status %s, want stopped", id, s.Status)
		}
		if oci := s.OCI(); oci.Status != specs.StateStopped || oci.Pid != 0 {
			t.Fatalf("%s: OCI state %+v", id, oci)
		}
	}
	if got := stored(t, st, "reused"); got != instance.Running {
		t.Fatalf("a read without the lock wrote the record: %s", got)
	}
	_, l, err := st.loadLocked("reused")
	if err != nil {
		t.Fatal(err)
	}
	l.Unlock()
	if got := stored(t, st, "reused"); got != instance.Stopped {
		t.Fatalf("loadLocked did not write the observation back: %s", got)
	}
	// A stopped record stays stopped whatever its pid.
	record(t, st, "done", map[string]any{"isolation": "container", "status": "stopped", "pid": pid, "pidStart": start})
	if s := mustLoad(t, st, "done"); s.Status != instance.Stopped {
		t.Fatalf("stopped record with a live pid: %s", s.Status)
	}
}

// fixture is a store with records written by hand over live processes:
// "created" (a container whose init waits for start), "started" (a
// container that says created, whose init execve'd), "createdvm",
// "running" (a container) and "stopped" (a VM whose pid is alive).
func fixture(t *testing.T) (st *Store, pid int) {
	t.Helper()
	st = newTestStore(t)
	waiting, wstart := liveProcess(t, true)
	pid, start := liveProcess(t, false)
	for id, r := range map[string]struct {
		isolation, status string
		pid               int
		start             uint64
	}{
		"created":   {"container", "created", waiting, wstart},
		"started":   {"container", "created", pid, start},
		"createdvm": {"vm", "created", pid, start},
		"running":   {"container", "running", pid, start},
		"stopped":   {"vm", "stopped", pid, start},
	} {
		record(t, st, id, map[string]any{"isolation": r.isolation, "status": r.status, "pid": r.pid, "pidStart": r.start})
	}
	return st, pid
}

// A created container whose init no longer waits for start runs; one
// whose init waits is created. A created VM runs once its owner made the
// running marker.
func TestReconcileCreatedToRunning(t *testing.T) {
	st, pid := fixture(t)
	for id, want := range map[string]instance.Status{"created": instance.Created, "started": instance.Running, "createdvm": instance.Created} {
		if s := mustLoad(t, st, id); s.Status != want {
			t.Errorf("%s: status %s, want %s", id, s.Status, want)
		}
	}
	if err := os.WriteFile(filepath.Join(st.Dir("createdvm"), vmRunningFile), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s := mustLoad(t, st, "createdvm")
	if s.Status != instance.Running {
		t.Fatalf("VM with its running marker: %s", s.Status)
	}
	if oci := s.OCI(); oci.Pid != pid || oci.Status != specs.StateRunning {
		t.Fatalf("OCI state of a running VM: %+v", oci)
	}
}

// Records of an older berth-runtime have neither isolation nor status:
// a VM record beside one makes it a VM, its started and paused flags
// give the status, and reconcile the rest.
func TestUpgradeOldRecord(t *testing.T) {
	st := newTestStore(t)
	waiting, wstart := liveProcess(t, true)
	pid, start := liveProcess(t, false)
	record(t, st, "created", map[string]any{"pid": waiting, "pidStart": wstart, "started": false, "paused": false})
	record(t, st, "paused", map[string]any{"pid": pid, "pidStart": start, "started": true, "paused": true})
	record(t, st, "vm", map[string]any{"pid": pid, "pidStart": start, "started": false, "paused": false})
	if err := os.WriteFile(filepath.Join(st.Dir("vm"), vmRecordFile), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	record(t, st, "dead", map[string]any{"pid": pid, "pidStart": start + 1, "started": true})
	cases := map[string]struct {
		isolation string
		status    instance.Status
	}{
		"created": {instance.IsolationContainer, instance.Created},
		"paused":  {instance.IsolationContainer, instance.Paused},
		"vm":      {instance.IsolationVM, instance.Created},
		"dead":    {instance.IsolationContainer, instance.Stopped},
	}
	for id, want := range cases {
		s := mustLoad(t, st, id)
		if s.Isolation != want.isolation || s.Status != want.status {
			t.Errorf("%s: %s %s, want %s %s", id, s.Isolation, s.Status, want.isolation, want.status)
		}
	}
	record(t, st, "odd", map[string]any{"isolation": "container", "status": "frozen", "pid": pid, "pidStart": start})
	if _, err := st.Load("odd"); !errors.Is(err, errdefs.ErrInvalid) || err.Error() != `container odd: state.json: status "frozen": want created, running, paused or stopped: invalid` {
		t.Errorf("unknown status: %v", err)
	}
}

// wantRefusal checks a refused verb: a conflict, in one line.
func wantRefusal(t *testing.T, what string, err error, msg string) {
	t.Helper()
	if err == nil || !errors.Is(err, errdefs.ErrConflict) || err.Error() != msg {
		t.Errorf("%s: %v; want %q (a conflict)", what, err, msg)
	}
}

// The verbs check their moves with the state machine and refuse, in one
// line, what it forbids; nothing is changed by a refusal.
func TestTransitionsRefused(t *testing.T) {
	st, _ := fixture(t)

	wantRefusal(t, "pause of a created container", st.Pause("created"), "container created is created, cannot become paused")
	wantRefusal(t, "pause of a created VM", st.Pause("createdvm"), "container createdvm is created, cannot become paused")
	wantRefusal(t, "resume of a created VM", st.Resume("createdvm"), "container createdvm is created, cannot resume")
	wantRefusal(t, "resume of a running container", st.Resume("running"), "container running is running, cannot resume")
	wantRefusal(t, "start of a running container", st.Start("running"), "container running is running, cannot become running")
	wantRefusal(t, "start of a stopped VM", st.Start("stopped"), "container stopped is stopped, cannot become running")
	wantRefusal(t, "kill of a stopped VM", st.Kill("stopped", 15, false), "container stopped is stopped, cannot be killed")
	wantRefusal(t, "update of a stopped VM", st.Update("stopped", &specs.LinuxResources{}), "container stopped is stopped, cannot be updated")
	_, err := st.Exec(context.Background(), "stopped", &specs.Process{Args: []string{"true"}}, ExecOptions{})
	wantRefusal(t, "exec in a stopped VM", err, "container stopped is stopped, cannot exec")
	_, err = st.Exec(context.Background(), "createdvm", &specs.Process{Args: []string{"true"}}, ExecOptions{})
	wantRefusal(t, "exec in a created VM", err, "container createdvm is created, cannot exec")
	_, err = st.Stats("stopped")
	wantRefusal(t, "stats of a stopped VM", err, "container stopped is stopped, cannot report stats")
	wantRefusal(t, "delete of a running container", st.Delete("running", false), "container running is running, cannot be deleted: stop it first or use --force")

	for id, want := range map[string]instance.Status{"created": instance.Created, "createdvm": instance.Created, "running": instance.Running, "stopped": instance.Stopped} {
		if got := stored(t, st, id); got != want {
			t.Errorf("%s: a refused verb left the record %s", id, got)
		}
	}
	if _, err := os.Stat(st.Dir("running")); err != nil {
		t.Errorf("a refused delete removed the state: %v", err)
	}
}

// What only the isolation knows: a VM's host process is its owner, and
// its limits are the guest's.
func TestVMBackend(t *testing.T) {
	st := newTestStore(t)
	pid, start := liveProcess(t, false)
	record(t, st, "vm", map[string]any{"isolation": "vm", "status": "running", "pid": pid, "pidStart": start})
	pids, err := st.Pids("vm")
	if err != nil || len(pids) != 1 || pids[0] != pid {
		t.Fatalf("Pids of a VM: %v %v", pids, err)
	}
	err = st.Update("vm", &specs.LinuxResources{})
	if !errors.Is(err, errdefs.ErrNotSupported) || !strings.Contains(err.Error(), "not supported for VM isolation") {
		t.Fatalf("Update of a VM: %v", err)
	}
	record(t, st, "gone", map[string]any{"isolation": "vm", "status": "running", "pid": pid, "pidStart": start + 1})
	if pids, err := st.Pids("gone"); err != nil || len(pids) != 0 {
		t.Fatalf("Pids of a stopped VM: %v %v", pids, err)
	}
}

// A kill reaches the process and the observation follows: the record
// says stopped once the process is gone (reaped).
func TestKillThenStopped(t *testing.T) {
	st := newTestStore(t)
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	pid := cmd.Process.Pid
	record(t, st, "c", map[string]any{"isolation": "container", "status": "running", "pid": pid, "pidStart": instance.ProcStart(pid)})
	if err := st.Kill("c", 9, false); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if s := mustLoad(t, st, "c"); s.Status != instance.Stopped {
		t.Fatalf("after kill: %s", s.Status)
	}
}
