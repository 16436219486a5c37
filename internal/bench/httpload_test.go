package bench

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// Three "replicas" behind one handler, answering in turn once the first
// few requests have been refused: WaitDistinct sees all three, Load
// counts its requests and the replicas that answered them, and a
// request that fails fails the sample.
func TestWaitDistinctAndLoad(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := n.Add(1)
		if i <= 2 {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "replica-%d\n", i%3)
	}))
	defer srv.Close()
	w, err := WaitDistinct([]string{srv.URL}, 3, 10*time.Second)
	if err != nil || w.Distinct != 3 || w.Requests < 5 {
		t.Fatalf("WaitDistinct: %+v, %v", w, err)
	}
	if _, err := WaitDistinct([]string{srv.URL}, 4, 300*time.Millisecond); err == nil {
		t.Errorf("WaitDistinct of 4 from 3 replicas did not time out")
	}
	l, err := Load(srv.URL, 30, 4)
	if err != nil || l.Requests != 30 || l.Distinct != 3 || l.ElapsedNs <= 0 {
		t.Fatalf("Load: %+v, %v", l, err)
	}
	srv.Close()
	if _, err := Load(srv.URL, 5, 2); err == nil {
		t.Errorf("Load of a closed server did not fail")
	}
}
