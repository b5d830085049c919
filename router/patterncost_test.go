package router

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/rules"
)

// capPatterns is rules.MaxPatterns patterns of the kinds that cost most
// one by one (`?`, which a single glob compiles to a regular expression;
// stars between literals), in three families.
func capPatterns() []id.UserID {
	out := make([]id.UserID, rules.MaxPatterns)
	for i := range out {
		switch i % 3 {
		case 0:
			out[i] = id.UserID(fmt.Sprintf("@u%d??:*", i))
		case 1:
			out[i] = id.UserID(fmt.Sprintf("@??%d??:example.org", i))
		default:
			out[i] = id.UserID(fmt.Sprintf("@*%d?x*:*", i))
		}
	}
	return out
}

// TestBenchPatternCost is a benchmark (PR_BENCH_PATTERNS=<rounds>; make
// bench runs it): a users_for_states of 100 never-seen users against the
// pattern cap's worth of `?` and star patterns, as a ratio to the same call
// with no patterns, measured alternately in the same run (the target is at
// most 10x); and the verdict cache's heap at 1,000,000 users.
func TestBenchPatternCost(t *testing.T) {
	rounds, _ := strconv.Atoi(os.Getenv("PR_BENCH_PATTERNS"))
	if rounds <= 0 {
		t.Skip("a benchmark: set PR_BENCH_PATTERNS=<rounds> (make bench does)")
	}
	always := users("dash", 10)
	plain := NewEngine("", 1, always, nil, nil)
	patterned := NewEngine("", 1, always, capPatterns(), nil)
	next := 0
	call := func(e *Engine) func(b *testing.B) {
		return func(b *testing.B) {
			batch := make([]State, 100)
			for b.Loop() {
				for i := range batch {
					next++ // never seen: each misses the verdict cache
					batch[i] = State{UserID: id.UserID(fmt.Sprintf("@user%d:example.org", next))}
				}
				var routes [2]RouteJSON
				e.usersForStatesJSON(batch, &routes)
			}
		}
	}
	var ratios []float64
	var plainNs, patternNs []float64
	for range rounds {
		p := testing.Benchmark(call(plain))
		q := testing.Benchmark(call(patterned))
		plainNs, patternNs = append(plainNs, float64(p.NsPerOp())), append(patternNs, float64(q.NsPerOp()))
		ratios = append(ratios, float64(q.NsPerOp())/float64(p.NsPerOp()))
	}
	median := func(v []float64) float64 { s := slices.Clone(v); slices.Sort(s); return s[len(s)/2] }
	verdict := "PASS"
	if median(ratios) > 10 {
		verdict = "MISS"
	}
	fmt.Printf("patterns: users_for_states, 100 never-seen users, %d patterns vs none: %s vs %s per call, ratio %.2fx (median of %d rounds, worst %.2fx)  target <= 10x  %s\n",
		rules.MaxPatterns, time.Duration(median(patternNs)), time.Duration(median(plainNs)), median(ratios), rounds, slices.Max(ratios), verdict)

	// The verdict cache at 1,000,000 users.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range 1_000_000 {
		patterned.matchingPatternLocked(id.UserID(fmt.Sprintf("@someone-with-a-longer-name-%07d:example.org", i)))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	v := patterned.verdicts
	fmt.Printf("patterns: verdict cache after 1,000,000 users: %d entries, %.1f MiB counted (bound %d MiB), heap +%.1f MiB\n",
		len(v.m), float64(v.bytes)/(1<<20), maxVerdictBytes>>20, float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/(1<<20))
	runtime.KeepAlive(patterned)
}
