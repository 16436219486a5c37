package test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestCLIHelp: help goes to standard output with status 0 and lists the
// command's flags; a bad flag is still one line and status 125.
func TestCLIHelp(t *testing.T) {
	for _, args := range [][]string{{"run", "--help"}, {"run", "-it", "--help"}, {"help", "run"}} {
		r := berth(t, args...)
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("berth %s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.stderr)
		}
		for _, want := range []string{"Usage:  berth run [OPTIONS] IMAGE", "--memory", "--vm", "--log-opt", "-d, --detach"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("berth %s lacks %q:\n%s", strings.Join(args, " "), want, r.stdout)
			}
		}
	}
	for args, want := range map[string]string{
		"--help":                "Run 'berth COMMAND --help'",
		"-h":                    "Commands:",
		"image --help":          "Run 'berth image COMMAND --help'",
		"image import --help":   "--name string",
		"image ls -h":           "--format string",
		"ps x --help":           "-a, --all",
		"completion --help":     "bash|zsh",
		"version --format=json": `"stage_protocol": "berth-stage-`,
	} {
		r := berth(t, strings.Fields(args)...)
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("berth %s: exit %d, stdout lacks %q:\n%s%s", args, r.code, want, r.stdout, r.stderr)
		}
	}
	for _, args := range []string{"run --no-such-flag x", "image", "nosuch", "help nosuch"} {
		r := berth(t, strings.Fields(args)...)
		if r.code != 125 || strings.Count(r.stderr, "\n") != 1 || r.stdout != "" {
			t.Errorf("berth %s: exit %d, stderr %q, stdout %q; want 125 and one line", args, r.code, r.stderr, r.stdout)
		}
	}
}

// TestCLICompletionBash loads `berth completion bash` into bash and
// completes as bash would on TAB: verbs, and the image names under the
// --root given on the line.
func TestCLICompletionBash(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash is not installed")
	}
	img := busybox(t)
	complete := func(words ...string) []string {
		t.Helper()
		script := `source <("$BERTH" completion bash) || exit 1
COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
_berth; printf '%s\n' "${COMPREPLY[@]}"`
		cmd := exec.Command(bash, append([]string{"-c", script, "bash", berthBin}, words...)...)
		cmd.Env = append(cmd.Environ(), "BERTH="+berthBin)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("complete %q: %v", words, err)
		}
		return strings.Fields(string(out))
	}
	got := complete("")
	for _, verb := range []string{"run", "exec", "ps", "image", "completion", "version"} {
		if !strings.Contains(" "+strings.Join(got, " ")+" ", " "+verb+" ") {
			t.Errorf("verbs %q lack %s", got, verb)
		}
	}
	if got := complete("--root", berthRoot, "run", "-it", img[:3]); !strings.Contains(strings.Join(got, " "), img) {
		t.Errorf("run %s<TAB>: %q, want %s", img[:3], got, img)
	}
	if got := complete("run", "--log"); strings.Join(got, " ") != "--log-opt" {
		t.Errorf("run --log<TAB>: %q", got)
	}
}

// TestCLICompletionZsh loads `berth completion zsh` into zsh with
// _describe replaced by a printer, and checks what a TAB would offer:
// flag values, and image names with their colons escaped for _describe.
func TestCLICompletionZsh(t *testing.T) {
	zsh, err := exec.LookPath("zsh")
	if err != nil {
		t.Skip("zsh is not installed")
	}
	img := busybox(t)
	script := `source <("$BERTH" completion zsh) || exit 1
_describe() { print -rl -- "${(@P)4}"; }
words=("$@"); CURRENT=$#; _berth`
	complete := func(words ...string) string {
		t.Helper()
		cmd := exec.Command(zsh, append([]string{"-f", "-c", script, "zsh", berthBin}, words...)...)
		cmd.Env = append(cmd.Environ(), "BERTH="+berthBin)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("complete %q: %v", words, err)
		}
		return string(out)
	}
	if got := complete("run", "--network", ""); got != "none\nhost\n" {
		t.Errorf("run --network <TAB>: %q", got)
	}
	if got := complete("--root", berthRoot, "image", "rm", img[:3]); !strings.Contains(got, img+`\:`) {
		t.Errorf("image rm %s<TAB>: %q, want %s with its colon escaped", img[:3], got, img)
	}
}
