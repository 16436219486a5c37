package instance

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/berth-dev/berth/internal/errdefs"
)

// A log file holds one JSON object per record, in the order the monitor
// read them: {"stream":"stdout","time":"...","log":"text\n"}. A record
// holds the whole lines one read of the workload's output returned (they
// arrived at the same time), or up to maxRecord bytes of a longer line.
// Output that is not UTF-8 text, or that JSON would escape at a greater
// cost than base64's, is kept as "bytes" (base64) instead of "log": it
// comes back from `logs` as it was written. Keeping the streams apart
// lets `logs` write stdout and stderr back to where they came from.
type logEntry struct {
	Stream string    `json:"stream"`
	Time   time.Time `json:"time"`
	Log    string    `json:"log,omitempty"`
	Bytes  []byte    `json:"bytes,omitempty"`
}

// maxRecord bounds the output one record holds.
const maxRecord = 64 << 10

// LogConfig bounds an instance's log as Docker's --log-opt max-size and
// max-file do: the log file is rotated (log.json to log.json.1, .1 to .2,
// ...) before a record would take it past MaxSize, and MaxFiles files are
// kept, the current one included.
type LogConfig struct {
	MaxSize  int64 `json:"max_size"`
	MaxFiles int   `json:"max_files"`
}

// DefaultLogConfig is the bound of a log unless --log-opt says otherwise:
// Docker's json-file keeps everything, its local driver 5 files of 20 MB;
// berth keeps 5 files of 20 MiB.
var DefaultLogConfig = LogConfig{MaxSize: 20 << 20, MaxFiles: 5}

// ParseLogOpts reads --log-opt K=V options (each may also hold several,
// comma-separated) over DefaultLogConfig: max-size (a size such as 10m)
// and max-file (a count of at least 1).
func ParseLogOpts(opts []string) (LogConfig, error) {
	c := DefaultLogConfig
	for _, opt := range opts {
		for _, kv := range strings.Split(opt, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return c, fmt.Errorf("--log-opt %q: want KEY=VALUE: %w", kv, errdefs.ErrInvalid)
			}
			switch k {
			case "max-size":
				n, err := ParseBytes(v)
				if err != nil {
					return c, fmt.Errorf("--log-opt max-size: %w", err)
				}
				c.MaxSize = n
			case "max-file":
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 {
					return c, fmt.Errorf("--log-opt max-file=%q: want a whole number of at least 1: %w", v, errdefs.ErrInvalid)
				}
				c.MaxFiles = n
			default:
				return c, fmt.Errorf("--log-opt %q: unknown option; want max-size or max-file: %w", k, errdefs.ErrInvalid)
			}
		}
	}
	return c, nil
}

// LogWriter appends the output of one instance to its log, rotating the
// log's files as its LogConfig says. It is safe for concurrent use by the
// stdout and stderr copiers.
type LogWriter struct {
	path string
	cfg  LogConfig

	mu   sync.Mutex
	f    *os.File
	size int64
	buf  bytes.Buffer
	enc  *json.Encoder
}

// CreateLog opens (creating) the log file at path for appending; cfg
// bounds it (a zero MaxSize: unbounded).
func CreateLog(path string, cfg LogConfig) (*LogWriter, error) {
	w := &LogWriter{path: path, cfg: cfg}
	if err := w.open(); err != nil {
		return nil, err
	}
	w.enc = json.NewEncoder(&w.buf)
	w.enc.SetEscapeHTML(false)
	return w, nil
}

func (w *LogWriter) open() error {
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	w.f, w.size = f, st.Size()
	return nil
}

// Copy reads r until it ends and logs what it reads as stream: the
// complete lines of each read as one record; a line is cut only at the
// record's bound and where the stream ends. A record holds maxRecord
// bytes at most, and half of MaxSize, so that it fits in a file (base64
// takes 4/3 of it).
func (w *LogWriter) Copy(stream string, r io.Reader) {
	size := int64(maxRecord)
	if half := w.cfg.MaxSize / 2; half > 0 && half < size {
		size = max(half, 256)
	}
	buf := make([]byte, size)
	n := 0
	for {
		m, err := r.Read(buf[n:])
		n += m
		end := bytes.LastIndexByte(buf[:n], '\n') + 1
		if err != nil || (end == 0 && n == len(buf)) {
			end = n
		}
		if end > 0 {
			w.write(stream, buf[:end])
			n = copy(buf, buf[end:n])
		}
		if err != nil {
			return
		}
	}
}

