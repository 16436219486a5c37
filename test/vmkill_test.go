package test

import (
	"bufio"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/instance"
)

// A root workload once could put its guest's agent (PID 1) out of
// action: freeze it in a cgroup of its own, or stop it under ptrace. Now
// the workload runs in the guest's container engine and cannot reach the
// agent (TestVMAgentOutOfReach). berth must still end a VM whose guest
// does not answer: SIGKILL (rm -f, stop after its grace, kill -s KILL)
// ends QEMU when the guest does not end the workload in time, and a
// foreground run that gets SIGTERM does the same when the agent does not
// answer. A guest that does not answer is made from the host: QEMU is
// stopped (SIGSTOP), which berth did not ask for and so does not take
// for a paused VM.

// freezeAgent moves the guest's PID 1 into a new cgroup and freezes it.
const freezeAgent = "mkdir -p /sys/fs/cgroup/x && echo 1 > /sys/fs/cgroup/x/cgroup.procs && echo 1 > /sys/fs/cgroup/x/cgroup.freeze"

// agentTraps are workloads that try to put the agent out of action a
// moment after saying "ready" (so that the word leaves the guest first).
func agentTraps(t *testing.T) map[string][]string {
	img := busybox(t)
	return map[string][]string{
		"freeze": {img, "sh", "-c", "echo ready; sleep 2; " + freezeAgent + "; sleep 1000"},
		"ptrace": {programImage(t, "ptrace1"), "sh", "-c", "echo ready; sleep 2; /bin/ptrace1 & sleep 1000"},
	}
}

// The workload cannot freeze or ptrace the guest's agent: after its
// attempt the agent still answers, and the instance ends as any does.
func TestVMAgentOutOfReach(t *testing.T) {
	needVM(t)
	for trap, workload := range agentTraps(t) {
		t.Run(trap, func(t *testing.T) {
			t.Parallel()
			id := detach(t, append([]string{"--vm"}, workload...)...)
			waitFor(t, "the workload's first words", func() bool { return strings.Contains(berth(t, "logs", id).stdout, "ready") })
			time.Sleep(4 * time.Second) // the attempt is 2 s after "ready"
			if r := berth(t, "stats", "--no-stream", id); r.code != 0 {
				t.Fatalf("the agent no longer answers after the workload's %s attempt: %s", trap, r.stderr)
			}
			if r := berth(t, "rm", "-f", id); r.code != 0 {
				t.Fatalf("rm -f: exit %d: %s", r.code, r.stderr)
			}
			assertNothingLeft(t, id, true)
		})
	}
}

// stopGuest makes the instance's guest stop answering: its QEMU is
// stopped. It returns QEMU's pid and start time.
func stopGuest(t *testing.T, ref string) (int, uint64) {
	t.Helper()
	pid, start := qemuOf(t, ref)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	return pid, start
}

// qemuOf is the QEMU pid of a running instance and its start time, from
// its record.
func qemuOf(t *testing.T, ref string) (int, uint64) {
	t.Helper()
	in := inspect(t, ref)
	pid, _ := in["pid"].(float64)
	start, _ := in["pid_start"].(float64)
	if pid <= 0 || start <= 0 || !instance.Alive(int(pid), uint64(start)) {
		t.Fatalf("instance %s: no live QEMU recorded (pid %v, start %v)", ref, in["pid"], in["pid_start"])
	}
	return int(pid), uint64(start)
}

// assertKilled checks that a stopped instance was recorded killed (137).
func assertKilled(t *testing.T, ref string) {
	t.Helper()
	in := inspect(t, ref)
	if in["status"] != "stopped" || in["exit_code"] != float64(137) {
		t.Errorf("instance %s: status %v exit %v error %v, want stopped 137", ref, in["status"], in["exit_code"], in["error"])
	}
}

func TestVMKillTrappedAgent(t *testing.T) {
	img := busybox(t)
	needVM(t)
	for _, verb := range [][]string{{"rm", "-f"}, {"stop", "-t", "1"}, {"kill", "-s", "KILL"}} {
		t.Run(strings.Join(verb, ""), func(t *testing.T) {
			t.Parallel()
			id := detach(t, "--vm", img, "sh", "-c", "echo ready; sleep 1000")
			waitFor(t, "the workload's first words", func() bool { return strings.Contains(berth(t, "logs", id).stdout, "ready") })
			pid, start := stopGuest(t, id)
			began := time.Now()
			r := berthLimit(t, 30*time.Second, nil, nil, append(verb, id)...)
			if r.code != 0 {
				t.Fatalf("berth %s: exit %d: %s", strings.Join(verb, " "), r.code, r.stderr)
			}
			t.Logf("berth %s returned after %v", strings.Join(verb, " "), time.Since(began).Round(100*time.Millisecond))
			removed := verb[0] == "rm"
			if !removed {
				waitFor(t, "the instance to stop", func() bool { return status(t, id) == "stopped" })
				assertKilled(t, id)
			}
			if instance.Alive(pid, start) {
				t.Errorf("QEMU (pid %d) still runs", pid)
			}
			assertNothingLeft(t, id, removed)
		})
	}
}

