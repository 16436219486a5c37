package main

import (
	"errors"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
)

func TestGracePeriod(t *testing.T) {
	for secs, want := range map[int]time.Duration{0: 0, 10: 10 * time.Second, -1: noLimit, 1 << 62: noLimit} {
		if got, err := gracePeriod(secs); err != nil || got != want {
			t.Errorf("gracePeriod(%d) = %v, %v; want %v", secs, got, err, want)
		}
	}
	for _, secs := range []int{-2, -5} {
		if _, err := gracePeriod(secs); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("gracePeriod(%d): %v, want an invalid-input error", secs, err)
		}
	}
}
