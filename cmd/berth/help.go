package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"

	"github.com/berth-dev/berth/internal/regcli"
)

// helpRequest is what parsing returns for -h, -help or --help: the flag
// set that was being parsed, from which the verb's help is written. It
// reaches realMain as the verb's error.
type helpRequest struct {
	fs           *flag.FlagSet
	interspersed bool // flags may follow operands (parse, not parseStrict)
}

func (h *helpRequest) Error() string { return "help requested" }

// helpWidth is the width help text is wrapped to.
const helpWidth = 80

// mainLong is berth's own paragraph in `berth --help`.
const mainLong = "berth runs OCI images as Linux containers or, with run --vm, as QEMU virtual machines, " +
	"behind one Docker-like command line. There is no daemon: each command does its work and exits, " +
	"and a small monitor process owns each detached instance. Images come in with berth pull or berth image import; " +
	"berth-runtime offers the same engines to containerd and Docker as an OCI runtime."

// flagsOf returns the flags command c parses, by running it with --help:
// every verb parses its flags before it does anything else, so the flag
// set is the very one that parses its command line. The root it is given
// is one no store can be made in, should a verb forget that rule
// (TestHelpProbeIsHarmless holds them to it).
func flagsOf(c command) *helpRequest {
	if c.run != nil && !c.hidden {
		if h, ok := c.run(&globals{root: "/dev/null/berth-help"}, []string{"--help"}).(*helpRequest); ok && h.fs != nil {
			return h
		}
	}
	return &helpRequest{fs: newFlags(c.name)}
}

// commandFlags are the flags of the command at the end of path; nil for
// a command with subcommands, whose flags are theirs.
func commandFlags(path []command) *flag.FlagSet {
	c := path[len(path)-1]
	if c.subs != nil {
		return nil
	}
	return flagsOf(c).fs
}

// printHelp writes the help of the command at the end of path, or berth's
// own when path is empty, and returns the exit status of a help request.
func printHelp(w io.Writer, path []command) int {
	if len(path) == 0 {
		writeMainHelp(w)
	} else {
		writeHelp(w, path)
	}
	return 0
}

func writeMainHelp(w io.Writer) {
	fmt.Fprintf(w, "Usage:  berth [OPTIONS] COMMAND [ARG...]\n\n")
	writeWrapped(w, mainLong, 0)
	fmt.Fprintf(w, "\nCommands:\n")
	writeCommandList(w, commands())
	fmt.Fprintf(w, "\nOptions:\n")
	writeFlags(w, globalFlags(&globals{root: defaultRoot}))
	fmt.Fprintf(w, "\nRun 'berth COMMAND --help' for more on a command.\n")
}

func writeHelp(w io.Writer, path []command) {
	c, fs := path[len(path)-1], commandFlags(path)
	fmt.Fprintf(w, "Usage:  %s\n\n", usageLine(path, fs))
	if len(c.aliases) > 0 {
		fmt.Fprintf(w, "Aliases:  %s\n\n", strings.Join(c.aliases, ", "))
	}
	writeWrapped(w, c.long, 0)
	if c.subs != nil {
		fmt.Fprintf(w, "\nCommands:\n")
		writeCommandList(w, c.subs)
		fmt.Fprintf(w, "\nRun 'berth %s COMMAND --help' for more on a command.\n", commandName(path))
		return
	}
	if hasFlags(fs) {
		fmt.Fprintf(w, "\nOptions:\n")
		writeFlags(w, fs)
	}
}

// usageLine is "berth run [OPTIONS] IMAGE [COMMAND [ARG...]]".
func usageLine(path []command, fs *flag.FlagSet) string {
	c := path[len(path)-1]
	parts := []string{"berth", commandName(path)}
	if c.subs != nil {
		parts = append(parts, "COMMAND")
	}
	if hasFlags(fs) {
		parts = append(parts, "[OPTIONS]")
	}
	if c.args != "" {
		parts = append(parts, c.args)
	}
	return strings.Join(parts, " ")
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	if fs != nil {
		fs.VisitAll(func(*flag.Flag) { n++ })
	}
	return n > 0
}

func writeCommandList(w io.Writer, list []command) {
	for _, c := range list {
		if !c.hidden {
			fmt.Fprintf(w, "  %-12s%s\n", c.name, c.short)
		}
	}
}

