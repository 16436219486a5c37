package main

import (
	"bytes"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/registry"
)

// On a pipe the display prints its preface once something happens, then
// a line per change of a layer's status, and "Pull complete" once stored.
func TestPullDisplayPlain(t *testing.T) {
	var out bytes.Buffer
	d := newLayerDisplay(&out, "Pull complete")
	d.preface = []string{"v1: Pulling from app"}
	a, b := digest.FromString("a"), digest.FromString("b")
	for _, e := range []registry.Event{
		{Layer: a, Status: registry.Waiting, Total: 10},
		{Layer: b, Status: registry.Exists, Current: 5, Total: 5},
		{Layer: a, Status: registry.Downloading, Current: 4, Total: 10},
		{Layer: a, Status: registry.Downloading, Current: 8, Total: 10},
		{Layer: a, Status: registry.Verifying, Current: 10, Total: 10},
		{Layer: a, Status: registry.Done, Current: 10, Total: 10},
	} {
		d.update(e.Layer, layerState{status: e.Status.String(), done: e.Status == registry.Done})
	}
	d.finish(true)
	sa, sb := shortDigest(a), shortDigest(b)
	want := strings.Join([]string{"v1: Pulling from app", sa + ": Waiting", sb + ": Already exists", sa + ": Downloading",
		sa + ": Verifying Checksum", sa + ": Download complete", sa + ": Pull complete", ""}, "\n")
	if out.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out.String(), want)
	}
}

// A pull that fails before any layer prints nothing but its error.
func TestPullDisplayFailsQuietly(t *testing.T) {
	var out bytes.Buffer
	d := newLayerDisplay(&out, "Pull complete")
	d.preface = []string{"Unable to find image 'x:latest' locally", "latest: Pulling from library/x"}
	d.finish(false)
	if out.Len() != 0 {
		t.Fatalf("printed %q", out.String())
	}
}

func TestLayerLineBar(t *testing.T) {
	line := layerLine(digest.FromString("a"), layerState{status: "Downloading", moving: true, current: 500, total: 1000})
	if !strings.Contains(line, "Downloading [====================>                   ] 500B/1kB") {
		t.Fatalf("line %q", line)
	}
}
