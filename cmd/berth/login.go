package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/registry"
)

func cmdLogin(g *globals, args []string) error {
	fs := newFlags("login")
	user := fs.String("u", "", "the `USER` name")
	fs.StringVar(user, "username", "", "the `USER` name")
	pass := fs.String("p", "", "the `PASSWORD` (visible to other users of this host: prefer --password-stdin)")
	fs.StringVar(pass, "password", "", "the `PASSWORD` (visible to other users of this host: prefer --password-stdin)")
	stdin := fs.Bool("password-stdin", false, "read the password from standard input")
	insecure := insecureFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return fmt.Errorf("want at most one registry: %w", errdefs.ErrInvalid)
	}
	host, key, err := registry.ServerKey(fs.Arg(0))
	if err != nil {
		return err
	}
	o, err := registryOptions(g, insecure)
	if err != nil {
		return err
	}
	if *stdin && *pass != "" {
		return fmt.Errorf("--password and --password-stdin are exclusive: %w", errdefs.ErrInvalid)
	}
	if *stdin && *user == "" {
		return fmt.Errorf("--password-stdin needs a user name (-u): %w", errdefs.ErrInvalid)
	}
	if *pass != "" {
		fmt.Fprintln(os.Stderr, "WARNING! Using --password via the CLI is insecure. Use --password-stdin.")
	}
	tty := term.IsTerminal(int(os.Stdin.Fd()))
	in := bufio.NewReader(os.Stdin)
	if *user == "" {
		if !tty {
			return fmt.Errorf("want a user name (-u) when standard input is not a terminal: %w", errdefs.ErrInvalid)
		}
		fmt.Fprint(os.Stderr, "Username: ")
		line, err := in.ReadString('\n')
		if err != nil && line == "" {
			return fmt.Errorf("user name: %v: %w", err, errdefs.ErrInvalid)
		}
		*user = strings.TrimSpace(line)
	}
	switch {
	case *stdin:
		data, err := io.ReadAll(io.LimitReader(in, 64<<10))
		if err != nil {
			return fmt.Errorf("password from standard input: %w", err)
		}
		*pass = strings.TrimRight(string(data), "\r\n")
	case *pass == "":
		if !tty {
			return fmt.Errorf("want a password (--password-stdin) when standard input is not a terminal: %w", errdefs.ErrInvalid)
		}
		fmt.Fprint(os.Stderr, "Password: ")
		p, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(os.Stderr)
		if err != nil {
			return fmt.Errorf("password: %w", err)
		}
		*pass = string(p)
	}
	if *user == "" || *pass == "" {
		return fmt.Errorf("want a user name and a password: %w", errdefs.ErrInvalid)
	}
	c, err := registry.LoadDockerConfig()
	if err != nil {
		return err
	}
	if err := registry.Login(context.Background(), host, *user, *pass, o); err != nil {
		return err
	}
	if err := c.Store(key, *user, *pass); err != nil {
		return err
	}
	fmt.Println("Login Succeeded")
	return nil
}

func cmdLogout(g *globals, args []string) error {
	fs := newFlags("logout")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return fmt.Errorf("want at most one registry: %w", errdefs.ErrInvalid)
	}
	_, key, err := registry.ServerKey(fs.Arg(0))
	if err != nil {
		return err
	}
	c, err := registry.LoadDockerConfig()
	if err != nil {
		return err
	}
	found, err := c.Erase(key)
	if err != nil {
		return err
	}
	if found {
		fmt.Printf("Removing login credentials for %s\n", key)
	} else {
		fmt.Printf("Not logged in to %s\n", key)
	}
	return nil
}
