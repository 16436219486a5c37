package bench

// The HTTP client of `berth bench scale`: it waits until a scaled web
// service answers from every replica, and loads a published port with
// small GETs. Every request is a new connection (no keep-alive), so each
// one goes through the balancer's choice of a replica, as a new client
// would.

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// httpClient makes one connection per request, each bounded by timeout.
func httpClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
	}
}

// get returns the body of one GET of url, trimmed; a status other than
// 200 is an error.
func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return strings.TrimSpace(string(b)), nil
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
	c := httpClient(2 * time.Second)
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
	c := httpClient(30 * time.Second)
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