// lines passes the lines of a started command's output on.
func lines(t *testing.T, cmd *exec.Cmd) <-chan string {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 16)
	go func() {
		defer close(ch)
		s := bufio.NewScanner(out)
		for s.Scan() {
			ch <- s.Text()
		}
	}()
	return ch
}

// waitLine waits for the line want.
func waitLine(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	timeout := time.After(5 * time.Minute)
	for {
		select {
		case l, ok := <-ch:
			if !ok {
				t.Fatalf("output ended before %q", want)
			}
			if l == want {
				return
			}
		case <-timeout:
			t.Fatalf("no %q", want)
		}
	}
}

// foreground starts a foreground `berth run --vm --name name ARGS...` and
// returns its output's lines and its end.
func foreground(t *testing.T, name string, args ...string) (*exec.Cmd, <-chan string, chan int) {
	t.Helper()
	cmd := exec.Command(berthBin, append([]string{"--root", berthRoot, "run", "--vm", "--name", name}, args...)...)
	out := lines(t, cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	end := make(chan int, 1)
	go func() {
		_ = cmd.Wait()
		end <- cmd.ProcessState.ExitCode()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-end
		end <- -1
		berth(t, "rm", "-f", name)
	})
	return cmd, out, end
}

// waitEnd waits up to 30 s for a foreground run to end and returns its
// exit status.
func waitEnd(t *testing.T, end chan int) int {
	t.Helper()
	select {
	case code := <-end:
		end <- code
		return code
	case <-time.After(30 * time.Second):
		t.Fatal("berth run did not end within 30 s")
	}
	return 0
}

// A foreground run whose guest does not answer ends on SIGTERM: berth
// ends QEMU.
func TestVMForegroundTermTrappedAgent(t *testing.T) {
	img := busybox(t)
	needVM(t)
	t.Parallel()
	name := "vmfgstopped"
	cmd, out, end := foreground(t, name, img, "sh", "-c", "echo ready; sleep 1000")
	waitLine(t, out, "ready")
	pid, start := stopGuest(t, name)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if code := waitEnd(t, end); code != 137 {
		t.Errorf("berth run: exit %d, want 137", code)
	}
	assertKilled(t, name)
	if instance.Alive(pid, start) {
		t.Errorf("QEMU (pid %d) still runs", pid)
	}
	assertNothingLeft(t, inspect(t, name)["id"].(string), false)
}

// A healthy guest gets a foreground run's SIGTERM and may outlive it, as a
// container does; a second SIGTERM ends the VM.
func TestVMForegroundTermTwice(t *testing.T) {
	img := busybox(t)
	needVM(t)
	t.Parallel()
	cmd, out, end := foreground(t, "vmfgterm", img, "sh", "-c", "trap 'echo term' TERM; echo ready; while :; do sleep 0.2; done")
	waitLine(t, out, "ready")
	_ = cmd.Process.Signal(syscall.SIGTERM)
	waitLine(t, out, "term")
	select {
	case code := <-end:
		t.Fatalf("berth run ended (exit %d) on the SIGTERM its workload caught", code)
	case <-time.After(8 * time.Second): // beyond the bound on the agent's answer
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if code := waitEnd(t, end); code != 137 {
		t.Errorf("berth run: exit %d after a second SIGTERM, want 137", code)
	}
	assertKilled(t, "vmfgterm")
}

// An owner that hangs (here stopped) does not hang kill -s KILL: the
// request to it times out and QEMU is killed by its recorded pid. Once the
// owner runs again it records the end.
func TestVMKillHungOwner(t *testing.T) {
	img := busybox(t)
	needVM(t)
	t.Parallel()
	id := detach(t, "--vm", img, "sleep", "1000")
	pid, start := qemuOf(t, id)
	mon := int(inspect(t, id)["monitor_pid"].(float64))
	if err := syscall.Kill(mon, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(mon, syscall.SIGCONT)
	if r := berthLimit(t, 30*time.Second, nil, nil, "kill", "-s", "KILL", id); r.code != 0 {
		t.Fatalf("kill with a hung owner: exit %d: %s", r.code, r.stderr)
	}
	waitFor(t, "QEMU to end", func() bool { return !instance.Alive(pid, start) })
	_ = syscall.Kill(mon, syscall.SIGCONT)
	waitFor(t, "the instance to stop", func() bool { return status(t, id) == "stopped" })
	if in := inspect(t, id); in["exit_code"] != float64(137) {
		t.Errorf("exit %v error %v, want 137", in["exit_code"], in["error"])
	}
	assertNothingLeft(t, id, false)
}
