package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/internal/errdefs"
)

// completeVerb is the hidden verb the completion scripts call:
// `berth __complete WORD... CURRENT` prints what CURRENT may become, one
// candidate a line, a tab before its description. The line ":file" asks
// the shell to complete a path instead. The words are the command line
// after "berth", so a --root on it is the root the names come from.
const completeVerb = "__complete"

// fileDirective asks the shell to complete file names.
const fileDirective = ":file"

func cmdComplete(_ *globals, args []string) error {
	if len(args) == 0 {
		args = []string{""}
	}
	for _, c := range completions(args[:len(args)-1], args[len(args)-1]) {
		fmt.Println(c)
	}
	return nil
}

// completions are the candidates for the word cur after the words prev.
// It never fails and never makes a store: what it cannot read it leaves
// out.
func completions(prev []string, cur string) []string {
	g := &globals{root: os.Getenv("BERTH_ROOT")}
	if g.root == "" {
		g.root = defaultRoot
	}
	gfs := globalFlags(g)
	rest, pending, _ := scanWords(gfs, prev, false)
	switch {
	case pending != nil:
		return []string{fileDirective} // --root DIR
	case len(rest) == 0 && strings.HasPrefix(cur, "-"):
		return flagCandidates(gfs, cur)
	case len(rest) == 0:
		return commandCandidates(commands(), cur)
	}
	c, ok := lookupCommand(commands(), rest[0])
	rest = rest[1:]
	for ok && c.subs != nil {
		if len(rest) == 0 {
			return commandCandidates(c.subs, cur)
		}
		c, ok = lookupCommand(c.subs, rest[0])
		rest = rest[1:]
	}
	if !ok || c.hidden {
		return nil
	}
	h := flagsOf(c)
	operands, pending, flagsOK := scanWords(h.fs, rest, h.interspersed)
	switch {
	case pending != nil:
		return valueCandidates(c, pending, cur)
	case flagsOK && strings.HasPrefix(cur, "-"):
		return flagCandidates(h.fs, cur)
	case c.firstOnly && len(operands) > 0:
		return nil // the command line of run or exec
	}
	return operandCandidates(g, c, operands, cur)
}

// scanWords walks words as parse and parseStrict do and returns the
// operands, the flag the next word is the value of (nil if none), and
// whether a flag may still come. Without interspersed, every word from
// the first operand on is one.
func scanWords(fs *flag.FlagSet, words []string, interspersed bool) (operands []string, pending *flag.Flag, flagsOK bool) {
	flagsOK = true
	for i := 0; i < len(words); i++ {
		w := words[i]
		switch {
		case !flagsOK || w == "-" || !strings.HasPrefix(w, "-"):
			operands = append(operands, w)
			flagsOK = flagsOK && interspersed
		case w == "--":
			flagsOK = false
		default:
			name, val, hasVal := strings.Cut(strings.TrimLeft(w, "-"), "=")
			f := fs.Lookup(name)
			switch {
			case f == nil || isBool(f):
			case hasVal:
				_ = f.Value.Set(val)
			case i+1 == len(words):
				return operands, f, flagsOK
			default:
				i++
				_ = f.Value.Set(words[i])
			}
		}
	}
	return operands, nil, flagsOK
}

func commandCandidates(list []command, cur string) []string {
	var out []string
	for _, c := range list {
		if !c.hidden && strings.HasPrefix(c.name, cur) {
			out = append(out, c.name+"\t"+c.short)
		}
	}
	return out
}

func flagCandidates(fs *flag.FlagSet, cur string) []string {
	var out []string
	for _, f := range flagHelps(fs) {
		for _, n := range f.names {
			if strings.HasPrefix(n, cur) {
				out = append(out, n+"\t"+f.usage)
			}
		}
	}
	if strings.HasPrefix("--help", cur) {
		out = append(out, "--help\tshow this command's help")
	}
	return out
}

// valueCandidates are the values of the flag f of c.
func valueCandidates(c command, f *flag.Flag, cur string) []string {
	var words []string
	switch f.Name {
	case "format":
		words = []string{"json"}
	case "network":
		words = []string{"bridge", "none", "host"}
	case "log-opt":
		words = []string{"max-size=", "max-file="}
	case "kernel", "v", "volume":
		return []string{fileDirective}
	case "s", "signal":
		if c.name == "kill" {
			words = []string{"TERM", "KILL", "HUP", "INT", "QUIT", "USR1", "USR2", "STOP", "CONT"}
		}
	}
	return withPrefix(words, cur)
}

// operandCandidates are what the next operand of c may be, after operands.
func operandCandidates(g *globals, c command, operands []string, cur string) []string {
	switch c.operand {
	case aFile:
		return []string{fileDirective}
	case aWord:
		return withPrefix(c.words, cur)
	case aCommand:
		list := commands()
		for _, name := range operands {
			p, ok := lookupCommand(list, name)
			if !ok {
				return nil
			}
			list = p.subs
		}
		return commandCandidates(list, cur)
	case anImage:
		return imageCandidates(g, cur)
	case anInstance, aRunning:
		return instanceCandidates(g, c.operand == aRunning, cur)
	case aNetwork:
		return networkCandidates(g, cur)
	}
	return nil
}

