package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"golang.org/x/term"

	"github.com/berth-dev/berth/internal/errdefs"
)

func cmdImageSave(g *globals, args []string) error {
	fs := newFlags("image save")
	out := fs.String("o", "", "write to `FILE` instead of standard output")
	fs.StringVar(out, "output", "", "write to `FILE` instead of standard output")
	format := fs.String("format", "docker-archive", "the archive's `FORMAT`: docker-archive (as docker save writes it) or oci (an OCI archive)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("want at least one image: %w", errdefs.ErrInvalid)
	}
	var docker bool
	switch *format {
	case "docker-archive", "docker":
		docker = true
	case "oci", "oci-archive":
	default:
		return fmt.Errorf("--format %q: want docker-archive or oci: %w", *format, errdefs.ErrInvalid)
	}
	if *out == "" && term.IsTerminal(int(os.Stdout.Fd())) {
		return fmt.Errorf("refusing to write an archive to a terminal: use -o FILE or redirect the output: %w", errdefs.ErrInvalid)
	}
	s, err := g.imageStore()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *out == "" {
		w := bufio.NewWriterSize(os.Stdout, 1<<20)
		if err := s.Save(ctx, w, fs.Args(), docker); err != nil {
			return err
		}
		return w.Flush()
	}
	// The archive appears whole under its name, or not at all.
	f, err := os.CreateTemp(filepath.Dir(*out), "."+filepath.Base(*out)+".tmp-*")
	if err != nil {
		return fmt.Errorf("save: %w", err)
	}
	defer os.Remove(f.Name())
	w := bufio.NewWriterSize(f, 1<<20)
	err = s.Save(ctx, w, fs.Args(), docker)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), *out)
	}
	if err != nil {
		return fmt.Errorf("save %s: %w", *out, err)
	}
	return nil
}

func cmdImageLoad(g *globals, args []string) error {
	fs := newFlags("image load")
	in := fs.String("i", "", "read from `FILE` instead of standard input")
	fs.StringVar(in, "input", "", "read from `FILE` instead of standard input")
	quiet := fs.Bool("q", false, "print nothing")
	fs.BoolVar(quiet, "quiet", false, "print nothing")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("want no operand (the archive is -i FILE or standard input): %w", errdefs.ErrInvalid)
	}
	var r io.Reader = os.Stdin
	if *in != "" {
		f, err := os.Open(*in)
		if err != nil {
			return fmt.Errorf("load: %w", err)
		}
		defer f.Close()
		r = f
	} else if term.IsTerminal(int(os.Stdin.Fd())) {
		return fmt.Errorf("standard input is a terminal: give the archive with -i FILE or redirect it: %w", errdefs.ErrInvalid)
	}
	s, err := g.imageStore()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	imgs, err := s.Load(ctx, r)
	if !*quiet {
		for _, img := range imgs {
			for _, n := range img.Names {
				fmt.Printf("Loaded image: %s\n", n)
			}
			if len(img.Names) == 0 {
				fmt.Printf("Loaded image ID: %s\n", img.ID)
			}
		}
	}
	return err
}
