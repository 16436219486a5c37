package image

import (
	"bytes"
	"context"
	"slices"
	"testing"

	"github.com/berth-dev/berth/internal/testutil"
)

// TestSaveLoad saves two images in both formats and loads each archive
// into another store, where they come out with their names and IDs.
func TestSaveLoad(t *testing.T) {
	testutil.NeedRoot(t, "layer ownership (lchown) in snapshots")
	ctx := context.Background()
	s := newStore(t)
	a, err := s.Import(ctx, busyboxLayout(t, "localhost/bb:1"), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Tag("localhost/bb:1", "other/bb:2"); err != nil {
		t.Fatal(err)
	}
	for _, docker := range []bool{true, false} {
		var buf bytes.Buffer
		if err := s.Save(ctx, &buf, []string{"localhost/bb:1", "other/bb:2"}, docker); err != nil {
			t.Fatal(err)
		}
		s2 := newStore(t)
		imgs, err := s2.Load(ctx, bytes.NewReader(buf.Bytes()))
		if err != nil {
			t.Fatalf("load (docker %v): %v", docker, err)
		}
		if len(imgs) != 1 || imgs[0].ID != a.ID || !slices.Equal(imgs[0].Names, []string{"localhost/bb:1", "other/bb:2"}) {
			t.Fatalf("load (docker %v): %+v", docker, imgs)
		}
		if _, err := s2.Layers(ctx, imgs[0]); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Save(ctx, &bytes.Buffer{}, []string{"nothing:here"}, true); err == nil {
		t.Fatal("save of a missing image succeeded")
	}
}

// TestLoadRefusesGarbage refuses what is not an image archive, leaving
// the store empty.
func TestLoadRefusesGarbage(t *testing.T) {
	s := newStore(t)
	for _, in := range [][]byte{nil, []byte("not a tar"), bytes.Repeat([]byte{0}, 2048)} {
		if _, err := s.Load(context.Background(), bytes.NewReader(in)); err == nil {
			t.Fatalf("load of %q succeeded", in)
		}
	}
	assertEmpty(t, s)
}
