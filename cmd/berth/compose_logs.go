package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"sync"
	"syscall"

	"github.com/berth-dev/berth/internal/instance"
	"github.com/berth-dev/berth/internal/lifecycle"
	"github.com/berth-dev/berth/internal/project"
)

func notifySignals(ch chan os.Signal) {
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
}

// prefixed writes whole lines to w, each after prefix, under mu.
type prefixed struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *prefixed) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		p.mu.Lock()
		_, err := fmt.Fprintf(p.w, "%s | %s\n", p.prefix, p.buf[:i])
		p.mu.Unlock()
		p.buf = p.buf[i+1:]
		if err != nil {
			return len(b), err
		}
	}
}

// followServices prints the logs of the replicas of p's services (all
// when services is empty), each line after its replica's name, as
// Compose does, following them until they end.
func followServices(g *globals, p *project.Project, services []string, follow bool) error {
	st, err := g.instanceStore()
	if err != nil {
		return err
	}
	ins, err := projectInstances(g, p.Name)
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, s := range services {
		want[s] = true
	}
	sort.Slice(ins, func(i, j int) bool { return ins[i].Name < ins[j].Name })
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, in := range ins {
		if len(want) > 0 && !want[in.Labels[project.LabelService]] {
			continue
		}
		in := in
		done := func() bool {
			cur, err := st.Get(in.ID)
			return err != nil || lifecycle.Reconcile(st, cur).Status == instance.Stopped
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := &prefixed{mu: &mu, w: os.Stdout, prefix: in.Name}
			errw := &prefixed{mu: &mu, w: os.Stderr, prefix: in.Name}
			_ = instance.ReadLogs(st.LogPath(in.ID), out, errw, follow, done)
		}()
	}
	wg.Wait()
	return nil
}
