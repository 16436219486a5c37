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
	"github.com/berth-dev/berth/internal/regcli"
	"github.com/berth-dev/berth/internal/registry"
)

func cmdLogin(root string, args []string) error {
	var f regcli.Login
	server, err := parseVerb("login", &f, args, atMostOne)
	if err != nil {
		return err
	}
	host, key, err := registry.ServerKey(server)
	if err != nil {
		return err
	}
	o, err := registryOptions(root, f.Insecure)
	if err != nil {
		return err
	}
	if f.PasswordStdin && f.Password != "" {
		return fmt.Errorf("--password and --password-stdin are exclusive: %w", errdefs.ErrInvalid)
	}
	if f.PasswordStdin && f.User == "" {
		return fmt.Errorf("--password-stdin needs a user name (-u): %w", errdefs.ErrInvalid)
	}
	if f.Password != "" {
		fmt.Fprintln(os.Stderr, "WARNING! Using --password via the CLI is insecure. Use --password-stdin.")
	}
	tty := term.IsTerminal(int(os.Stdin.Fd()))
	in := bufio.NewReader(os.Stdin)
	if f.User == "" {
		if !tty {
			return fmt.Errorf("want a user name (-u) when standard input is not a terminal: %w", errdefs.ErrInvalid)
		}
		fmt.Fprint(os.Stderr, "Username: ")
		line, err := in.ReadString('\n')
		if err != nil && line == "" {
			return fmt.Errorf("user name: %v: %w", err, errdefs.ErrInvalid)
		}
		f.User = strings.TrimSpace(line)
	}
	switch {
	case f.PasswordStdin:
		data, err := io.ReadAll(io.LimitReader(in, 64<<10))
		if err != nil {
			return fmt.Errorf("password from standard input: %w", err)
		}
		f.Password = strings.TrimRight(string(data), "\r\n")
	case f.Password == "":
		if !tty {
			return fmt.Errorf("want a password (--password-stdin) when standard input is not a terminal: %w", errdefs.ErrInvalid)
		}
		fmt.Fprint(os.Stderr, "Password: ")
		p, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(os.Stderr)
		if err != nil {
			return fmt.Errorf("password: %w", err)
		}
		f.Password = string(p)
	}
	if f.User == "" || f.Password == "" {
		return fmt.Errorf("want a user name and a password: %w", errdefs.ErrInvalid)
	}
	c, err := registry.LoadDockerConfig()
	if err != nil {
		return err
	}
	if err := registry.Login(context.Background(), host, f.User, f.Password, o); err != nil {
		return err
	}
	if err := c.Store(key, f.User, f.Password); err != nil {
		return err
	}
	fmt.Println("Login Succeeded")
	return nil
}

func cmdLogout(root string, args []string) error {
	var f regcli.Logout
	server, err := parseVerb("logout", &f, args, atMostOne)
	if err != nil {
		return err
	}
	_, key, err := registry.ServerKey(server)
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
