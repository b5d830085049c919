// Command load compares the routing API's throughput with a bare net/http
// handler's, over real loopback TCP, in one process and one run: the same
// client drives each target in turn, for several rounds, and the median
// round counts. Target: users_for_states and interested_users at ≥ 70% of
// the bare handler's requests per second. With --groups, issue 25's
// target instead: users_for_states of 100 members' states with one
// 10,000-member group and 100 always-send users at ≥ 80% of the same call
// with the always-send users alone.
//
//	go run ./bench/load [--duration 3s] [--rounds 3] [--concurrency 32] [--quick] [--groups]
package main

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/internal/benchdata"
	"github.com/presence-router/presence-router/internal/loadgen"
	"github.com/presence-router/presence-router/router"
	"github.com/presence-router/presence-router/rules"
)

const token = "bench-router-token-0123456789abcdef"

func main() {
	duration := pflag.Duration("duration", 3*time.Second, "time per target per round")
	rounds := pflag.Int("rounds", 3, "rounds; the median counts")
	concurrency := pflag.Int("concurrency", 32, "parallel connections")
	blacklistSize := pflag.Int("blacklist", 1_000_000, "blacklist entries")
	quick := pflag.Bool("quick", false, "a short smoke run")
	groups := pflag.Bool("groups", false, "compare one 10,000-member group with always-send alone (issue 25), nothing else")
	pflag.Parse()
	if *quick {
		*duration, *rounds, *blacklistSize = 300*time.Millisecond, 1, 10_000
	}
	var err error
	if *groups {
		err = runGroups(*duration, *rounds, *concurrency)
	} else {
		err = run(*duration, *rounds, *concurrency, *blacklistSize)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

func users(prefix string, n int) []id.UserID {
	out := make([]id.UserID, n)
	for i := range out {
		out[i] = id.UserID(fmt.Sprintf("@%s%07d:example.org", prefix, i))
	}
	return out
}

func serve(h http.Handler) (string, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("failed to listen: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return "http://" + l.Addr().String(), func() { _ = srv.Close() }, nil
}

func statesBody(blacklist []id.UserID, n int) []byte {
	var b strings.Builder
	b.WriteString(`{"states":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		user := fmt.Sprintf("@user%d:example.org", i)
		if i%10 == 0 {
			user = string(blacklist[i%len(blacklist)])
		}
		fmt.Fprintf(&b, `{"user_id":%q}`, user) // what the adapter sends (presence_router_adapter._states_body)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

func run(duration time.Duration, rounds, concurrency, blacklistSize int) error {
	fmt.Printf("machine: %d cores; %d rounds of %s per target, %d connections; blacklist %d entries, 10 always-send users\n",
		numCPU(), rounds, duration, concurrency, blacklistSize)
	blacklist := users("blocked", blacklistSize)
	engine := router.NewEngine("", 1, users("dash", 10), blacklist, nil)
	routerURL, stopRouter, err := serve(router.NewHandler(engine, router.HandlerOptions{Token: token, Metrics: router.NewMetrics(prometheus.NewRegistry())}))
	if err != nil {
		return err
	}
	defer stopRouter()
	// The same exact entries and 1,000 patterns besides (issue 15's mix:
	// prefixes, suffixes, a few with ?), on a listener of its own.
	patterned := append(slices.Clone(blacklist), benchdata.Patterns(1000)...)
	patternURL, stopPatterns, err := serve(router.NewHandler(router.NewEngine("", 1, users("dash", 10), patterned, nil), router.HandlerOptions{Token: token}))
	if err != nil {
		return err
	}
	defer stopPatterns()
	bareBody := []byte(`{"version":1,"routes":[{"users":["@dash0000000:example.org"],"states":[0]}]}`)
	// The bare handler reads the request body, as any handler must, and
	// writes a fixed answer: what is left is the cost of HTTP itself.
	bareURL, stopBare, err := serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(bareBody)
	}))
	if err != nil {
		return err
	}
	defer stopBare()
	auth := http.Header{"Authorization": {"Bearer " + token}, "Content-Type": {"application/json"}}
	var targets []target // each measured against the bare handler with the same request, unless said
	addPair := func(name string, req loadgen.Request) {
		bareReq := loadgen.Request{Method: req.Method, URL: bareURL + "/", Header: req.Header, Body: req.Body}
		targets = append(targets,
			target{fmt.Sprintf("bare, %s %dB", req.Method, len(req.Body)), bareReq, -1, 0},
			target{name, req, len(targets), 0.7})
	}
	addPair("users_for_states (1 state)", loadgen.Request{Method: "POST", URL: routerURL + router.Prefix + "users_for_states", Header: auth, Body: statesBody(blacklist, 1)})
	addPair("users_for_states (10 states)", loadgen.Request{Method: "POST", URL: routerURL + router.Prefix + "users_for_states", Header: auth, Body: statesBody(blacklist, 10)})
	addPair("users_for_states (100 states)", loadgen.Request{Method: "POST", URL: routerURL + router.Prefix + "users_for_states", Header: auth, Body: statesBody(blacklist, 100)})
	addPair("interested_users (always-send)", loadgen.Request{Method: "GET", URL: routerURL + router.Prefix + "interested_users?user_id=%40dash0000003%3Aexample.org", Header: auth})
	targets = append(targets, target{"interested_users (ordinary)", loadgen.Request{Method: "GET", URL: routerURL + router.Prefix + "interested_users?user_id=%40bob%3Aexample.org", Header: auth}, len(targets) - 2, 0.7})
	// Against the exact entries alone, same request, same run: ≥ 80%.
	exactOnly := slices.IndexFunc(targets, func(t target) bool { return t.name == "users_for_states (100 states)" })
	targets = append(targets, target{"users_for_states (100 states) +1,000 patterns, vs exact only", loadgen.Request{Method: "POST", URL: patternURL + router.Prefix + "users_for_states", Header: auth, Body: statesBody(blacklist, 100)}, exactOnly, 0.8})
	return measure(targets, duration, rounds, concurrency, "target ≥ 70% of the bare handler, same request (≥ 80% of exact only for the patterns)")
}

// runGroups measures issue 25's target: the routing API with one
// 10,000-member group and 100 always-send users against the same 100
// always-send users alone, the same request (100 members' states, from a
// client that holds this version's recipients and the group's members, as
// the adapter does between changes), each engine on a listener of its own.
func runGroups(duration time.Duration, rounds, concurrency int) error {
	fmt.Printf("machine: %d cores; %d rounds of %s per target, %d connections; one 10,000-member group, 100 always-send users\n",
		numCPU(), rounds, duration, concurrency)
	always, members := users("dash", 100), users("member", 10_000)
	aloneURL, stopAlone, err := serve(router.NewHandler(router.NewEngine("", 1, always, nil, nil), router.HandlerOptions{Token: token}))
	if err != nil {
		return err
	}
	defer stopAlone()
	grouped := router.LoadEngine("", &rules.Snapshot{Version: 1, AlwaysSend: always, Groups: map[rules.GroupName][]id.UserID{"everyone": members}}, nil)
	groupURL, stopGroup, err := serve(router.NewHandler(grouped, router.HandlerOptions{Token: token}))
	if err != nil {
		return err
	}
	defer stopGroup()
	var b strings.Builder
	b.WriteString(`{"states":[`)
	for i := range 100 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"user_id":%q}`, members[i*97])
	}
	b.WriteString(`]}`)
	body := []byte(b.String())
	auth := http.Header{"Authorization": {"Bearer " + token}, "Content-Type": {"application/json"}}
	path := router.Prefix + "users_for_states?known_version=1&known_groups=everyone"
	// The grouped answer must be what is measured: the always-send route
	// and the group's, each with the 100 states.
	want := `{"version":1,"routes":[{"all_recipients":true,"states":[` + strings.Trim(strings.Repeat("N,", 100), ",") + `]},{"group":true,"key":"everyone","known":true,"states":[`
	if err := checkAnswer(groupURL+path, auth, body, want); err != nil {
		return err
	}
	return measure([]target{
		{"100 states, always-send alone", loadgen.Request{Method: "POST", URL: aloneURL + path, Header: auth, Body: body}, -1, 0},
		{"the same + 10,000-member group", loadgen.Request{Method: "POST", URL: groupURL + path, Header: auth, Body: body}, 0, 0.8},
	}, duration, rounds, concurrency, "target ≥ 80% of always-send alone, same request")
}

// checkAnswer posts body to url and checks that the answer starts as want
// does, where N stands for any state index.
func checkAnswer(url string, header http.Header, body []byte, want string) error {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("failed to make the check request: %w", err)
	}
	req.Header = header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("failed to send the check request: %w", err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("failed to read the check answer: %w", err)
	}
	shape := regexp.MustCompile(`\b\d+\b`).ReplaceAllString(string(got), "N")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(shape, strings.ReplaceAll(want, "version\":1", "version\":N")) {
		return fmt.Errorf("unexpected answer %d: %.300s", resp.StatusCode, got)
	}
	return nil
}

// target is one request to drive, and the target it is measured against.
type target struct {
	name string
	req  loadgen.Request
	ref  int // index of the reference target; -1: is a reference
	min  float64
}

// measure drives each target in turn, rounds times, and prints each one's
// median round and its ratio to its reference.
func measure(targets []target, duration time.Duration, rounds, concurrency int, legend string) error {
	client := loadgen.NewClient(concurrency)
	results := make([][]*loadgen.Result, len(targets))
	for round := range rounds {
		for i, t := range targets {
			res, err := loadgen.Run(context.Background(), loadgen.Options{Requests: []loadgen.Request{t.req}, Concurrency: concurrency, Duration: duration, Client: client})
			if err != nil {
				return err
			}
			if res.Errors > 0 {
				return fmt.Errorf("%s: %d errors in round %d: %v", t.name, res.Errors, round+1, res.FirstErrors)
			}
			results[i] = append(results[i], res)
		}
	}
	median := func(rs []*loadgen.Result) *loadgen.Result {
		sorted := slices.Clone(rs)
		slices.SortFunc(sorted, func(a, b *loadgen.Result) int { return cmp.Compare(a.RPS(), b.RPS()) })
		return sorted[len(sorted)/2]
	}
	fmt.Printf("%-32s %10s %10s %10s %8s  %s\n", "target", "req/s", "p50", "p99", "vs ref", legend)
	for i, t := range targets {
		res := median(results[i])
		ratio, verdict := "", ""
		if t.ref >= 0 {
			r := res.RPS() / median(results[t.ref]).RPS()
			ratio, verdict = fmt.Sprintf("%.0f%%", r*100), "PASS"
			if r < t.min {
				verdict = "MISS"
			}
		}
		fmt.Printf("%-32s %10.0f %10s %10s %8s  %s\n", t.name, res.RPS(), res.Percentile(0.5), res.Percentile(0.99), ratio, verdict)
	}
	return nil
}

func numCPU() int { return runtime.NumCPU() }
