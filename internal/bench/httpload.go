package bench

// The HTTP client of `berth bench scale`: it waits until a scaled web
// service answers from every replica, and loads a published port with
// small GETs. Every request is a new connection (no keep-alive), so each
// one goes through the balancer's choice of a replica, as a new client
// would.

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// httpClient makes one connection per request, each bounded by timeout.
// It speaks the HTTP/1.0 GET the bench needs itself: net/http, linked
// into berth, would cost every berth process its start-up (see
// TestNoRegistryClient).
type httpClient struct{ timeout time.Duration }

func newHTTPClient(timeout time.Duration) *httpClient { return &httpClient{timeout: timeout} }

// get returns the body of one GET of url (http://HOST:PORT/PATH),
// trimmed; a status other than 200 is an error.
func get(c *httpClient, url string) (string, error) {
	hostPath, ok := strings.CutPrefix(url, "http://")
	if !ok {
		return "", fmt.Errorf("GET %s: not an http:// URL", url)
	}
	host, path, _ := strings.Cut(hostPath, "/")
	conn, err := net.DialTimeout("tcp", host, c.timeout)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(c.timeout)); err != nil {
		return "", err
	}
	if _, err := fmt.Fprintf(conn, "GET /%s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host); err != nil {
		return "", err
	}
	b, err := io.ReadAll(io.LimitReader(conn, 64<<10))
	if err != nil {
		return "", err
	}
	head, body, ok := strings.Cut(string(b), "\r\n\r\n")
	if !ok {
		return "", fmt.Errorf("GET %s: no complete response", url)
	}
	status, _, _ := strings.Cut(head, "\r\n")
	if f := strings.Fields(status); len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/1.") || f[1] != "200" {
		return "", fmt.Errorf("GET %s: %s", url, status)
	}
	if len(body) > 4096 {
		body = body[:4096]
	}
	return strings.TrimSpace(body), nil
}

// WaitResult is how a wait for distinct answers went.
type WaitResult struct {
	Requests int `json:"requests"` // GETs made, answered or not
	Distinct int `json:"distinct"` // distinct bodies seen
}

// WaitDistinct GETs urls in turn, one at a time, until n distinct bodies
// have answered, and fails when timeout passes first. A request that
// fails (refused, reset, timed out) is tried again after a short pause:
// replicas that are starting refuse connections.
func WaitDistinct(urls []string, n int, timeout time.Duration) (WaitResult, error) {
	c := newHTTPClient(2 * time.Second)
	seen := map[string]bool{}
	var r WaitResult
	deadline := time.Now().Add(timeout)
	for i := 0; len(seen) < n; i++ {
		if time.Now().After(deadline) {
			return r, fmt.Errorf("%d distinct answers of %d wanted after %s and %d requests", len(seen), n, timeout, r.Requests)
		}
		r.Requests++
		body, err := get(c, urls[i%len(urls)])
		if err != nil {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		seen[body] = true
		r.Distinct = len(seen)
	}
	return r, nil
}

// LoadResult is one load sample.
type LoadResult struct {
	Requests  int   `json:"requests"`
	ElapsedNs int64 `json:"elapsed_ns"`
	Distinct  int   `json:"distinct"` // distinct bodies among the answers
}

// Load makes count GETs of url from conc concurrent clients, each over a
// new connection, and returns the time from the first to the last
// answer. Any failed request fails the sample: a rate that counts
// errors as answers measures nothing.
func Load(url string, count, conc int) (LoadResult, error) {
	c := newHTTPClient(30 * time.Second)
	var next atomic.Int64
	var mu sync.Mutex
	seen := map[string]bool{}
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(count) {
				body, err := get(c, url)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				seen[body] = true
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return LoadResult{}, firstErr
	}
	return LoadResult{Requests: count, ElapsedNs: elapsed.Nanoseconds(), Distinct: len(seen)}, nil
}
