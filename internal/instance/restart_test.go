package instance

import (
	"errors"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
)

func TestParseRestartPolicy(t *testing.T) {
	good := map[string]RestartPolicy{
		"no": {Name: "no"}, "always": {Name: "always"}, "unless-stopped": {Name: "unless-stopped"},
		"on-failure": {Name: "on-failure"}, "on-failure:3": {Name: "on-failure", MaximumRetryCount: 3},
		"on-failure:0": {Name: "on-failure"},
	}
	for s, want := range good {
		if p, err := ParseRestartPolicy(s); err != nil || p != want {
			t.Errorf("%q: %+v, %v", s, p, err)
		}
	}
	for _, s := range []string{"", "sometimes", "on-failure:-1", "on-failure:x", "always:2", "no:1", "On-Failure"} {
		if _, err := ParseRestartPolicy(s); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%q: %v", s, err)
		}
	}
}

func TestWantsRestart(t *testing.T) {
	code := func(c int) *int { return &c }
	cases := []struct {
		name string
		in   Instance
		want bool
	}{
		{"no policy", Instance{ExitCode: code(1)}, false},
		{"no", Instance{RestartPolicy: &RestartPolicy{Name: "no"}, ExitCode: code(1)}, false},
		{"always after 0", Instance{RestartPolicy: &RestartPolicy{Name: "always"}, ExitCode: code(0)}, true},
		{"always stopped by user", Instance{RestartPolicy: &RestartPolicy{Name: "always"}, StoppedByUser: true}, false},
		{"unless-stopped", Instance{RestartPolicy: &RestartPolicy{Name: "unless-stopped"}, ExitCode: code(0)}, true},
		{"on-failure after 0", Instance{RestartPolicy: &RestartPolicy{Name: "on-failure"}, ExitCode: code(0)}, false},
		{"on-failure after 1", Instance{RestartPolicy: &RestartPolicy{Name: "on-failure"}, ExitCode: code(1), RestartCount: 9}, true},
		{"on-failure:2 with 1 done", Instance{RestartPolicy: &RestartPolicy{Name: "on-failure", MaximumRetryCount: 2}, ExitCode: code(1), RestartCount: 1}, true},
		{"on-failure:2 with 2 done", Instance{RestartPolicy: &RestartPolicy{Name: "on-failure", MaximumRetryCount: 2}, ExitCode: code(1), RestartCount: 2}, false},
	}
	for _, c := range cases {
		if got := c.in.WantsRestart(); got != c.want {
			t.Errorf("%s: %v", c.name, got)
		}
	}
}

func TestBackoff(t *testing.T) {
	var b Backoff
	want := []time.Duration{100, 200, 400, 800, 1600}
	for i, w := range want {
		if got := b.Next(time.Second); got != w*time.Millisecond {
			t.Fatalf("restart %d: %v, want %v", i, got, w*time.Millisecond)
		}
	}
	for i := 0; i < 20; i++ {
		b.Next(0)
	}
	if got := b.Next(0); got != time.Minute {
		t.Fatalf("capped at %v", got)
	}
	if got := b.Next(10 * time.Second); got != 100*time.Millisecond {
		t.Fatalf("after a 10 s run: %v", got)
	}
}
