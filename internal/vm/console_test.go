package vm

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The console log keeps the last of what the guest printed, from a
// line's start, and never grows past its bound.
func TestConsoleLogBound(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	c, err := createConsoleLog(path, 4096)
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { c.drain(r); close(done) }()
	var all strings.Builder
	for i := range 3000 {
		line := fmt.Sprintf("[%8d] guest line %d\r\n", i, i)
		all.WriteString(line)
		if _, err := w.WriteString(line); err != nil {
			t.Fatal(err)
		}
		if i%500 == 0 {
			// One write longer than the bound: its last half is kept.
			w.WriteString(strings.Repeat("z", 10000) + "\n")
			all.WriteString(strings.Repeat("z", 10000) + "\n")
		}
	}
	w.Close()
	<-done
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 4096 || len(b) < 2048-64 {
		t.Errorf("console log holds %d bytes; want between 2 and 4 KiB", len(b))
	}
	if !strings.HasPrefix(string(b), "[") || !strings.HasSuffix(all.String(), string(b)) {
		t.Errorf("console log is not the tail of the console from a line's start:\n%q", b)
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("%s.tmp left behind: %v", path, err)
	}
}
