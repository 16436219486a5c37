package registry

import (
	"errors"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// chunk is the size of the buffers a blob is received into and
	// written from.
	chunk = 1 << 20
	// inFlight is how many chunks of one blob may wait for the disk
	// while the next is received.
	inFlight = 2
	// align is what O_DIRECT asks of buffers, offsets and lengths.
	align = 4096
)

// blobFile is a partial blob on disk, received into chunk-sized buffers.
// Where the file system allows it, a full buffer goes to disk with
// O_DIRECT, written by a goroutine of its own while the next is received:
// the pull does not read the blob back, so it need not pass through the
// page cache, which saves a copy of every byte and leaves the sync at the
// end almost nothing to write. Elsewhere buffers are written as usual,
// and their writeback started at once.
type blobFile struct {
	f      *os.File
	direct bool
	cur    []byte // the buffer being filled
	off    int64  // where cur goes in the file
	free   chan []byte
	queue  chan pending
	done   chan error // the writer's first error, once the queue is closed
}

type pending struct {
	buf []byte
	off int64
}

// createBlobFile creates (or truncates) the file p.
func createBlobFile(p string) (*blobFile, error) {
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC|unix.O_DIRECT, 0o600)
	direct := err == nil
	if err != nil {
		f, err = os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	}
	if err != nil {
		return nil, err
	}
	b := &blobFile{f: f, direct: direct, free: make(chan []byte, inFlight+1)}
	for range inFlight + 1 {
		b.free <- alignedBuffer()
	}
	b.cur = <-b.free
	if direct {
		b.queue, b.done = make(chan pending, inFlight), make(chan error, 1)
		go b.writer()
	}
	return b, nil
}

// alignedBuffer is an empty buffer of capacity chunk that starts at a
// multiple of align.
func alignedBuffer() []byte {
	raw := make([]byte, chunk+align)
	skip := (align - int(uintptr(unsafe.Pointer(&raw[0]))%align)) % align
	return raw[skip : skip : skip+chunk]
}

// space is where the next bytes are to be received; never empty.
func (b *blobFile) space() []byte { return b.cur[len(b.cur):cap(b.cur)] }

// filled takes n bytes received into space and writes the buffer out
// once it is full.
func (b *blobFile) filled(n int) error {
	b.cur = b.cur[:len(b.cur)+n]
	if len(b.cur) < cap(b.cur) {
		return nil
	}
	if !b.direct {
		if _, err := b.f.WriteAt(b.cur, b.off); err != nil {
			return err
		}
		_ = unix.SyncFileRange(int(b.f.Fd()), b.off, int64(len(b.cur)), unix.SYNC_FILE_RANGE_WRITE)
		b.off += int64(len(b.cur))
		b.cur = b.cur[:0]
		return nil
	}
	select {
	case err := <-b.done: // the writer failed and stopped
		b.done <- err
		return err
	case b.queue <- pending{b.cur, b.off}:
	}
	b.off += int64(len(b.cur))
	b.cur = (<-b.free)[:0]
	return nil
}

// writer writes the queued buffers with O_DIRECT and frees them.
func (b *blobFile) writer() {
	var failed error
	for p := range b.queue {
		if failed == nil {
			_, failed = b.f.WriteAt(p.buf, p.off)
			if errors.Is(failed, unix.EINVAL) {
				// Taken at open, refused at write: write as usual.
				if failed = clearDirect(b.f); failed == nil {
					_, failed = b.f.WriteAt(p.buf, p.off)
				}
			}
		}
		b.free <- p.buf
		if failed != nil {
			b.done <- failed
			for p := range b.queue {
				b.free <- p.buf
			}
			return
		}
	}
	b.done <- nil
}

// finish writes what is left and syncs the file.
func (b *blobFile) finish() error {
	if b.direct {
		close(b.queue)
		b.direct = false
		if err := <-b.done; err != nil {
			return err
		}
		// The tail is not a whole number of blocks: write it as usual.
		if err := clearDirect(b.f); err != nil {
			return err
		}
	}
	if len(b.cur) > 0 {
		if _, err := b.f.WriteAt(b.cur, b.off); err != nil {
			return err
		}
		b.off += int64(len(b.cur))
		b.cur = b.cur[:0]
	}
	return unix.Fdatasync(int(b.f.Fd()))
}

// close stops the writer, if it still runs, and closes the file.
func (b *blobFile) close() error {
	if b.direct {
		close(b.queue)
		b.direct = false
		<-b.done
	}
	return b.f.Close()
}

// clearDirect makes f's writes go through the page cache again.
func clearDirect(f *os.File) error {
	flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err == nil {
		_, err = unix.FcntlInt(f.Fd(), unix.F_SETFL, flags&^unix.O_DIRECT)
	}
	return err
}
