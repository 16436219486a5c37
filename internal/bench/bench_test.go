package bench

import (
	"os"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		in   []time.Duration
		want time.Duration
	}{
		{nil, 0},
		{[]time.Duration{5 * ms}, 5 * ms},
		{[]time.Duration{9 * ms, 1 * ms, 5 * ms}, 5 * ms},
		{[]time.Duration{4 * ms, 1 * ms, 2 * ms, 3 * ms}, 2500 * time.Microsecond},
	} {
		if got := Median(tc.in); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestCompareAndPSS(t *testing.T) {
	r, err := Compare("true vs true", Subject{Name: "a", Argv: []string{"/bin/true"}}, Subject{Name: "b", Argv: []string{"/bin/true"}}, 3)
	if err != nil {
		t.Fatal(err)
	}
	if r.Runs != 3 || r.Medians["a"] <= 0 || r.Ratio <= 0 {
		t.Fatalf("result %+v", r)
	}
	if r.Ratios != nil {
		t.Errorf("two subjects got Ratios %v", r.Ratios)
	}
	if _, err := Compare("fails", Subject{Name: "a", Argv: []string{"/bin/false"}}, Subject{Name: "b", Argv: []string{"/bin/true"}}, 1); err == nil {
		t.Fatal("a failing subject was measured")
	}
	// A third subject runs in the same rotation, with its environment.
	withEnv := Subject{Name: "c", Argv: []string{"/bin/sh", "-c", `test "$BENCH_X" = 1`}, Env: []string{"BENCH_X=1"}}
	r, err = Compare("three", Subject{Name: "a", Argv: []string{"/bin/true"}}, Subject{Name: "b", Argv: []string{"/bin/true"}}, 2, withEnv)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Subjects) != 3 || r.Medians["c"] <= 0 || r.Ratios["a"] != r.Ratio || r.Ratios["c"] <= 0 {
		t.Fatalf("result %+v", r)
	}
	withEnv.Env = nil
	if _, err := Compare("no env", Subject{Name: "a", Argv: []string{"/bin/true"}}, Subject{Name: "b", Argv: []string{"/bin/true"}}, 1, withEnv); err == nil {
		t.Fatal("a subject's environment was not its own")
	}
	pss, err := PSS(os.Getpid())
	if err != nil || pss <= 0 {
		t.Fatalf("PSS of self: %d %v", pss, err)
	}
}

func TestTree(t *testing.T) {
	tree := Tree(os.Getpid())
	if len(tree) == 0 || tree[0] != os.Getpid() {
		t.Fatalf("Tree(self) = %v", tree)
	}
	if got := Tree(1); len(got) < 2 {
		t.Fatalf("Tree(1) = %v: init has descendants", got)
	}
}

func TestSpreadOf(t *testing.T) {
	ms := time.Millisecond
	if got := SpreadOf(nil); got != (Spread{}) {
		t.Errorf("SpreadOf(nil) = %+v", got)
	}
	got := SpreadOf([]time.Duration{5 * ms, 1 * ms, 4 * ms, 2 * ms, 3 * ms})
	want := Spread{Min: 1, P25: 2, Median: 3, P75: 4, Max: 5}
	if got != want {
		t.Errorf("SpreadOf(1..5 ms) = %+v, want %+v", got, want)
	}
	got = SpreadOf([]time.Duration{10 * ms, 20 * ms})
	if got.P25 != 12.5 || got.P75 != 17.5 || got.Median != 15 {
		t.Errorf("SpreadOf(10, 20 ms) = %+v", got)
	}
}

// A subject may be a function, and a label says how each sample ran.
func TestCompareRunAndLabel(t *testing.T) {
	calls, labels := 0, 0
	fn := Subject{
		Name: "fn",
		Run:  func() error { calls++; return nil },
		Label: func() (string, error) {
			labels++
			if labels%2 == 0 {
				return "even", nil
			}
			return "odd", nil
		},
	}
	r, err := Compare("fn vs true", fn, Subject{Name: "true", Argv: []string{"/bin/true"}}, 4)
	if err != nil {
		t.Fatal(err)
	}
	// One warm-up and four samples; only the samples are counted.
	if calls != 5 || labels != 5 {
		t.Errorf("run %d times, labelled %d times, want 5 and 5", calls, labels)
	}
	if n := r.Labels["fn"]["odd"] + r.Labels["fn"]["even"]; n != 4 || r.Labels["true"] != nil {
		t.Errorf("labels %v", r.Labels)
	}
	if sp := r.Spreads["fn"]; sp.Min > sp.P25 || sp.P25 > sp.Median || sp.Median > sp.P75 || sp.P75 > sp.Max {
		t.Errorf("spread out of order: %+v", sp)
	}
	bad := fn
	bad.Label = func() (string, error) { return "", os.ErrNotExist }
	if _, err := Compare("bad label", bad, Subject{Name: "true", Argv: []string{"/bin/true"}}, 1); err == nil {
		t.Error("a failing label was ignored")
	}
}
