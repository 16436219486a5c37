package instance

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/errdefs"
)

func TestParseLogOpts(t *testing.T) {
	for _, tc := range []struct {
		opts []string
		want LogConfig
	}{
		{nil, DefaultLogConfig},
		{[]string{"max-size=10m"}, LogConfig{MaxSize: 10 << 20, MaxFiles: 5}},
		{[]string{"max-file=3"}, LogConfig{MaxSize: 20 << 20, MaxFiles: 3}},
		{[]string{"max-size=1k", "max-file=1"}, LogConfig{MaxSize: 1 << 10, MaxFiles: 1}},
		{[]string{"max-size=2m,max-file=2"}, LogConfig{MaxSize: 2 << 20, MaxFiles: 2}},
	} {
		got, err := ParseLogOpts(tc.opts)
		if err != nil || got != tc.want {
			t.Errorf("ParseLogOpts(%q) = %+v, %v; want %+v", tc.opts, got, err, tc.want)
		}
	}
	for _, bad := range []string{"max-size=", "max-size=ten", "max-size=-1", "max-size=0", "max-file=0", "max-file=x", "max-file=-2", "compress=true", "max-size", "=1"} {
		_, err := ParseLogOpts([]string{bad})
		if !errors.Is(err, errdefs.ErrInvalid) || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseLogOpts(%q): err = %v; want one line, invalid", bad, err)
		}
	}
}

// copyLines writes lines through a pipe into w as a workload would.
func copyLines(w *LogWriter, stream string, lines []string) {
	r, pw := io.Pipe()
	done := make(chan struct{})
	go func() { w.Copy(stream, r); close(done) }()
	for _, l := range lines {
		pw.Write([]byte(l))
	}
	pw.Close()
	<-done
}

func readAll(t *testing.T, path string) (string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	if err := ReadLogs(path, &out, &errb, false, nil); err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String()
}

func TestLogRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.json")
	cfg := LogConfig{MaxSize: 4 << 10, MaxFiles: 3}
	w, err := CreateLog(path, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for i := range 2000 {
		lines = append(lines, fmt.Sprintf("line %05d\n", i))
	}
	copyLines(w, "stdout", lines)
	w.Close()
	names := logFiles(path)
	if len(names) != cfg.MaxFiles {
		t.Errorf("files %q; want %d", names, cfg.MaxFiles)
	}
	for _, n := range names {
		if st, err := os.Stat(n); err != nil || st.Size() > cfg.MaxSize {
			t.Errorf("%s: %v, %d bytes; want at most %d", n, err, st.Size(), cfg.MaxSize)
		}
	}
	out, _ := readAll(t, path)
	if !strings.HasSuffix(out, "line 01999\n") {
		t.Errorf("logs end %q; want the last line", out[max(0, len(out)-40):])
	}
	// What is kept is a contiguous tail, in order.
	if i := strings.Index(strings.Join(lines, ""), out); out == "" || i < 0 || i+len(out) != len(strings.Join(lines, "")) {
		t.Errorf("logs (%d bytes) are not the tail of what was written", len(out))
	}
}

func TestLogRotationOneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.json")
	w, err := CreateLog(path, LogConfig{MaxSize: 1 << 10, MaxFiles: 1})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for i := range 500 {
		lines = append(lines, fmt.Sprintf("line %05d\n", i))
	}
	copyLines(w, "stdout", lines)
	w.Close()
	if names := logFiles(path); len(names) != 1 {
		t.Errorf("files %q; want only the log", names)
	}
	if out, _ := readAll(t, path); !strings.HasSuffix(out, "line 00499\n") || len(out) > 1<<10 {
		t.Errorf("logs %q; want the last lines, under 1 KiB", out)
	}
}

// Output that is not text comes back as it was written, at no more than
// base64's cost plus a record's frame.
func TestLogBinary(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.json")
	w, err := CreateLog(path, LogConfig{})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 1<<20)
	rand.Read(data)
	copyLines(w, "stderr", []string{string(data)})
	text := strings.Repeat("<tag> & \"quoted\" text line\n", 40000)
	copyLines(w, "stdout", []string{text})
	w.Close()
	out, errOut := readAll(t, path)
	if errOut != string(data) {
		t.Errorf("stderr: %d bytes back, equal %v; want the %d written", len(errOut), errOut == string(data), len(data))
	}
	if out != text {
		t.Errorf("stdout: %d bytes back; want the %d written", len(out), len(text))
	}
	st, _ := os.Stat(path)
	if written := int64(len(data) + len(text)); st.Size() > written*3/2 {
		t.Errorf("log takes %d bytes for %d of output", st.Size(), written)
	}
}

// logs -f follows the log across rotations, to its end.
func TestLogFollowRotation(t *testing.T) {
	for _, files := range []int{1, 1000} {
		t.Run(fmt.Sprintf("max-file=%d", files), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log.json")
			w, err := CreateLog(path, LogConfig{MaxSize: 200, MaxFiles: files})
			if err != nil {
				t.Fatal(err)
			}
			r, pw := io.Pipe()
			copied := make(chan struct{})
			go func() { w.Copy("stdout", r); close(copied) }()
			var mu sync.Mutex
			var out bytes.Buffer
			locked := lockedWriter{&mu, &out}
			ended := make(chan error, 1)
			go func() {
				ended <- ReadLogs(path, locked, io.Discard, true, func() bool {
					select {
					case <-copied:
						return true
					default:
						return false
					}
				})
			}()
			var want string
			for i := range 20 {
				line := fmt.Sprintf("%s %02d\n", strings.Repeat("x", 100), i)
				want += line
				pw.Write([]byte(line))
				// Each line rotates the log: the reader has to move on.
				deadline := time.Now().Add(10 * time.Second)
				for {
					mu.Lock()
					got := out.String()
					mu.Unlock()
					if got == want {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("after line %d, logs -f shows %q", i, got)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			pw.Close()
			if err := <-ended; err != nil {
				t.Fatal(err)
			}
			w.Close()
			if out.String() != want {
				t.Errorf("logs -f shows %q; want %q", out.String(), want)
			}
		})
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
