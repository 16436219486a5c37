package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// moduleList is initramfs.ModulesList (a test checks), spelled out so
// that the agent does not link the initramfs builder and its ELF and
// compression packages: every page of the binary costs at start-up.
const moduleList = "/etc/berth/modules"

// module is one line of the initramfs's module list: the module's path
// and the names of the modules it depends on.
type module struct {
	path, name string
	deps       []string
}

// readModuleList reads the list internal/initramfs writes (ModulesList):
// one module per line, after those it depends on.
func readModuleList(path string) ([]module, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("module list: %w", err)
	}
	var mods []module
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		mods = append(mods, module{path: f[0], name: strings.TrimSuffix(filepath.Base(f[0]), ".ko"), deps: f[1:]})
	}
	return mods, nil
}

// selectModules leaves out of the list the modules named in skip (the
// other channel's driver) and those only they depend on; the order is
// kept.
func selectModules(mods []module, skip []string) []module {
	byName := map[string]module{}
	needed := map[string]bool{} // depended on by another module of the list
	for _, m := range mods {
		byName[m.name] = m
		for _, d := range m.deps {
			needed[d] = true
		}
	}
	keep := map[string]bool{}
	var mark func(string)
	mark = func(name string) {
		m, ok := byName[name]
		if !ok || keep[name] {
			return
		}
		keep[name] = true
		for _, d := range m.deps {
			mark(d)
		}
	}
	for _, m := range mods {
		if !needed[m.name] && !slices.Contains(skip, m.name) {
			mark(m.name) // a module of its own, not only a dependency
		}
	}
	var out []module
	for _, m := range mods {
		if keep[m.name] {
			out = append(out, m)
		}
	}
	return out
}

// moduleSet is the modules being inserted.
type moduleSet struct {
	done chan struct{}            // closed once all are in, or one failed
	each map[string]chan struct{} // closed once that module is in
	err  error
}

// insertModules inserts the modules named first and what they depend on,
// in order, and returns once they are in; the others are inserted in the
// background, in order, while the host says hello. Wait says when all
// are in.
//
// One at a time: inserting a module and probing its devices keeps the
// guest's CPU busy, so loading modules side by side only makes each of
// them, and the agent, wait longer.
func insertModules(mods []module, first []string) (*moduleSet, error) {
	byName := map[string]module{}
	for _, m := range mods {
		byName[m.name] = m
	}
	need := map[string]bool{}
	var mark func(string)
	mark = func(name string) {
		m, ok := byName[name]
		if !ok || need[name] {
			return // built in, or already marked
		}
		need[name] = true
		for _, d := range m.deps {
			mark(d)
		}
	}
	for _, name := range first {
		mark(name)
	}
	var rest []module
	for _, m := range mods { // list order is dependency order
		if !need[m.name] {
			rest = append(rest, m)
			continue
		}
		if err := insertModule(m.path); err != nil {
			return nil, err
		}
	}
	s := &moduleSet{done: make(chan struct{}), each: map[string]chan struct{}{}}
	for _, m := range rest {
		s.each[m.name] = make(chan struct{})
	}
	go func() {
		defer close(s.done)
		for _, m := range rest {
			if s.err = insertModule(m.path); s.err != nil {
				return
			}
			close(s.each[m.name])
		}
	}()
	return s, nil
}

// Wait waits until every module is in and returns the first failure.
func (s *moduleSet) Wait() error {
	<-s.done
	return s.err
}

// WaitFor waits until the module called name is in (at once for one
// inserted before boot went on, built in, or not in the list) and
// returns the failure that stopped the insertions before it, if any.
func (s *moduleSet) WaitFor(name string) error {
	ch, ok := s.each[name]
	if !ok {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-s.done:
		select {
		case <-ch:
			return nil
		default:
			return s.err
		}
	}
}

// insertModule inserts one module file; one already present (built in
// or loaded) is fine.
func insertModule(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("module %s: %w", p, err)
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), "", 0)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("insert module %s: %w", filepath.Base(p), err)
	}
	tracef("module " + filepath.Base(p))
	return nil
}
