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