// networkCandidates are the names of the networks under the root.
func networkCandidates(g *globals, cur string) []string {
	if _, err := os.Stat(filepath.Join(g.root, "networks")); err != nil {
		return nil // no store: none, and none made
	}
	st, err := networkStore(g)
	if err != nil {
		return nil
	}
	nets, err := st.List()
	if err != nil {
		return nil
	}
	var names []string
	for _, n := range nets {
		names = append(names, n.Name)
	}
	return withPrefix(names, cur)
}

// imageCandidates are the names of the images under the root, and the
// IDs of those without one.
func imageCandidates(g *globals, cur string) []string {
	if _, err := os.Stat(filepath.Join(g.root, "image")); err != nil {
		return nil // no store: none, and none made
	}
	s, err := g.imageStore()
	if err != nil {
		return nil
	}
	imgs, err := s.List()
	if err != nil {
		return nil
	}
	var out []string
	for _, img := range imgs {
		names := img.Names
		if len(names) == 0 {
			names = []string{img.ID.Encoded()[:12]}
		}
		for _, n := range names {
			if strings.HasPrefix(n, cur) {
				out = append(out, n+"\timage "+img.ID.Encoded()[:12])
			}
		}
	}
	return out
}

// instanceCandidates are the names and IDs of the instances under the
// root, the running ones only when running. Status is the record's, not
// reconciled: completing changes no record.
func instanceCandidates(g *globals, running bool, cur string) []string {
	if _, err := os.Stat(filepath.Join(g.root, "instances")); err != nil {
		return nil
	}
	st, err := g.instanceStore()
	if err != nil {
		return nil
	}
	list, err := st.List()
	if err != nil {
		return nil
	}
	var out []string
	for _, in := range list {
		if running && !in.Status.Active() {
			continue
		}
		desc := fmt.Sprintf("\t%s %s", in.Image, in.Status)
		for _, n := range []string{in.Name, in.ShortID()} {
			if n != "" && strings.HasPrefix(n, cur) {
				out = append(out, n+desc)
			}
		}
	}
	return out
}

func withPrefix(words []string, cur string) []string {
	var out []string
	for _, w := range words {
		if strings.HasPrefix(w, cur) {
			out = append(out, w)
		}
	}
	return out
}

// cmdCompletion is `berth completion bash|zsh`.
func cmdCompletion(g *globals, args []string) error {
	fs := newFlags("completion")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("want one shell, bash or zsh: %w", errdefs.ErrInvalid)
	}
	switch fs.Arg(0) {
	case "bash":
		fmt.Print(bashCompletion)
	case "zsh":
		fmt.Print(zshCompletion)
	default:
		return fmt.Errorf("shell %q: want bash or zsh: %w", fs.Arg(0), errdefs.ErrInvalid)
	}
	return nil
}

// The scripts hand the words to `berth __complete`, which knows the
// commands and flags from the same definitions that parse them.
const bashCompletion = `# bash completion for berth. Load it with: source <(berth completion bash)
_berth() {
	local cur words cword line
	if declare -F _get_comp_words_by_ref >/dev/null; then
		_get_comp_words_by_ref -n =: cur words cword
	else
		cur=${COMP_WORDS[COMP_CWORD]} words=("${COMP_WORDS[@]}") cword=$COMP_CWORD
	fi
	COMPREPLY=()
	while IFS= read -r line; do
		case $line in
		'') ;;
		:file)
			compopt -o filenames 2>/dev/null
			mapfile -t -O "${#COMPREPLY[@]}" COMPREPLY < <(compgen -f -- "$cur")
			;;
		*) COMPREPLY+=("${line%%	*}") ;;
		esac
	done < <("${words[0]}" ` + completeVerb + ` "${words[@]:1:cword-1}" "$cur" 2>/dev/null)
	if declare -F __ltrim_colon_completions >/dev/null; then
		__ltrim_colon_completions "$cur"
	fi
}
complete -F _berth berth
`

const zshCompletion = `#compdef berth
# zsh completion for berth. Load it with: source <(berth completion zsh)
_berth() {
	local line word desc
	local -a cands
	for line in "${(@f)$(${words[1]} ` + completeVerb + ` "${(@)words[2,CURRENT-1]}" "${words[CURRENT]}" 2>/dev/null)}"; do
		[[ -n $line ]] || continue
		if [[ $line == :file ]]; then
			_files
			return
		fi
		word=${line%%	*} desc=
		[[ $line == *$'\t'* ]] && desc=${line#*	}
		cands+=("${word//:/\\:}${desc:+:$desc}")
	done
	(( $#cands )) && _describe -t berth berth cands
}
if (( $+functions[compdef] )); then
	compdef _berth berth
fi
`
