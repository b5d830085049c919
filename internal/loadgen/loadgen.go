// Package loadgen drives HTTP load against a list of requests for a fixed
// time and reports throughput, errors and latency percentiles. The routing
// API's load benchmark (bench/load) and the load test against a running
// stack (e2e) share it, so both measure the same way.
package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// Request is one request template; Run cycles through them.
type Request struct {
	Method string
	URL    string
	Header http.Header
	Body   []byte
}

// Options says what to send, how hard and for how long.
type Options struct {
	Requests    []Request
	Concurrency int           // parallel connections; 0: 16
	Duration    time.Duration // how long to send
	// Rate caps the total requests per second (0: as fast as possible).
	// Latency is measured from each request's actual start.
	Rate int
	// Client is the HTTP client; nil: one with keep-alive sized for
	// Concurrency.
	Client *http.Client
}

// Result is what a run measured.
type Result struct {
	Requests    int64
	Errors      int64
	FirstErrors []string // up to 5 error texts
	Elapsed     time.Duration
	hist        histogram
}

// RPS is the rate of completed requests (errors included).
func (r *Result) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// Percentile returns the latency below which the fraction p (0..1) of the
// requests completed: the upper bound of its bucket, at most 9% above.
func (r *Result) Percentile(p float64) time.Duration { return r.hist.percentile(p) }

// Max is the slowest request's latency (bucket precision).
func (r *Result) Max() time.Duration { return r.hist.percentile(1) }

// String is a one-line summary.
func (r *Result) String() string {
	return fmt.Sprintf("%d requests in %s (%.0f req/s), %d errors, p50 %s, p99 %s, max %s",
		r.Requests, r.Elapsed.Round(time.Millisecond), r.RPS(), r.Errors,
		r.Percentile(0.5), r.Percentile(0.99), r.Max())
}

// NewClient returns a keep-alive client for concurrency connections to one
// host.
func NewClient(concurrency int) *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConns = concurrency * 2
	transport.MaxIdleConnsPerHost = concurrency * 2
	transport.MaxConnsPerHost = 0
	return &http.Client{Transport: transport, Timeout: 30 * time.Second}
}

// Run sends load until opts.Duration has passed or ctx ends.
func Run(ctx context.Context, opts Options) (*Result, error) {
	if len(opts.Requests) == 0 {
		return nil, fmt.Errorf("failed to run load: no requests")
	}
	if opts.Duration <= 0 {
		return nil, fmt.Errorf("failed to run load: duration must be positive")
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 16
	}
	if opts.Client == nil {
		opts.Client = NewClient(opts.Concurrency)
	}
	var interval time.Duration
	if opts.Rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(opts.Concurrency) / float64(opts.Rate))
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Duration)
	defer cancel()
	results := make([]Result, opts.Concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range opts.Concurrency {
		wg.Go(func() {
			res := &results[w]
			next := start.Add(interval * time.Duration(w) / time.Duration(opts.Concurrency))
			for i := w; ctx.Err() == nil; i++ {
				if interval > 0 {
					if wait := time.Until(next); wait > 0 {
						select {
						case <-ctx.Done():
							return
						case <-time.After(wait):
						}
					}
					next = next.Add(interval)
				}
				began := time.Now()
				err := send(ctx, opts.Client, opts.Requests[i%len(opts.Requests)])
				if err != nil && ctx.Err() != nil {
					return // cut off by the end of the run, not a failure
				}
				res.Requests++
				res.hist.add(time.Since(began))
				if err != nil {
					res.Errors++
					if len(res.FirstErrors) < 5 {
						res.FirstErrors = append(res.FirstErrors, err.Error())
					}
				}
			}
		})
	}
	wg.Wait()
	total := &Result{Elapsed: min(time.Since(start), opts.Duration)}
	for i := range results {
		total.Requests += results[i].Requests
		total.Errors += results[i].Errors
		for _, e := range results[i].FirstErrors {
			if len(total.FirstErrors) < 5 {
				total.FirstErrors = append(total.FirstErrors, e)
			}
		}
		total.hist.merge(&results[i].hist)
	}
	return total, nil
}

func send(ctx context.Context, client *http.Client, tmpl Request) error {
	req, err := http.NewRequestWithContext(ctx, tmpl.Method, tmpl.URL, bytes.NewReader(tmpl.Body))
	if err != nil {
		return fmt.Errorf("failed to build request: %w", err)
	}
	for k, v := range tmpl.Header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("failed to send request: %w", err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return fmt.Errorf("failed to read response: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: HTTP %d", tmpl.Method, tmpl.URL, resp.StatusCode)
	}
	return nil
}

// histogram counts latencies in log-linear buckets: 100 buckets per decade
// from 1 µs to 100 s, so memory stays fixed however long the run.
type histogram struct {
	counts [bucketsPerDecade * decades]int64
	total  int64
}

const (
	bucketsPerDecade = 100
	decades          = 8 // 1 µs .. 100 s
)

func bucketOf(d time.Duration) int {
	us := float64(d) / float64(time.Microsecond)
	if us < 1 {
		return 0
	}
	decade := 0
	for us >= 10 && decade < decades-1 {
		us /= 10
		decade++
	}
	// us is in [1, 10): spread it over the decade's buckets.
	i := int((us - 1) / 9 * bucketsPerDecade)
	return decade*bucketsPerDecade + min(i, bucketsPerDecade-1)
}

// upperBound is the largest latency bucket i holds.
func upperBound(i int) time.Duration {
	decade, pos := i/bucketsPerDecade, i%bucketsPerDecade
	us := 1 + 9*float64(pos+1)/bucketsPerDecade
	for range decade {
		us *= 10
	}
	return time.Duration(us * float64(time.Microsecond)).Round(time.Microsecond)
}

func (h *histogram) add(d time.Duration) {
	h.counts[bucketOf(d)]++
	h.total++
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
}

func (h *histogram) percentile(p float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := int64(p*float64(h.total) + 0.5)
	rank = max(1, min(rank, h.total))
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return upperBound(i)
		}
	}
	return upperBound(len(h.counts) - 1)
}
