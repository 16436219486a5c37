package main

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// randPoolInfo is struct rand_pool_info: the bits to credit, the length,
// then the bytes.
func TestRandPoolInfo(t *testing.T) {
	b := bytes.Repeat([]byte{0xa5}, 32)
	p := randPoolInfo(b)
	if len(p) != 8+32 {
		t.Fatalf("length %d, want 40", len(p))
	}
	if bits, size := binary.NativeEndian.Uint32(p[0:4]), binary.NativeEndian.Uint32(p[4:8]); bits != 256 || size != 32 {
		t.Errorf("entropy_count %d, buf_size %d; want 256, 32", bits, size)
	}
	if !bytes.Equal(p[8:], b) {
		t.Errorf("buf %x, want %x", p[8:], b)
	}
}
