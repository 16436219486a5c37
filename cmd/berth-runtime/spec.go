package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/berth-dev/berth/internal/container"
	"github.com/berth-dev/berth/internal/errdefs"
)

// cmdSpec: write a default config.json (runc's: a terminal running sh
// over ./rootfs) into the bundle directory.
func cmdSpec(_ context.Context, _ *globals, args []string) error {
	flags := newFlags("spec")
	bundle := flags.String("bundle", ".", "bundle directory")
	flags.StringVar(bundle, "b", ".", "bundle directory")
	rootless := flags.Bool("rootless", false, "rootless spec (not supported)")
	if err := flags.Parse(args); err != nil {
		return fmt.Errorf("%v: %w", err, errdefs.ErrInvalid)
	}
	if flags.NArg() != 0 {
		return fmt.Errorf("spec takes no arguments: %w", errdefs.ErrInvalid)
	}
	if *rootless {
		return fmt.Errorf("--rootless: rootless containers are not supported: %w", errdefs.ErrNotSupported)
	}
	path := filepath.Join(*bundle, "config.json")
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("%s already exists; remove it first: %w", path, errdefs.ErrConflict)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	spec := container.DefaultSpec("berth")
	spec.Process.Terminal = true
	spec.Root.Path = "rootfs"
	spec.Root.Readonly = true
	b, err := json.MarshalIndent(spec, "", "\t")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
