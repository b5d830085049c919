package follower

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/internal/testdb"
	"github.com/presence-router/presence-router/rules"
)

// TestBenchStandbyPropagation measures how long a change committed by the
// active process takes to reach the standby's routing API (commit returned
// → GET interested_users on the standby answers the new version), over
// PR_BENCH_STANDBY changes, with PostgreSQL's notifications and with the
// 2 s poll alone (each commit at a random moment of the poll's period),
// and prints p50 and p99 of each and their ratio. `make bench` runs 200
// (about 7 minutes, the poll's 2 s a change); `make bench-smoke` 3.
func TestBenchStandbyPropagation(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("PR_BENCH_STANDBY"))
	if n <= 0 || !testdb.OnPostgres() {
		t.Skip("a benchmark: set PR_BENCH_STANDBY=<changes> and PR_TEST_POSTGRES=start (make bench does)")
	}
	results := map[bool][]time.Duration{}
	for _, notify := range []bool{true, false} {
		location := testdb.NewLocation(t)
		active := open(t, location)
		standby := start(t, location, false, 0)
		ctx, cancel := context.WithCancel(context.Background())
		var wake <-chan struct{}
		if notify {
			var err error
			if wake, err = standby.store.ListenChanges(ctx, func(err error) { t.Log(err) }); err != nil {
				t.Fatal(err)
			}
		}
		go standby.follower.Run(ctx, 2*time.Second, wake, func(err error) { t.Log(err) })
		for i := range n {
			if !notify {
				// Commits come at any moment of the poll's period.
				time.Sleep(rand.N(2 * time.Second))
			}
			res, err := active.Apply(context.Background(), rules.Mutation{Sender: "@admin:x", Command: "bench",
				Entries: []rules.Entry{add(rules.Blacklist, id.UserID(fmt.Sprintf("@u%d:x", i)))}})
			if err != nil {
				t.Fatal(err)
			}
			committed := time.Now()
			for standbyVersion(t, standby.api.URL) < res.Change.Version {
				if time.Since(committed) > 10*time.Second {
					t.Fatalf("change %d did not reach the standby within 10 s", res.Change.Version)
				}
				time.Sleep(200 * time.Microsecond)
			}
			results[notify] = append(results[notify], time.Since(committed))
		}
		cancel()
	}
	pct := func(d []time.Duration, p float64) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[min(len(s)-1, int(float64(len(s))*p))]
	}
	withP50, withP99 := pct(results[true], 0.50), pct(results[true], 0.99)
	pollP50, pollP99 := pct(results[false], 0.50), pct(results[false], 0.99)
	fmt.Printf("standby propagation over %d changes (commit -> the standby's routing API answers the new version):\n", n)
	fmt.Printf("  with NOTIFY:  p50 %8.2f ms  p99 %8.2f ms\n", ms(withP50), ms(withP99))
	fmt.Printf("  poll only:    p50 %8.2f ms  p99 %8.2f ms\n", ms(pollP50), ms(pollP99))
	fmt.Printf("  ratio NOTIFY/poll: p50 %.4f  p99 %.4f\n", ms(withP50)/ms(pollP50), ms(withP99)/ms(pollP99))
	if withP99 > time.Second {
		t.Errorf("with NOTIFY, p99 %s: the standby must answer a change within 1 s", withP99)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// standbyVersion is the version the routing API at url answers.
func standbyVersion(t *testing.T, url string) int64 {
	req, _ := http.NewRequest(http.MethodGet, url+"/_presence_router/v1/interested_users?user_id=%40dash%3Ax", nil)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Version int64 `json:"version"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return body.Version
}
