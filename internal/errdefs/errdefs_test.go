package errdefs

import (
	"errors"
	"fmt"
	"testing"
)

func TestClassRoundTrip(t *testing.T) {
	for _, c := range classes {
		sent := fmt.Errorf("image %q: %w", "x", c)
		name := ClassName(sent)
		if name != c.Error() {
			t.Errorf("ClassName(%v) = %q, want %q", sent, name, c.Error())
		}
		got := Decode(sent.Error(), name)
		if !errors.Is(got, c) || got.Error() != sent.Error() {
			t.Errorf("Decode(%q, %q) = %v, not the class %v", sent.Error(), name, got, c)
		}
	}
	// The control socket's spelling of earlier versions is this one.
	if !errors.Is(Decode("x", "not found"), ErrNotFound) || !errors.Is(Decode("x", "not supported"), ErrNotSupported) {
		t.Error("the names earlier owners send are not decoded")
	}
	if ClassName(errors.New("plain")) != "" {
		t.Error("an unclassed error has a class name")
	}
	plain := Decode("plain", "")
	for _, c := range classes {
		if errors.Is(plain, c) {
			t.Errorf("an unclassed error decodes as %v", c)
		}
	}
	if errors.Is(Decode("x", "bogus"), ErrInvalid) {
		t.Error("an unknown class name decodes to a class")
	}
}

func TestOneLine(t *testing.T) {
	if got := OneLine(errors.New("  first\nsecond\n")); got != "first; second" {
		t.Errorf("OneLine = %q", got)
	}
}
