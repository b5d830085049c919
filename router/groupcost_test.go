package router

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/rules"
)

// TestBenchGroupCost is a benchmark (PR_BENCH_GROUPS=<rounds>; make bench
// runs it): the routing API's users_for_states of 100 states, through the
// handler as the adapter asks it (known_version and known_groups set),
// with one 10,000-member group and 100 always-send users, as a ratio of
// its calls per second to the same call with the 100 always-send users
// alone, measured alternately in the same run. The target (at least 80%
// of the throughput) is measured over HTTP by go run ./bench/load
// --groups; this is the handler's own cost, a stricter figure. The
// states are the group's members', so that every answer routes through it.
// With an empty blacklist, the reference call looks each user up in an
// empty table (free), and the group's call in a table of 10,000 members;
// the second case gives both a blacklist, so that only the group differs.
func TestBenchGroupCost(t *testing.T) {
	rounds, _ := strconv.Atoi(os.Getenv("PR_BENCH_GROUPS"))
	if rounds <= 0 {
		t.Skip("a benchmark: set PR_BENCH_GROUPS=<rounds> (make bench does)")
	}
	always := users("dash", 100)
	members := users("member", 10_000)
	states := make([]string, 100)
	for i := range states {
		states[i] = fmt.Sprintf(`{"user_id":%q}`, members[i*97])
	}
	body := `{"states":[` + strings.Join(states, ",") + `]}`
	call := func(e *Engine, query string) func(b *testing.B) {
		h := NewHandler(e, HandlerOptions{Token: testToken})
		return func(b *testing.B) {
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, Prefix+"users_for_states?"+query, strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+testToken)
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("%d %s", w.Code, w.Body)
				}
			}
		}
	}
	median := func(v []float64) float64 { s := slices.Clone(v); slices.Sort(s); return s[len(s)/2] }
	for _, c := range []struct {
		name, query string
		blacklist   []id.UserID
	}{
		{"the adapter holding the group's members (known_groups)", "known_version=1&known_groups=" + groupRouteKey("everyone", false), nil},
		{"the same, both with 1,000 users on the blacklist", "known_version=1&known_groups=" + groupRouteKey("everyone", false), users("blocked", 1000)},
		{"a cold adapter (the members sent)", "known_version=1", nil},
	} {
		alone := NewEngine("example.org", 1, always, c.blacklist, nil)
		grouped := LoadEngine("example.org", &rules.Snapshot{Version: 1, AlwaysSend: always, Blacklist: c.blacklist,
			Groups: map[rules.GroupName][]id.UserID{"everyone": members}}, nil)
		var ratios, aloneNs, groupNs []float64
		for range rounds {
			p := testing.Benchmark(call(alone, "known_version=1"))
			q := testing.Benchmark(call(grouped, c.query))
			aloneNs, groupNs = append(aloneNs, float64(p.NsPerOp())), append(groupNs, float64(q.NsPerOp()))
			ratios = append(ratios, float64(p.NsPerOp())/float64(q.NsPerOp()))
		}
		// The target is of throughput over HTTP (go run ./bench/load
		// --groups); this is the handler's own cost, without HTTP, a
		// stricter figure, held to the same 80%.
		verdict := "in-process PASS"
		if median(ratios) < 0.8 {
			verdict = "in-process MISS"
		}
		if c.query == "known_version=1" {
			verdict = "(reference: once per version)"
		}
		fmt.Printf("groups: users_for_states, 100 members' states, one 10,000-member group + 100 always-send vs the 100 always-send alone, %s: %s vs %s per call, %.0f%% (median of %d rounds, worst %.0f%%)  target >= 80%% of throughput, measured over HTTP by bench/load --groups; here the handler alone: %s\n",
			c.name, time.Duration(median(groupNs)), time.Duration(median(aloneNs)), 100*median(ratios), rounds, 100*slices.Min(ratios), verdict)
	}
}
