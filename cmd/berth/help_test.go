package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/instance"
)

// TestHelpListsEveryFlag asks every command for its help as realMain
// does and checks that the help names every flag the command parses,
// with its meaning, and that asking touched nothing under the root.
func TestHelpListsEveryFlag(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	n := 0
	eachCommand(func(path []command) {
		c := path[len(path)-1]
		name := commandName(path)
		if c.subs != nil {
			var b bytes.Buffer
			writeHelp(&b, path)
			for _, s := range c.subs {
				if !strings.Contains(b.String(), "\n  "+s.name+" ") {
					t.Errorf("help of %s does not list %s:\n%s", name, s.name, b.String())
				}
			}
			return
		}
		n++
		h, ok := c.run(&globals{root: root}, []string{"--help"}).(*helpRequest)
		if !ok || h.fs == nil {
			t.Errorf("berth %s --help did not ask for help", name)
			return
		}
		var b bytes.Buffer
		writeHelp(&b, path)
		help := b.String()
		if !strings.HasPrefix(help, "Usage:  berth "+name) || !strings.Contains(help, c.long[:20]) {
			t.Errorf("help of %s lacks its usage or paragraph:\n%s", name, help)
		}
		words := strings.Fields(help)
		h.fs.VisitAll(func(f *flag.Flag) {
			spelled := "--" + f.Name
			if len(f.Name) == 1 {
				spelled = "-" + f.Name
			}
			_, usage := flag.UnquoteUsage(f)
			if !slices.Contains(words, spelled) && !slices.Contains(words, spelled+",") {
				t.Errorf("help of %s does not list %s", name, spelled)
			}
			if !strings.Contains(strings.Join(words, " "), strings.Join(strings.Fields(usage), " ")) {
				t.Errorf("help of %s does not say what %s means (%q)", name, spelled, usage)
			}
		})
	})
	if n < 15 {
		t.Fatalf("only %d commands with flags visited", n)
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Fatalf("asking for help made the root: %v", err)
	}
}

