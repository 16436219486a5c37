package health

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func result(at time.Duration, code int) Result {
	return Result{Start: t0.Add(at), End: t0.Add(at), ExitCode: code}
}

func TestRecordRetries(t *testing.T) {
	c := &Config{Retries: 2}
	s := NewState()
	steps := []struct {
		code   int
		status string
		streak int
	}{
		{1, Starting, 1},   // one failure: not yet unhealthy
		{0, Healthy, 0},    // a pass ends the streak
		{1, Healthy, 1},    // still healthy after one failure
		{1, Unhealthy, 2},  // Retries failures in a row
		{1, Unhealthy, 3},  // stays so
		{0, Healthy, 0},    // and recovers at the first pass
		{-1, Healthy, 1},   // a check that could not run is a failure
		{-1, Unhealthy, 2}, // ...and counts as one
	}
	for i, st := range steps {
		s.Record(c, t0, result(time.Duration(i)*time.Second, st.code))
		if s.Status != st.status || s.FailingStreak != st.streak {
			t.Fatalf("step %d (exit %d): %s streak %d, want %s streak %d", i, st.code, s.Status, s.FailingStreak, st.status, st.streak)
		}
	}
}

func TestRecordDefaultRetries(t *testing.T) {
	s := NewState()
	for i := 0; i < DefaultRetries; i++ {
		if s.Status == Unhealthy {
			t.Fatalf("unhealthy after %d failures, want %d", i, DefaultRetries)
		}
		s.Record(&Config{}, t0, result(time.Duration(i)*time.Second, 1))
	}
	if s.Status != Unhealthy {
		t.Fatalf("status %s after %d failures", s.Status, DefaultRetries)
	}
}

func TestRecordStartPeriod(t *testing.T) {
	c := &Config{Retries: 1, StartPeriod: 10 * time.Second}
	s := NewState()
	// Failures within the start period are logged but not counted.
	if s.Record(c, t0, result(2*time.Second, 1)); s.Status != Starting || s.FailingStreak != 0 || len(s.Log) != 1 {
		t.Fatalf("in the start period: %+v", s)
	}
	// After it, a failure counts.
	if changed := s.Record(c, t0, result(11*time.Second, 1)); !changed || s.Status != Unhealthy {
		t.Fatalf("after the start period: %+v", s)
	}
	// Once a check has passed, the start period no longer protects.
	s = NewState()
	s.Record(c, t0, result(time.Second, 0))
	if s.Record(c, t0, result(2*time.Second, 1)); s.Status != Unhealthy {
		t.Fatalf("failure in the start period after a pass: %+v", s)
	}
}

func TestRecordLogBounded(t *testing.T) {
	s := NewState()
	long := strings.Repeat("x", MaxOutput+100)
	for i := 0; i < MaxLog+3; i++ {
		r := result(time.Duration(i)*time.Second, 0)
		r.Output = long
		s.Record(&Config{}, t0, r)
	}
	if len(s.Log) != MaxLog {
		t.Fatalf("log has %d results, want %d", len(s.Log), MaxLog)
	}
	if got := s.Log[0].Start; !got.Equal(t0.Add(3 * time.Second)) {
		t.Errorf("oldest kept result started at %v, want the 4th", got)
	}
	for _, r := range s.Log {
		if len(r.Output) != MaxOutput {
			t.Fatalf("output of %d bytes kept, want %d", len(r.Output), MaxOutput)
		}
	}
}

func TestCheckTimeout(t *testing.T) {
	c := &Config{Test: []string{"CMD", "sleep"}, Timeout: 20 * time.Millisecond}
	release := make(chan struct{})
	defer close(release)
	r := Check(context.Background(), c, func(ctx context.Context, cmd []string) (int, string, error) {
		<-release // a probe that ignores its context
		return 0, "", nil
	})
	if r.ExitCode != -1 || !strings.Contains(r.Output, "timeout") {
		t.Fatalf("a probe past its timeout: %+v", r)
	}
}

func TestCheckOutcomes(t *testing.T) {
	c := &Config{Test: []string{"CMD-SHELL", "exit 3"}}
	var ran []string
	r := Check(context.Background(), c, func(ctx context.Context, cmd []string) (int, string, error) {
		ran = cmd
		return 3, "out", nil
	})
	if r.ExitCode != 3 || r.Output != "out" || strings.Join(ran, " ") != "/bin/sh -c exit 3" {
		t.Fatalf("result %+v of %q", r, ran)
	}
	r = Check(context.Background(), c, func(context.Context, []string) (int, string, error) {
		return 0, "", errors.New("no such instance")
	})
	if r.ExitCode != -1 || r.Output != "no such instance" {
		t.Fatalf("a probe that failed to run: %+v", r)
	}
}

func TestRunReportsUntilCancelled(t *testing.T) {
	c := &Config{Test: []string{"CMD", "true"}, Interval: time.Millisecond, Retries: 2}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	codes := []int{1, 1, 0}
	var got []string
	skipped := false
	Run(ctx, c, time.Now(), func(context.Context, []string) (int, string, error) {
		code := codes[0]
		codes = codes[1:]
		return code, "", nil
	}, func() bool {
		if !skipped {
			skipped = true // the first tick finds the instance paused
			return true
		}
		return false
	}, func(s State, _ Result) {
		got = append(got, s.Status)
		if len(codes) == 0 {
			cancel()
		}
	})
	if strings.Join(got, " ") != "starting unhealthy healthy" {
		t.Fatalf("statuses %q", got)
	}
}

func TestMergeAndImage(t *testing.T) {
	blob := []byte(`{"config":{"Healthcheck":{"Test":["CMD-SHELL","wget -q localhost"],"Interval":5000000000,"Retries":4}}}`)
	img, err := FromImageConfig(blob)
	if err != nil || img == nil || img.Interval != 5*time.Second || img.Retries != 4 || img.Test[1] != "wget -q localhost" {
		t.Fatalf("image check %+v, %v", img, err)
	}
	if c, err := FromImageConfig([]byte(`{"config":{}}`)); c != nil || err != nil {
		t.Fatalf("an image without a check: %+v, %v", c, err)
	}
	if _, err := FromImageConfig([]byte(`{"config":{"Healthcheck":{"Test":["BOGUS"]}}}`)); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("a bad image check: %v", err)
	}
	m := Merge(img, &Config{Timeout: time.Second}, false)
	if m.Interval != 5*time.Second || m.Timeout != time.Second || m.Retries != 4 || m.Test[0] != "CMD-SHELL" {
		t.Fatalf("merged %+v", m)
	}
	if m := Merge(img, &Config{Test: []string{"CMD", "true"}}, false); m.Test[1] != "true" || m.Interval != 5*time.Second {
		t.Fatalf("--health-cmd over the image's: %+v", m)
	}
	if Merge(img, nil, true) != nil || Merge(&Config{Test: []string{"NONE"}}, nil, false) != nil || Merge(nil, nil, false) != nil {
		t.Fatal("a disabled check is not nil")
	}
	for _, bad := range []Config{
		{Interval: time.Microsecond}, {Timeout: -time.Second}, {StartPeriod: time.Nanosecond}, {Retries: -1},
		{Test: []string{"CMD"}}, {Test: []string{"CMD-SHELL"}}, {Test: []string{"sh"}},
	} {
		if err := bad.Validate(); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}
