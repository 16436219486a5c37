package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/term"

	"github.com/berth-dev/berth/internal/units"
)

// layerState is where one layer of a pull or push stands.
type layerState struct {
	status         string // "Downloading", "Pushed", ...
	current, total int64
	moving         bool // bytes are moving: a terminal shows a bar
	done           bool // the layer's transfer is over
}

// layerDisplay shows a pull's or push's progress as Docker does: on a
// terminal one line per layer, redrawn in place; elsewhere a line per
// change of a layer's status.
type layerDisplay struct {
	w   io.Writer
	tty bool
	// final replaces the status of done layers once the whole image is
	// through ("Pull complete"), or "".
	final string

	mu     sync.Mutex
	order  []digest.Digest
	states map[digest.Digest]layerState
	drawn  int // lines drawn on the terminal
	last   time.Time
	// complete is set once the image is through.
	complete bool
	// preface is printed before the first layer's line, or at the end.
	preface []string
}

func newLayerDisplay(w io.Writer, final string) *layerDisplay {
	f, ok := w.(*os.File)
	return &layerDisplay{w: w, tty: ok && term.IsTerminal(int(f.Fd())), final: final, states: map[digest.Digest]layerState{}}
}

// flushPreface prints the preface if it is still due; the caller holds mu.
func (d *layerDisplay) flushPreface() {
	for _, l := range d.preface {
		fmt.Fprintln(d.w, l)
	}
	d.preface = nil
}

func (d *layerDisplay) update(layer digest.Digest, st layerState) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.flushPreface()
	prev, seen := d.states[layer]
	if !seen {
		d.order = append(d.order, layer)
	}
	d.states[layer] = st
	changed := !seen || prev.status != st.status
	if !d.tty {
		if changed {
			fmt.Fprintf(d.w, "%s: %s\n", shortDigest(layer), st.status)
		}
		return
	}
	if changed || time.Since(d.last) > 100*time.Millisecond {
		d.draw()
	}
}

// finish draws the last state: once the image is through, every layer
// done says final.
func (d *layerDisplay) finish(through bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.complete = through
	if through {
		d.flushPreface()
	}
	switch {
	case d.tty && len(d.order) > 0:
		d.draw()
	case through && d.final != "":
		for _, l := range d.order {
			if d.states[l].done {
				fmt.Fprintf(d.w, "%s: %s\n", shortDigest(l), d.final)
			}
		}
	}
}

// draw rewrites every layer's line; the caller holds mu.
func (d *layerDisplay) draw() {
	var b strings.Builder
	if d.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", d.drawn)
	}
	for _, l := range d.order {
		line := layerLine(l, d.states[l])
		if d.complete && d.final != "" && d.states[l].done {
			line = shortDigest(l) + ": " + d.final
		}
		b.WriteString("\x1b[2K" + line + "\n")
	}
	d.drawn = len(d.order)
	d.last = time.Now()
	io.WriteString(d.w, b.String())
}

// layerLine is one layer's line on a terminal.
func layerLine(l digest.Digest, st layerState) string {
	line := shortDigest(l) + ": " + st.status
	if st.moving && st.total > 0 {
		const width = 40
		n := int(min(st.current, st.total) * width / st.total)
		bar := strings.Repeat("=", n)
		if n < width {
			bar += ">" + strings.Repeat(" ", width-n-1)
		}
		line = fmt.Sprintf("%s [%s] %s/%s", line, bar, units.HumanSize(st.current), units.HumanSize(st.total))
	}
	return line
}

func shortDigest(d digest.Digest) string {
	if e := d.Encoded(); len(e) >= 12 {
		return e[:12]
	}
	return d.String()
}