// write logs p as one record of stream.
func (w *LogWriter) write(stream string, p []byte) {
	e := logEntry{Stream: stream, Time: time.Now().UTC()}
	if textual(p) {
		e.Log = string(p)
	} else {
		e.Bytes = p
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Reset()
	if w.enc.Encode(e) != nil {
		return
	}
	if w.cfg.MaxSize > 0 && w.size > 0 && w.size+int64(w.buf.Len()) > w.cfg.MaxSize {
		w.rotate()
	}
	n, _ := w.f.Write(w.buf.Bytes())
	w.size += int64(n)
}

// textual says whether p is UTF-8 that JSON escapes at no greater cost
// than base64 encodes it (control characters take six bytes as \u00XX).
func textual(p []byte) bool {
	if !utf8.Valid(p) {
		return false
	}
	escaped := len(p)
	for _, c := range p {
		switch {
		case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t':
			escaped++
		case c < 0x20:
			escaped += 5
		}
	}
	return escaped <= (len(p)+2)/3*4
}

// rotate moves the log's files up one number, the oldest out, and starts
// a new current file. Should that fail, the current file stays in use.
func (w *LogWriter) rotate() {
	if w.cfg.MaxFiles <= 1 {
		if err := os.Remove(w.path); err != nil {
			return
		}
	} else {
		for i := w.cfg.MaxFiles - 1; i > 1; i-- {
			_ = os.Rename(rotatedLog(w.path, i-1), rotatedLog(w.path, i))
		}
		if err := os.Rename(w.path, rotatedLog(w.path, 1)); err != nil {
			return
		}
	}
	old := w.f
	if err := w.open(); err != nil {
		w.f = old // written on under its new name until a rotation works
		return
	}
	old.Close()
}

// Close closes the current file.
func (w *LogWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.f.Close()
}

// rotatedLog is the name of the log file i rotations old.
func rotatedLog(path string, i int) string { return path + "." + strconv.Itoa(i) }

// logFiles lists the files of the log at path, oldest first: path.N ...
// path.1, then path itself. Numbers need not be contiguous (a monitor
// killed while it rotated).
func logFiles(path string) []string {
	type numbered struct {
		n    int
		name string
	}
	var old []numbered
	matches, _ := filepath.Glob(globEscape(path) + ".*")
	for _, m := range matches {
		n, err := strconv.Atoi(strings.TrimPrefix(m, path+"."))
		if err == nil && n > 0 {
			old = append(old, numbered{n, m})
		}
	}
	slices.SortFunc(old, func(a, b numbered) int { return b.n - a.n })
	var names []string
	for _, o := range old {
		names = append(names, o.name)
	}
	if _, err := os.Lstat(path); err == nil {
		names = append(names, path)
	}
	return names
}

// globEscape quotes the characters filepath.Glob treats specially.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// nextLog opens the log file that follows cur (nil: the oldest), or
// returns nil when cur is the newest. A rotation between the listing and
// the open shows as the open file being cur again: then it looks again.
func nextLog(path string, cur *os.File) *os.File {
	var curSt os.FileInfo
	if cur != nil {
		var err error
		if curSt, err = cur.Stat(); err != nil {
			return nil
		}
	}
	for range 10 {
		names := logFiles(path)
		next := 0 // cur gone (rotated out): every file is newer
		if cur != nil {
			next = -1
			for i, name := range names {
				if st, err := os.Stat(name); err == nil && os.SameFile(st, curSt) {
					next = i + 1
					break
				}
			}
			if next < 0 {
				if linked(cur) {
					// Renamed while we listed (a rotation moves every
					// file up one): list again.
					continue
				}
				next = 0
			}
		}
		if next >= len(names) {
			return nil
		}
		f, err := os.Open(names[next])
		if err != nil {
			continue
		}
		if st, err := f.Stat(); err == nil && (curSt == nil || !os.SameFile(st, curSt)) {
			return f
		}
		f.Close()
	}
	return nil
}

// linked reports whether f still has a name in the file system.
func linked(f *os.File) bool {
	st, err := f.Stat()
	if err != nil {
		return false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	return !ok || sys.Nlink > 0
}

// ReadLogs writes the entries of the log at path, its rotated files
// first, to stdout and stderr. With follow it keeps reading new entries,
// across rotations, until done reports true and the log has no more.
func ReadLogs(path string, stdout, stderr io.Writer, follow bool, done func() bool) error {
	var cur *os.File
	defer func() {
		if cur != nil {
			cur.Close()
		}
	}()
	var br *bufio.Reader
	var partial []byte
	// drain writes out the entries of cur up to its end.
	drain := func() error {
		for cur != nil {
			chunk, err := br.ReadBytes('\n')
			partial = append(partial, chunk...)
			if err != nil {
				if !errors.Is(err, io.EOF) {
					return err
				}
				return nil
			}
			var e logEntry
			if json.Unmarshal(partial, &e) == nil {
				out := stdout
				if e.Stream == "stderr" {
					out = stderr
				}
				var werr error
				if e.Bytes != nil {
					_, werr = out.Write(e.Bytes)
				} else {
					_, werr = io.WriteString(out, e.Log)
				}
				if werr != nil {
					return werr
				}
			}
			partial = partial[:0]
		}
		return nil
	}
	for {
		if err := drain(); err != nil {
			return err
		}
		if next := nextLog(path, cur); next != nil {
			if cur != nil {
				// The writer wrote its last to cur before it made the
				// next file: what came after our read reached its end
				// is read now, or it would be skipped.
				if err := drain(); err != nil {
					next.Close()
					return err
				}
				cur.Close()
			}
			// What a killed writer left of its last record is dropped.
			cur, partial = next, partial[:0]
			if br == nil {
				br = bufio.NewReaderSize(cur, 256<<10)
			} else {
				br.Reset(cur)
			}
			continue
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
