package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"

	"github.com/berth-dev/berth/internal/companion"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/regcli"
)

// The registry verbs (pull, push, login, logout) and run's pulls are
// berth-registry's work (internal/regcli says why): berth declares their
// flags from regcli, parses them, and executes the helper.

// registryVerb is the run of a registry verb with the flags v declares:
// it parses the command line, so help and a bad flag are berth's own,
// and then becomes berth-registry, which does the verb with the flags as
// parsed (and its terminal, signals and exit status).
func registryVerb(name string, v regcli.Verb) func(g *globals, args []string) error {
	return func(g *globals, args []string) error {
		fs := newFlags(name)
		v.Declare(fs)
		if err := parse(fs, args); err != nil {
			return err
		}
		path, err := registryHelper()
		if err != nil {
			return err
		}
		argv := append([]string{regcli.Binary, "--root", g.root, name}, regcli.Args(fs)...)
		return fmt.Errorf("%s: %w", path, syscall.Exec(path, argv, os.Environ()))
	}
}

// registryHelper is the path of berth-registry: next to berth, or in
// ../lib/berth from it, as berth-init.
func registryHelper() (string, error) {
	return companion.Find(regcli.Binary)
}

// resolveForRun finds the image run uses, pulling it first as policy
// says (Docker's --pull): "missing" pulls it when the store lacks it,
// "always" pulls it, "never" leaves it to the store. Cancelling ctx (the
// start's guard) stops a pull. An image the store has costs run nothing
// more than its lookup.
func resolveForRun(ctx context.Context, g *globals, s *image.Store, policy, ref string) (image.Image, error) {
	switch policy {
	case "always", "missing", "never":
	default:
		return image.Image{}, fmt.Errorf("--pull %q: want missing, always or never: %w", policy, errdefs.ErrInvalid)
	}
	if policy != "always" {
		img, err := s.Resolve(ref)
		if policy == "never" || !errors.Is(err, errdefs.ErrNotFound) {
			return img, err // found, or an error that run reports
		}
		pinned, perr := pullForRun(ctx, g, policy, ref)
		if errors.Is(perr, errNotAName) {
			return img, err // the store's error
		}
		return resolvePulled(s, pinned, perr)
	}
	pinned, err := pullForRun(ctx, g, policy, ref)
	return resolvePulled(s, pinned, err)
}

func resolvePulled(s *image.Store, pinned string, err error) (image.Image, error) {
	if err != nil {
		return image.Image{}, fmt.Errorf("pull %w", err)
	}
	return s.Resolve(pinned)
}

// errNotAName is pullForRun's error for a reference no registry could
// have.
var errNotAName = errors.New("not a registry's name")

// pullForRun pulls ref with berth-registry (regcli.RunPull), its progress
// on standard error, and returns the pinned reference of the image pulled.
// Cancelling ctx sends the helper SIGTERM, on which it stops and removes
// what it staged; it is killed if it has not ended within unwindGrace.
// It gets SIGTERM as well should berth die first (a signal abandons a
// start at once while it has no record).
func pullForRun(ctx context.Context, g *globals, policy, ref string) (string, error) {
	path, err := registryHelper()
	if err != nil {
		return "", fmt.Errorf("%s: %w", ref, err)
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, path, "--root", g.root, regcli.RunPull, policy, ref)
	cmd.Args[0] = regcli.Binary
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = unwindGrace
	// The parent death signal follows the thread that started the child.
	runtime.LockOSThread()
	err = cmd.Run()
	runtime.UnlockOSThread()
	line := strings.TrimSpace(out.String())
	var ee *exec.ExitError
	switch {
	case err == nil:
		return line, nil
	case errors.As(err, &ee) && ee.ExitCode() == regcli.ExitNotAName:
		return "", errNotAName
	case ctx.Err() != nil:
		return "", fmt.Errorf("%s: interrupted", ref)
	case line != "":
		return "", errors.New(line)
	}
	return "", fmt.Errorf("%s: %w", regcli.Binary, err)
}
