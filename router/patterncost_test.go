package router

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"
	"unsafe"

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
// bench runs it): a users_for_states of 100 never-seen users, and of 100
// users asked about before, against the pattern cap's worth of `?` and
// star patterns, each as a ratio to the same call with no patterns,
// measured alternately in the same run (the target is at most 10x); and
// the verdict cache's bytes once 1,000,000 users were asked about.
func TestBenchPatternCost(t *testing.T) {
	rounds, _ := strconv.Atoi(os.Getenv("PR_BENCH_PATTERNS"))
	if rounds <= 0 {
		t.Skip("a benchmark: set PR_BENCH_PATTERNS=<rounds> (make bench does)")
	}
	always := users("dash", 10)
	plain := NewEngine("", 1, always, nil, nil)
	patterned := NewEngine("", 1, always, capPatterns(), nil)
	next := 0
	newUsers := func(batch []State) {
		for i := range batch {
			next++
			batch[i] = State{UserID: id.UserID(fmt.Sprintf("@user%d:example.org", next))}
		}
	}
	call := func(e *Engine, fresh bool) func(b *testing.B) {
		return func(b *testing.B) {
			batch := make([]State, 100)
			newUsers(batch)
			for b.Loop() {
				if fresh {
					newUsers(batch)
				}
				var routes [2]RouteJSON
				e.usersForStatesJSON(batch, &routes)
			}
		}
	}
	median := func(v []float64) float64 { s := slices.Clone(v); slices.Sort(s); return s[len(s)/2] }
	for _, kind := range []struct {
		name  string
		fresh bool
	}{{"never-seen users", true}, {"users asked about before", false}} {
		var ratios, plainNs, patternNs []float64
		for range rounds {
			p := testing.Benchmark(call(plain, kind.fresh))
			q := testing.Benchmark(call(patterned, kind.fresh))
			plainNs, patternNs = append(plainNs, float64(p.NsPerOp())), append(patternNs, float64(q.NsPerOp()))
			ratios = append(ratios, float64(q.NsPerOp())/float64(p.NsPerOp()))
		}
		verdict := "PASS"
		if median(ratios) > 10 {
			verdict = "MISS"
		}
		fmt.Printf("patterns: users_for_states, 100 %s, %d patterns vs none: %s vs %s per call, ratio %.2fx (median of %d rounds, worst %.2fx)  target <= 10x  %s\n",
			kind.name, rules.MaxPatterns, time.Duration(median(patternNs)), time.Duration(median(plainNs)), median(ratios), rounds, slices.Max(ratios), verdict)
	}

	// The verdict cache after 1,000,000 users: a fixed table, so what it
	// holds is bounded whatever the number of users.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range 1_000_000 {
		patterned.matchingPatternLocked(id.UserID(fmt.Sprintf("@someone-with-a-longer-name-%07d:example.org", i)))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	fmt.Printf("patterns: verdict cache after 1,000,000 users of 47 bytes: %d slots (%.1f MiB, made with the patterns), heap %+.2f MiB over 1,000,000 users (the user IDs it still holds)\n",
		verdictSlots, float64(verdictSlots*int(unsafe.Sizeof(verdict{})))/(1<<20), float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/(1<<20))
	runtime.KeepAlive(patterned)
}
