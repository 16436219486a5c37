package main

import (
	"flag"
	"io"
	"slices"
	"testing"

	"github.com/berth-dev/berth/internal/regcli"
)

// What berth parses of a registry verb reaches berth-registry whole:
// regcli.Args of the user's command line (grouped letters, operands among
// flags, repeated lists) parses, with a plain flag.Parse, to the same
// flags and operands.
func TestRegistryArgsRoundTrip(t *testing.T) {
	var typed regcli.Pull
	fs := newFlags("pull")
	typed.Declare(fs)
	if err := parse(fs, []string{"--insecure-registry", "a:5000", "img:v1", "-q", "--platform=linux/arm64",
		"--insecure-registry=b", "--max-concurrent-downloads", "7"}); err != nil {
		t.Fatal(err)
	}
	args := regcli.Args(fs)
	var got regcli.Pull
	plain := flag.NewFlagSet("pull", flag.ContinueOnError)
	plain.SetOutput(io.Discard)
	got.Declare(plain)
	if err := plain.Parse(args); err != nil {
		t.Fatalf("%q: %v", args, err)
	}
	if !got.Quiet || got.Platform != "linux/arm64" || got.Jobs != 7 || !slices.Equal(got.Insecure, regcli.List{"a:5000", "b"}) ||
		!slices.Equal(plain.Args(), []string{"img:v1"}) {
		t.Fatalf("%q parsed to %+v %q", args, got, plain.Args())
	}
}