// flagHelp is one flag of help: its names (aliases declared on the same
// variable, -d and --detach), the placeholder of its value, its meaning
// and its default.
type flagHelp struct {
	names   []string // as typed: "-d", "--detach"
	value   string   // "" for a boolean flag
	usage   string
	def     string // "" when the default is the zero value
	takeArg bool
}

// flagHelps lists fs's flags for help, completion and docs, aliases
// folded together, sorted by their longest name.
func flagHelps(fs *flag.FlagSet) []flagHelp {
	var out []flagHelp
	if fs == nil {
		return nil
	}
	index := map[any]int{} // a flag's variable -> its entry in out
	fs.VisitAll(func(f *flag.Flag) {
		name := "--" + f.Name
		if len(f.Name) == 1 {
			name = "-" + f.Name
		}
		key := variableOf(f)
		if i, ok := index[key]; ok && key != nil {
			out[i].names = append(out[i].names, name)
			return
		}
		value, usage := flag.UnquoteUsage(f)
		switch f.Value.(type) {
		case *listFlag, *regcli.List:
			value = "list"
		case *optString:
			value = "string"
		}
		if isBool(f) {
			value = ""
		}
		def := f.DefValue
		if slices.Contains([]string{"", "false", "0", "0s"}, def) {
			def = ""
		}
		if key != nil {
			index[key] = len(out)
		}
		out = append(out, flagHelp{names: []string{name}, value: value, usage: usage, def: def, takeArg: !isBool(f)})
	})
	for i := range out {
		slices.SortFunc(out[i].names, func(a, b string) int { return len(a) - len(b) })
	}
	slices.SortFunc(out, func(a, b flagHelp) int {
		return strings.Compare(strings.TrimLeft(a.names[len(a.names)-1], "-"), strings.TrimLeft(b.names[len(b.names)-1], "-"))
	})
	return out
}

// variableOf is the variable behind a flag, which its aliases share: the
// flag package's values are pointers to it. Nil when it cannot tell.
func variableOf(f *flag.Flag) any {
	v := reflect.ValueOf(f.Value)
	if v.Kind() != reflect.Pointer {
		return nil
	}
	return v.Pointer()
}

// left is the flag's first column: "-d, --detach" or "    --name string".
func (f flagHelp) left() string {
	s := strings.Join(f.names, ", ")
	if !strings.HasPrefix(f.names[0], "--") || len(f.names) > 1 {
		s = "  " + s
	} else {
		s = "      " + s
	}
	if f.value != "" {
		s += " " + f.value
	}
	return s
}

// text is the flag's meaning with its default.
func (f flagHelp) text() string {
	if f.def != "" {
		return fmt.Sprintf("%s (default %s)", f.usage, f.def)
	}
	return f.usage
}

func writeFlags(w io.Writer, fs *flag.FlagSet) {
	flags := flagHelps(fs)
	col := 0
	for _, f := range flags {
		col = max(col, len(f.left()))
	}
	col = min(col+3, 34)
	for _, f := range flags {
		left := f.left()
		if len(left)+3 > col {
			fmt.Fprintln(w, left)
			left = ""
		}
		fmt.Fprintf(w, "%-*s", col, left)
		writeWrapped(w, f.text(), col)
	}
}

// writeWrapped writes text in lines of at most helpWidth, the lines after
// the first indented by indent (the first is where the caller left it).
func writeWrapped(w io.Writer, text string, indent int) {
	line := 0
	for i, word := range strings.Fields(text) {
		if i > 0 && line+1+len(word) > helpWidth-indent {
			fmt.Fprintf(w, "\n%*s", indent, "")
			line = 0
		} else if i > 0 {
			fmt.Fprint(w, " ")
			line++
		}
		fmt.Fprint(w, word)
		line += len(word)
	}
	fmt.Fprintln(w)
}

// cmdHelp is `berth help [COMMAND [SUBCOMMAND]]`.
func cmdHelp(g *globals, args []string) error {
	fs := newFlags("help")
	if err := parse(fs, args); err != nil {
		return err
	}
	path, err := helpPath(fs.Args())
	if err != nil {
		return err
	}
	printHelp(os.Stdout, path)
	return nil
}

// helpPath finds the commands names name, down to a subcommand.
func helpPath(names []string) ([]command, error) {
	var path []command
	list := commands()
	for _, name := range names {
		c, ok := lookupCommand(list, name)
		if !ok || c.hidden {
			return nil, fmt.Errorf("no command %q (see berth --help)", strings.Join(names, " "))
		}
		path, list = append(path, c), c.subs
	}
	return path, nil
}
