// Package bench measures berth against its peers on the user's machine:
// each scenario runs berth and a peer alternately in one run and reports
// the ratio of their medians, so that load on the machine hits both alike.
package bench

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/usage"
)

// Subject is one side of a comparison: a command, or a function, run
// once per sample.
type Subject struct {
	Name string
	Argv []string
	Env  []string // added to berth's environment
	// Run, when set, is the sample instead of Argv.
	Run func() error
	// Label, when set, runs after each sample, untimed, and says how that
	// sample really ran (read from what it made, not from a setting): a VM
	// from its template or a cold boot, say. It may also clean up.
	Label func() (string, error)
}

// Sample times one run of s. A run that fails is an error: a benchmark of
// failing commands measures nothing.
func Sample(s Subject) (time.Duration, string, error) {
	var d time.Duration
	if s.Run != nil {
		start := time.Now()
		err := s.Run()
		d = time.Since(start)
		if err != nil {
			return 0, "", fmt.Errorf("%s: %v", s.Name, err)
		}
	} else {
		cmd := exec.Command(s.Argv[0], s.Argv[1:]...)
		if len(s.Env) > 0 {
			cmd.Env = append(os.Environ(), s.Env...)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		start := time.Now()
		err := cmd.Run()
		d = time.Since(start)
		if err != nil {
			return 0, "", fmt.Errorf("%s: %v: %s", s.Name, err, strings.TrimSpace(stderr.String()))
		}
	}
	if s.Label == nil {
		return d, "", nil
	}
	label, err := s.Label()
	if err != nil {
		return 0, "", fmt.Errorf("%s: %v", s.Name, err)
	}
	return d, label, nil
}

// Result is the outcome of one alternating comparison.
type Result struct {
	Scenario string          `json:"scenario"`
	Runs     int             `json:"runs"`
	Medians  map[string]Msec `json:"median_ms"`
	// Spreads has each subject's min, quartiles and max beside its median.
	Spreads map[string]Spread `json:"spread_ms"`
	Ratio   float64           `json:"ratio"` // first subject's median over the second's
	// Ratios has every subject's median but the second's over the
	// second's, when there are more than two.
	Ratios map[string]float64 `json:"ratios,omitempty"`
	// Labels counts, per subject with a Label, how its samples really ran.
	Labels   map[string]map[string]int `json:"labels,omitempty"`
	Subjects []string                  `json:"subjects"`
	Note     string                    `json:"note,omitempty"`
	// Pairs, when set, names the ratios to print instead of each subject
	// over the second: each pair is (subject, its peer).
	Pairs [][2]string `json:"pairs,omitempty"`
}

// Spread is where a subject's samples lie: min, first quartile, median,
// third quartile, max.
type Spread struct {
	Min    Msec `json:"min"`
	P25    Msec `json:"p25"`
	Median Msec `json:"median"`
	P75    Msec `json:"p75"`
	Max    Msec `json:"max"`
}

// Msec is a duration printed in milliseconds.
type Msec float64

// Compare runs a and b (and any more subjects) alternately n times
// each, after one warm-up run of each, and returns the medians, spreads and
// a's median over b's (and each other's over b's). The order rotates from
// one round to the next, so that no subject always follows the same one.
func Compare(scenario string, a, b Subject, n int, more ...Subject) (Result, error) {
	subjects := append([]Subject{a, b}, more...)
	for _, s := range subjects {
		if _, _, err := Sample(s); err != nil {
			return Result{}, err
		}
	}
	times := map[string][]time.Duration{}
	r := Result{Scenario: scenario, Runs: n, Medians: map[string]Msec{}, Spreads: map[string]Spread{}}
	for i := 0; i < n; i++ {
		for j := range subjects {
			s := subjects[(i+j)%len(subjects)]
			d, label, err := Sample(s)
			if err != nil {
				return Result{}, err
			}
			times[s.Name] = append(times[s.Name], d)
			if s.Label != nil && label != "" {
				if r.Labels == nil {
					r.Labels = map[string]map[string]int{}
				}
				if r.Labels[s.Name] == nil {
					r.Labels[s.Name] = map[string]int{}
				}
				r.Labels[s.Name][label]++
			}
		}
	}
	for _, s := range subjects {
		r.Subjects = append(r.Subjects, s.Name)
		r.Medians[s.Name] = ms(Median(times[s.Name]))
		r.Spreads[s.Name] = SpreadOf(times[s.Name])
	}
	base := float64(Median(times[b.Name]))
	r.Ratio = float64(Median(times[a.Name])) / base
	if len(more) > 0 {
		r.Ratios = map[string]float64{}
		for _, s := range subjects {
			if s.Name != b.Name {
				r.Ratios[s.Name] = float64(Median(times[s.Name])) / base
			}
		}
	}
	return r, nil
}

// RatioOf is subject a's median over subject b's.
func (r Result) RatioOf(a, b string) float64 {
	return float64(r.Medians[a]) / float64(r.Medians[b])
}

func ms(d time.Duration) Msec { return Msec(float64(d.Microseconds()) / 1000) }

// Median of ds (the mean of the middle two for an even count).
func Median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := sorted(ds)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func sorted(ds []time.Duration) []time.Duration {
	s := append([]time.Duration{}, ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s
}

// SpreadOf ds: quartiles by linear interpolation between the closest
// ranks, as most statistics tools compute them.
func SpreadOf(ds []time.Duration) Spread {
	q := Quartiles(ds)
	return Spread{Min: ms(q[0]), P25: ms(q[1]), Median: ms(q[2]), P75: ms(q[3]), Max: ms(q[4])}
}

// Quartiles of ds: min, first quartile, median, third quartile, max,
// as SpreadOf reports them, at full resolution; zeros when ds is empty.
func Quartiles(ds []time.Duration) [5]time.Duration {
	if len(ds) == 0 {
		return [5]time.Duration{}
	}
	s := sorted(ds)
	q := func(p float64) time.Duration {
		x := p * float64(len(s)-1)
		i := int(x)
		if i+1 >= len(s) {
			return s[i]
		}
		return s[i] + time.Duration((x-float64(i))*float64(s[i+1]-s[i]))
	}
	return [5]time.Duration{s[0], q(0.25), Median(s), q(0.75), s[len(s)-1]}
}

// Print writes r as a few human-readable lines.
func (r Result) Print(w io.Writer) {
	fmt.Fprintf(w, "%s (%d alternating runs each)\n", r.Scenario, r.Runs)
	for _, s := range r.Subjects {
		sp := r.Spreads[s]
		fmt.Fprintf(w, "  %-36s median %8.1f ms  (IQR %.1f-%.1f, min %.1f, max %.1f)", s, float64(r.Medians[s]), sp.P25, sp.P75, sp.Min, sp.Max)
		if l := r.Labels[s]; len(l) > 0 {
			var parts []string
			for k, n := range l {
				parts = append(parts, fmt.Sprintf("%d %s", n, k))
			}
			sort.Strings(parts)
			fmt.Fprintf(w, "  [%s]", strings.Join(parts, ", "))
		}
		fmt.Fprintln(w)
	}
	if len(r.Pairs) > 0 {
		for _, p := range r.Pairs {
			fmt.Fprintf(w, "  ratio %s / %s = %.2f\n", p[0], p[1], r.RatioOf(p[0], p[1]))
		}
	} else {
		b := r.Subjects[1]
		fmt.Fprintf(w, "  ratio %s / %s = %.2f\n", r.Subjects[0], b, r.Ratio)
		for _, s := range r.Subjects[2:] {
			fmt.Fprintf(w, "  ratio %s / %s = %.2f\n", s, b, r.Ratios[s])
		}
	}
	if r.Note != "" {
		fmt.Fprintf(w, "  %s\n", r.Note)
	}
}

// PSS returns the proportional set size of process pid in KiB: its
// private memory plus its share of the pages it shares with others.
func PSS(pid int) (int64, error) { return smapsField(pid, "Pss:") }

// RSS returns the resident set size of process pid in KiB.
func RSS(pid int) (int64, error) { return smapsField(pid, "Rss:") }

func smapsField(pid int, key string) (int64, error) {
	return usage.KBField("/proc/"+strconv.Itoa(pid)+"/smaps_rollup", key)
}

// Tree returns pid and all its descendants, from /proc.
func Tree(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		_, f, err := usage.StatFields("/proc/" + e.Name())
		if err != nil || len(f) < 2 {
			continue
		}
		if pp, err := strconv.Atoi(f[1]); err == nil {
			children[pp] = append(children[pp], p)
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}
