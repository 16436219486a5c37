package instance

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
)

func newInstance(name string) *Instance {
	id := NewID()
	if name == "" {
		name = id[:12]
	}
	return &Instance{ID: id, Name: name, Status: Created, Created: time.Now()}
}

func TestStoreNamesAndLookup(t *testing.T) {
	st, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a := newInstance("web")
	if err := st.Create(a); err != nil {
		t.Fatal(err)
	}
	if err := st.Create(newInstance("web")); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("second instance named web: %v", err)
	}
	if err := st.Create(newInstance("-bad name")); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("bad name: %v", err)
	}
	for _, ref := range []string{"web", a.ID, a.ID[:6]} {
		got, err := st.Get(ref)
		if err != nil || got.ID != a.ID {
			t.Fatalf("Get(%q) = %v, %v", ref, got, err)
		}
	}
	if _, err := st.Get("nosuch"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Get(nosuch): %v", err)
	}
	if err := st.Remove(a.ID); err != nil {
		t.Fatal(err)
	}
	if err := st.Create(newInstance("web")); err != nil {
		t.Fatalf("name not released by Remove: %v", err)
	}
}

func TestStoreUpdateEnforcesStateMachine(t *testing.T) {
	st, _ := OpenStore(t.TempDir())
	in := newInstance("")
	if err := st.Create(in); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Update(in.ID, func(x *Instance) error { x.Status = Stopped; return nil }); err != nil {
		t.Fatal(err)
	}
	_, err := st.Update(in.ID, func(x *Instance) error { x.Status = Running; return nil })
	var te *TransitionError
	if !errors.As(err, &te) {
		t.Fatalf("stopped -> running: %v", err)
	}
}

func TestStoreConcurrentNameClaims(t *testing.T) {
	st, _ := OpenStore(t.TempDir())
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st.Create(newInstance("db")) == nil {
				mu.Lock()
				won++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if won != 1 {
		t.Fatalf("%d instances got the name db, want 1", won)
	}
}
