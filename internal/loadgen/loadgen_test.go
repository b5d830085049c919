package loadgen

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestRun_CountsRequestsAndErrors(t *testing.T) {
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	tests := []struct {
		name       string
		paths      []string
		wantErrors func(requests, errors int64) bool
	}{
		{"every 2xx is a success", []string{"/ok"}, func(_, errors int64) bool { return errors == 0 }},
		{"every non-2xx is an error", []string{"/fail"}, func(requests, errors int64) bool { return errors == requests }},
		{"a mix counts each", []string{"/ok", "/fail"}, func(requests, errors int64) bool { return errors > 0 && errors < requests }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			served.Store(0)
			var reqs []Request
			for _, p := range tt.paths {
				reqs = append(reqs, Request{Method: "GET", URL: srv.URL + p})
			}
			res, err := Run(context.Background(), Options{Requests: reqs, Concurrency: 4, Duration: 200 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if res.Requests == 0 || res.Requests > served.Load() {
				t.Fatalf("%d requests counted, %d served", res.Requests, served.Load())
			}
			if !tt.wantErrors(res.Requests, res.Errors) {
				t.Errorf("%d errors of %d requests", res.Errors, res.Requests)
			}
			if res.Errors > 0 && (len(res.FirstErrors) == 0 || !strings.Contains(res.FirstErrors[0], "HTTP 500")) {
				t.Errorf("first errors: %v", res.FirstErrors)
			}
		})
	}
}

func TestRun_RateCapsThroughput(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	res, err := Run(context.Background(), Options{Requests: []Request{{Method: "GET", URL: srv.URL}}, Concurrency: 4, Duration: time.Second, Rate: 200})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests < 150 || res.Requests > 210 {
		t.Errorf("%d requests in 1 s at a 200/s cap", res.Requests)
	}
}

func TestHistogram_PercentilesWithinOnePercent(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * 10 * time.Microsecond) // 10 µs .. 10 ms
	}
	tests := []struct {
		p    float64
		want time.Duration
	}{{0.5, 5 * time.Millisecond}, {0.99, 9900 * time.Microsecond}, {1, 10 * time.Millisecond}, {0.001, 10 * time.Microsecond}}
	for _, tt := range tests {
		got := h.percentile(tt.p)
		if got < tt.want || float64(got) > float64(tt.want)*1.1 {
			t.Errorf("p%v = %s, want %s (+10%%)", tt.p*100, got, tt.want)
		}
	}
	var empty histogram
	if empty.percentile(0.5) != 0 {
		t.Error("an empty histogram has a percentile")
	}
}

func TestRun_RejectsBadOptions(t *testing.T) {
	if _, err := Run(context.Background(), Options{Duration: time.Second}); err == nil {
		t.Error("no requests accepted")
	}
	if _, err := Run(context.Background(), Options{Requests: []Request{{Method: "GET", URL: "http://x"}}}); err == nil {
		t.Error("zero duration accepted")
	}
}
