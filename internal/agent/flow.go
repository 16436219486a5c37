package agent

import (
	"fmt"
	"io"
	"sync"

	"github.com/berth-dev/berth/internal/errdefs"
)

// wire serialises frame writes on the connection: one frame is written
// whole before the next starts.
type wire struct {
	mu  sync.Mutex
	w   io.Writer
	err error
}

// send writes one frame; after the first write error every send fails
// with it.
func (w *wire) send(typ msgType, stream uint32, payload []byte) error {
	b := encodeFrame(typ, stream, payload)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if _, err := w.w.Write(b); err != nil {
		w.err = fmt.Errorf("agent connection: write %v: %w", typ, err)
		return w.err
	}
	return nil
}

func (w *wire) sendJSON(typ msgType, stream uint32, v any) error {
	return w.send(typ, stream, mustJSON(v))
}

func (w *wire) credit(stream uint32, n int) error {
	return w.sendJSON(msgCredit, stream, creditMsg{Bytes: n})
}

// window is the sending side of a credit window: how many more bytes of
// data the peer is ready to take on one stream.
type window struct {
	mu     sync.Mutex
	cond   *sync.Cond
	avail  int
	closed bool
}

func newWindow() *window {
	w := &window{avail: Window}
	w.cond = sync.NewCond(&w.mu)
	return w
}

// take waits until some credit is available and takes up to max bytes of
// it; it fails once the window is closed.
func (w *window) take(max int) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.avail == 0 && !w.closed {
		w.cond.Wait()
	}
	if w.closed {
		return 0, io.ErrClosedPipe
	}
	n := min(max, w.avail)
	w.avail -= n
	return n, nil
}

// give returns credit the peer granted. More credit than Window in flight
// is the peer's protocol error.
func (w *window) give(n int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n < 0 || w.avail+n > Window {
		return fmt.Errorf("agent protocol: credit of %d bytes overflows the window: %w", n, errdefs.ErrInvalid)
	}
	w.avail += n
	w.cond.Broadcast()
	return nil
}

func (w *window) close() {
	w.mu.Lock()
	w.closed = true
	w.cond.Broadcast()
	w.mu.Unlock()
}

// sendData sends p as data frames of type typ on stream, taking credit
// from win for every byte.
func sendData(wr *wire, win *window, typ msgType, stream uint32, p []byte) error {
	for len(p) > 0 {
		n, err := win.take(min(len(p), chunkSize))
		if err != nil {
			return err
		}
		if err := wr.send(typ, stream, p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// item is one message queued for a stream's consumer.
type item struct {
	typ  msgType
	data []byte
	exit ExitStatus
}

// queue is the receiving side of a credit window: frames the read loop
// received and the stream's consumer has not taken yet. The read loop
// never blocks on it; its size is bounded by Window because the peer
// respects credit.
type queue struct {
	mu     sync.Mutex
	cond   *sync.Cond
	items  []item
	bytes  int
	err    error // set by close; returned by pop once the queue is empty
	closed bool
}

func newQueue() *queue {
	q := &queue{}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// push queues it; data beyond the window is the peer's protocol error.
func (q *queue) push(it item) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil // late frame for a finished stream
	}
	q.bytes += len(it.data)
	if q.bytes > Window {
		return fmt.Errorf("agent protocol: peer sent %d bytes beyond its credit window: %w", q.bytes-Window, errdefs.ErrInvalid)
	}
	q.items = append(q.items, it)
	q.cond.Broadcast()
	return nil
}

// pop waits for the next item; after close it drains what is queued and
// then returns the close error.
func (q *queue) pop() (item, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) == 0 && !q.closed {
		q.cond.Wait()
	}
	if len(q.items) == 0 {
		return item{}, q.err
	}
	it := q.items[0]
	q.items[0] = item{}
	q.items = q.items[1:]
	q.bytes -= len(it.data)
	return it, nil
}

// close ends the queue with err (io.EOF for a normal end); queued items
// are still delivered.
func (q *queue) close(err error) {
	q.mu.Lock()
	if !q.closed {
		q.closed, q.err = true, err
	}
	q.cond.Broadcast()
	q.mu.Unlock()
}