func TestHelpShowsAliasesAndDefaults(t *testing.T) {
	path, err := helpPath([]string{"run"})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	writeHelp(&b, path)
	help := strings.Join(strings.Fields(b.String()), " ")
	for _, want := range []string{"-d, --detach", "-e, --env list", "--network string", "or host (default bridge)", "--memory", "--vm", "--log-opt"} {
		if !strings.Contains(help, want) {
			t.Errorf("run's help lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	writeMainHelp(&b)
	eachCommand(func(path []command) {
		if len(path) == 1 && !strings.Contains(b.String(), "\n  "+path[0].name+" ") {
			t.Errorf("berth --help does not list %s", path[0].name)
		}
	})
	if !strings.Contains(b.String(), "--root DIR") {
		t.Errorf("berth --help lacks --root:\n%s", b.String())
	}
}

func TestFindCommand(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		name     string
		rest     int
		wantsErr string
	}{
		{[]string{"run", "-it", "img"}, "run", 2, ""},
		{[]string{"image", "list"}, "image ls", 0, ""},
		{[]string{"image", "remove", "x"}, "image rm", 1, ""},
		{[]string{"image", "--help"}, "image", 0, ""},
		{[]string{"image"}, "", 0, "berth image: want a subcommand: import, save, load, ls, rm, tag or inspect"},
		{[]string{"image", "zz"}, "", 0, `berth image: unknown subcommand "zz"`},
		{[]string{"zz"}, "", 0, `berth: unknown command "zz"`},
	} {
		path, rest, err := findCommand(tc.args)
		if tc.wantsErr != "" {
			if err == nil || !strings.HasPrefix(err.Error(), tc.wantsErr) {
				t.Errorf("%q: error %v, want %q", tc.args, err, tc.wantsErr)
			}
			continue
		}
		if err != nil || commandName(path) != tc.name || len(rest) != tc.rest {
			t.Errorf("%q: %q %q %v", tc.args, commandName(path), rest, err)
		}
	}
}

func TestCompletions(t *testing.T) {
	root := t.TempDir()
	st, err := instance.OpenStore(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range []*instance.Instance{
		{ID: instance.NewID(), Name: "web", Status: instance.Running, Image: "demo:latest", Created: time.Now()},
		{ID: instance.NewID(), Name: "old", Status: instance.Stopped, Image: "demo:latest", Created: time.Now()},
	} {
		if err := st.Create(in); err != nil {
			t.Fatal(err)
		}
	}
	words := func(prev []string, cur string) []string {
		var out []string
		for _, c := range completions(prev, cur) {
			w, _, _ := strings.Cut(c, "\t")
			out = append(out, w)
		}
		return out
	}
	var verbs []string
	for _, c := range commands() {
		if !c.hidden {
			verbs = append(verbs, c.name)
		}
	}
	r := []string{"--root", root}
	for _, tc := range []struct {
		prev []string
		cur  string
		want []string
	}{
		{nil, "", verbs},
		{nil, "--r", []string{"--root"}},
		{[]string{"--root"}, "", []string{fileDirective}},
		{[]string{"image"}, "i", []string{"import", "inspect"}},
		{[]string{"run"}, "--me", []string{"--memory"}},
		{[]string{"run", "-it", "--network"}, "", []string{"bridge", "none", "host"}},
		{[]string{"run", "img"}, "--", nil}, // the command line of the instance
		{[]string{"ps", "-a"}, "--f", []string{"--format"}},
		{[]string{"bench"}, "c", []string{"compare", "ctr"}},
		{[]string{"completion"}, "", []string{"bash", "zsh"}},
		{[]string{"help", "image"}, "l", []string{"load", "ls"}},
		{append(r, "stop"), "", []string{"web"}},
		{append(r, "rm", "-f"), "", []string{"old", "web"}}, // newest first
		{append(r, "logs"), "o", []string{"old"}},
		{append(r, "exec", "-i"), "w", []string{"web"}},
		{append(r, "exec", "web"), "", nil},
		{[]string{"--root", filepath.Join(root, "none"), "rm"}, "", nil},
		{[]string{"nosuch"}, "", nil},
	} {
		got := words(tc.prev, tc.cur)
		// Instances are listed by name and short ID: keep the names.
		got = slices.DeleteFunc(got, func(w string) bool { return len(w) == 12 && !slices.Contains(tc.want, w) })
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q %q: %q, want %q", tc.prev, tc.cur, got, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "none")); !os.IsNotExist(err) {
		t.Errorf("completing under a missing root made it: %v", err)
	}
}

func TestCompletionScripts(t *testing.T) {
	for shell, want := range map[string]string{"bash": "complete -F _berth berth", "zsh": "compdef _berth berth"} {
		out := captureStdout(t, func() error { return cmdCompletion(nil, []string{shell}) })
		if !strings.Contains(out, want) || !strings.Contains(out, completeVerb) {
			t.Errorf("%s script lacks %q or %s:\n%s", shell, want, completeVerb, out)
		}
	}
	if err := cmdCompletion(nil, []string{"fish"}); err == nil {
		t.Error("completion fish was accepted")
	}
}

func TestVersion(t *testing.T) {
	out := captureStdout(t, func() error { return cmdVersion(nil, []string{"--format", "json"}) })
	var v versions
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if v.RuntimeSpec != specs.Version || v.ImageSpec == "" || v.AgentProtocol == 0 || !strings.HasPrefix(v.StageProtocol, "berth-stage-") || v.GoVersion == "" {
		t.Fatalf("version: %+v", v)
	}
	out = captureStdout(t, func() error { return cmdVersion(nil, nil) })
	for _, want := range []string{"OCI runtime spec:  " + specs.Version, "stage protocol:    " + v.StageProtocol} {
		if !strings.Contains(out, want) {
			t.Errorf("version lacks %q:\n%s", want, out)
		}
	}
}

// TestDocsCurrent fails when docs/cli.md is not what the definitions
// write; `go run ./cmd/berth docs markdown > docs/cli.md` rewrites it.
func TestDocsCurrent(t *testing.T) {
	var b bytes.Buffer
	writeMarkdown(&b)
	have, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(have, b.Bytes()) {
		t.Fatal("docs/cli.md is stale: run `go run ./cmd/berth docs markdown > docs/cli.md`")
	}
	b.Reset()
	writeMan(&b)
	if !strings.Contains(b.String(), ".SS berth run") || !strings.Contains(b.String(), `\-m, \-\-memory`) {
		t.Fatalf("man page:\n%s", b.String())
	}
}

// captureStdout returns what fn writes to standard output.
func captureStdout(t *testing.T, fn func() error) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdout
	os.Stdout = w
	done := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(r)
		done <- b
	}()
	err = fn()
	os.Stdout = saved
	w.Close()
	out := <-done
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}
