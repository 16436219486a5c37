package test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/testutil"
)

// A netLab is the network world of one test, made of namespaces of its
// own and nothing else: "host", where berth runs as on a machine of its
// own, and "outside", joined to the host by a veth, with addresses of
// TEST-NET-3. Traffic goes only between them and to loopback.
type netLab struct {
	t             *testing.T
	host, outside string // the namespaces' names under /run/netns
}

// The lab's addresses: the host's side of the outside link, and the
// outside's.
const (
	labHostIP    = "203.0.113.1"
	labOutsideIP = "203.0.113.2"
)

var labSeq atomic.Int32

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// newNetLab makes a lab; its namespaces and everything in them go when
// the test ends, after the instances berth runs there are removed.
func newNetLab(t *testing.T) *netLab {
	t.Helper()
	testutil.NeedRoot(t, "network namespaces")
	testutil.NeedTool(t, "ip")
	testutil.NeedTool(t, "nsenter")
	n := labSeq.Add(1)
	l := &netLab{t: t, host: fmt.Sprintf("bth%d-%d", os.Getpid(), n), outside: fmt.Sprintf("bto%d-%d", os.Getpid(), n)}
	ipCmd(t, "netns", "add", l.host)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.host).Run() })
	ipCmd(t, "netns", "add", l.outside)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.outside).Run() })
	ipCmd(t, "-n", l.host, "link", "set", "lo", "up")
	ipCmd(t, "-n", l.outside, "link", "set", "lo", "up")
	ipCmd(t, "-n", l.host, "link", "add", "out0", "type", "veth", "peer", "name", "out0", "netns", l.outside)
	ipCmd(t, "-n", l.host, "addr", "add", labHostIP+"/24", "dev", "out0")
	ipCmd(t, "-n", l.outside, "addr", "add", labOutsideIP+"/24", "dev", "out0")
	ipCmd(t, "-n", l.host, "link", "set", "out0", "up")
	ipCmd(t, "-n", l.outside, "link", "set", "out0", "up")
	return l
}

// berth runs berth in the lab's host namespace.
func (l *netLab) berth(args ...string) result {
	l.t.Helper()
	return berthVia(l.t, []string{"nsenter", "--net=/run/netns/" + l.host}, 2*time.Minute, nil, nil, args...)
}

// berthEnv is berth with env added.
func (l *netLab) berthEnv(env []string, args ...string) result {
	l.t.Helper()
	return berthVia(l.t, []string{"nsenter", "--net=/run/netns/" + l.host}, 2*time.Minute, env, nil, args...)
}

// must is berth failing the test unless it exits 0.
func (l *netLab) must(args ...string) string {
	l.t.Helper()
	r := l.berth(args...)
	if r.code != 0 {
		l.t.Fatalf("berth %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// run runs a detached instance in the lab, removed when the test ends.
func (l *netLab) run(args ...string) string {
	l.t.Helper()
	id := strings.TrimSpace(l.must(append([]string{"run", "-d"}, args...)...))
	l.t.Cleanup(func() { l.berth("rm", "-f", id) })
	return id
}

// sh runs a command in one of the lab's namespaces.
func (l *netLab) sh(ns string, args ...string) (string, error) {
	out, err := exec.Command("nsenter", append([]string{"--net=/run/netns/" + ns}, args...)...).CombinedOutput()
	return string(out), err
}

// in runs fn on a thread inside namespace ns: sockets fn makes belong
// to ns for good, whichever thread later uses them.
func (l *netLab) in(ns string, fn func()) {
	l.t.Helper()
	errc := make(chan error, 1)
	go func() {
		// The thread goes back to its own namespace before it is handed
		// back; if it cannot, it stays locked and ends with the
		// goroutine. (Never left in ns: the goroutine may be on the main
		// thread, which Go does not end, and whose namespace
		// /proc/self/ns shows.)
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer self.Close()
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		fn()
		if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		l.t.Fatalf("enter namespace %s: %v", ns, err)
	}
}

// listen listens on TCP addr inside ns.
func (l *netLab) listen(ns, addr string) net.Listener {
	l.t.Helper()
	var ln net.Listener
	var err error
	l.in(ns, func() { ln, err = net.Listen("tcp", addr) })
	if err != nil {
		l.t.Fatalf("listen %s in %s: %v", addr, ns, err)
	}
	l.t.Cleanup(func() { ln.Close() })
	return ln
}

// serveOutside serves HTTP on the outside's address at port: every
// answer is the client's address as the outside sees it.
func (l *netLab) serveOutside(port int) {
	ln := l.listen(l.outside, fmt.Sprintf("%s:%d", labOutsideIP, port))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "from %s\n", r.RemoteAddr)
	})}
	go srv.Serve(ln)
	l.t.Cleanup(func() { srv.Close() })
}

// get fetches url from inside namespace ns, retrying for a few seconds
// while the connection is refused or reset (a server starting).
func (l *netLab) get(ns, url string) (string, error) {
	var body string
	var err error
	for i := 0; i < 50; i++ {
		if body, err = l.getOnce(ns, url); err == nil {
			return body, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return body, err
}

// getOnce fetches url from inside namespace ns, once, on a connection
// dialled there (a transport would dial later, on threads outside ns).
func (l *netLab) getOnce(ns, url string) (string, error) {
	return l.getWithin(ns, url, 10*time.Second)
}

// getWithin is getOnce with the request bounded by limit.
func (l *netLab) getWithin(ns, url string, limit time.Duration) (string, error) {
	var conn net.Conn
	var err error
	host, path, _ := strings.Cut(strings.TrimPrefix(url, "http://"), "/")
	l.in(ns, func() { conn, err = net.DialTimeout("tcp", host, 5*time.Second) })
	if err != nil {
		return "", err
	}
	client := &http.Client{Timeout: limit, Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil }}}
	resp, err := client.Get("http://" + host + "/" + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// dnsOutside serves DNS on the outside's address: each name in answers
// has its A record (and no other); every other name is NXDOMAIN. It
// returns the names it was asked for.
func (l *netLab) dnsOutside(answers map[string]string) *sync.Map {
	seen := &sync.Map{}
	var pc net.PacketConn
	var err error
	l.in(l.outside, func() { pc, err = net.ListenPacket("udp", labOutsideIP+":53") })
	if err != nil {
		l.t.Fatalf("listen for DNS outside: %v", err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, qq := range q.Question {
			seen.Store(strings.ToLower(qq.Name), true)
			ip, ok := answers[strings.ToLower(qq.Name)]
			if !ok {
				m.Rcode = dns.RcodeNameError
			} else if qq.Qtype == dns.TypeA {
				rr, _ := dns.NewRR(qq.Name + " 60 IN A " + ip)
				m.Answer = append(m.Answer, rr)
			}
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	l.t.Cleanup(func() { srv.Shutdown() })
	return seen
}
