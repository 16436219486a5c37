package instance

import (
	"errors"
	"testing"

	"github.com/berth-dev/berth/internal/errdefs"
)

func TestTransitions(t *testing.T) {
	allowed := map[[2]Status]bool{
		{Created, Running}: true, {Created, Stopped}: true,
		{Running, Paused}: true, {Running, Stopped}: true,
		{Paused, Running}: true, {Paused, Stopped}: true,
		{Stopped, Created}: true,
	}
	all := []Status{Created, Running, Paused, Stopped}
	for _, from := range all {
		for _, to := range all {
			err := CanMove(from, to)
			if allowed[[2]Status{from, to}] != (err == nil) {
				t.Errorf("%s -> %s: got %v", from, to, err)
			}
			if err != nil && !errors.Is(err, errdefs.ErrConflict) {
				t.Errorf("%s -> %s: error %v is not a conflict", from, to, err)
			}
		}
	}
}
