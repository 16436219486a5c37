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
	r, err := Compare("true vs true", Subject{"a", []string{"/bin/true"}}, Subject{"b", []string{"/bin/true"}}, 3)
	if err != nil {
		t.Fatal(err)
	}
	if r.Runs != 3 || r.Medians["a"] <= 0 || r.Ratio <= 0 {
		t.Fatalf("result %+v", r)
	}
	if _, err := Compare("fails", Subject{"a", []string{"/bin/false"}}, Subject{"b", []string{"/bin/true"}}, 1); err == nil {
		t.Fatal("a failing subject was measured")
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
