package instance

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

// A log file holds one JSON object per chunk of output, in the order the
// monitor read them: {"stream":"stdout","time":"...","log":"text\n"}.
// Keeping the streams apart lets `logs` write stdout and stderr back to
// where they came from.
type logEntry struct {
	Stream string    `json:"stream"`
	Time   time.Time `json:"time"`
	Log    string    `json:"log"`
}

// LogWriter appends the output of one instance to its log file. It is safe
// for concurrent use by the stdout and stderr copiers.
type LogWriter struct {
	mu  sync.Mutex
	f   *os.File
	enc *json.Encoder
}

// CreateLog opens (creating) the log file at path for appending.
func CreateLog(path string) (*LogWriter, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	return &LogWriter{f: f, enc: json.NewEncoder(f)}, nil
}

// Copy reads r until EOF and logs what it reads as stream, line by line
// (a line longer than 64 KiB is split).
func (w *LogWriter) Copy(stream string, r io.Reader) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			w.mu.Lock()
			_ = w.enc.Encode(logEntry{Stream: stream, Time: time.Now().UTC(), Log: string(line)})
			w.mu.Unlock()
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// Close closes the file.
func (w *LogWriter) Close() error { return w.f.Close() }

// ReadLogs writes the entries of the log at path to stdout and stderr.
// With follow it keeps reading new entries until done reports true and
// the file has no more.
func ReadLogs(path string, stdout, stderr io.Writer, follow bool, done func() bool) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) && !follow {
		return nil
	} else if err != nil {
		return err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	var partial []byte
	for {
		chunk, err := br.ReadBytes('\n')
		partial = append(partial, chunk...)
		if err == nil {
			var e logEntry
			if json.Unmarshal(partial, &e) == nil {
				out := stdout
				if e.Stream == "stderr" {
					out = stderr
				}
				if _, err := io.WriteString(out, e.Log); err != nil {
					return err
				}
			}
			partial = partial[:0]
			continue
		}
		if !errors.Is(err, io.EOF) {
			return err
		}
		if !follow {
			return nil
		}
		if done() {
			// One more pass: the writer may have flushed after our last read.
			follow = false
			continue
		}
		time.Sleep(100 * time.Millisecond)
	}
}
