package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/berth-dev/berth/internal/errdefs"
)

// cmdDocs is `berth docs markdown|man`: the reference of every command,
// written from the definitions help is written from. docs/cli.md is its
// Markdown (TestDocsCurrent fails when it is not).
func cmdDocs(g *globals, args []string) error {
	fs := newFlags("docs")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("want one format, markdown or man: %w", errdefs.ErrInvalid)
	}
	switch fs.Arg(0) {
	case "markdown":
		writeMarkdown(os.Stdout)
	case "man":
		writeMan(os.Stdout)
	default:
		return fmt.Errorf("format %q: want markdown or man: %w", fs.Arg(0), errdefs.ErrInvalid)
	}
	return nil
}

// eachCommand calls fn with the path to every visible command and
// subcommand, in the order of the table.
func eachCommand(fn func(path []command)) {
	var walk func(parent []command, list []command)
	walk = func(parent []command, list []command) {
		for _, c := range list {
			if c.hidden {
				continue
			}
			path := append(append([]command(nil), parent...), c)
			fn(path)
			walk(path, c.subs)
		}
	}
	walk(nil, commands())
}

func writeMarkdown(w io.Writer) {
	fmt.Fprintf(w, "# berth command-line reference\n\n")
	fmt.Fprintf(w, "Written by `berth docs markdown` from the definitions that parse the flags; do not edit.\n")
	fmt.Fprintf(w, "`berth COMMAND --help` prints the same.\n\n")
	fmt.Fprintf(w, "```\nberth [OPTIONS] COMMAND [ARG...]\n```\n\n%s\n\n", mainLong)
	writeMarkdownFlags(w, flagHelps(globalFlags(&globals{root: defaultRoot})))
	eachCommand(func(path []command) {
		c, fs := path[len(path)-1], commandFlags(path)
		fmt.Fprintf(w, "## berth %s\n\n```\n%s\n```\n\n", commandName(path), usageLine(path, fs))
		if len(c.aliases) > 0 {
			fmt.Fprintf(w, "Aliases: %s.\n\n", strings.Join(c.aliases, ", "))
		}
		fmt.Fprintf(w, "%s\n\n", c.long)
		writeMarkdownFlags(w, flagHelps(fs))
	})
}

func writeMarkdownFlags(w io.Writer, flags []flagHelp) {
	if len(flags) == 0 {
		return
	}
	fmt.Fprintf(w, "| Option | Meaning | Default |\n|---|---|---|\n")
	cell := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	for _, f := range flags {
		names := "`" + strings.Join(f.names, "`, `") + "`"
		if f.value != "" {
			names += " " + f.value
		}
		def := ""
		if f.def != "" {
			def = "`" + f.def + "`"
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", names, cell(f.usage), cell(def))
	}
	fmt.Fprintln(w)
}

// writeMan writes berth(1), every command in a section of its own.
func writeMan(w io.Writer) {
	fmt.Fprintf(w, ".TH BERTH 1 \"\" \"berth %s\" \"User Commands\"\n", roff(version))
	fmt.Fprintf(w, ".SH NAME\nberth \\- run OCI images as containers or virtual machines\n")
	fmt.Fprintf(w, ".SH SYNOPSIS\n.B berth\n[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARG\\fR...]\n")
	fmt.Fprintf(w, ".SH DESCRIPTION\n%s\n", roff(mainLong))
	fmt.Fprintf(w, ".SH OPTIONS\n")
	writeManFlags(w, flagHelps(globalFlags(&globals{root: defaultRoot})))
	fmt.Fprintf(w, ".SH COMMANDS\n")
	eachCommand(func(path []command) {
		c, fs := path[len(path)-1], commandFlags(path)
		fmt.Fprintf(w, ".SS %s\n.B %s\n.PP\n%s\n", roff("berth "+commandName(path)), roff(usageLine(path, fs)), roff(c.long))
		writeManFlags(w, flagHelps(fs))
	})
	fmt.Fprintf(w, ".SH SEE ALSO\nberth-runtime(8)\n")
}

func writeManFlags(w io.Writer, flags []flagHelp) {
	for _, f := range flags {
		head := "\\fB" + roff(strings.Join(f.names, ", ")) + "\\fR"
		if f.value != "" {
			head += " \\fI" + roff(f.value) + "\\fR"
		}
		fmt.Fprintf(w, ".TP\n%s\n%s\n", head, roff(f.text()))
	}
}

// roff escapes text for a man page: backslashes and hyphens, and a line
// that would start with a control character.
func roff(s string) string {
	s = strings.NewReplacer(`\`, `\e`, "-", `\-`).Replace(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}
