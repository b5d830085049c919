//go:build e2e && bench

package e2e

import (
	"bufio"
	"database/sql"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"

	"github.com/presence-router/presence-router/e2e/harness"
)

// synapseLogLine matches the adapter's line for a new rules version in
// Synapse's default log format ("2026-11-24 23:43:36,123 - name - ...").
var synapseLogLine = regexp.MustCompile(`^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - presence_router_adapter - .*Rules changed to version (\d+)`)

// TestBenchPropagation measures, on real Synapse, how long a command takes
// to reach its recipient: from the change's commit in presence-router's
// store to the adapter seeing the new version (the commit's timestamp in
// SQLite against the adapter's log line), and from sending the command to
// the routed presence in the recipient's /sync (measured in this process).
// PR_PROPAGATION_RUNS sets the number of runs (default 20).
func TestBenchPropagation(t *testing.T) {
	runs := 20
	if v, err := strconv.Atoi(os.Getenv("PR_PROPAGATION_RUNS")); err == nil && v > 0 {
		runs = v
	}
	e := startStack(t, false)
	e.setPresence("alice", "online", "propagation source")
	db, err := sql.Open("sqlite3", "file:"+e.stack.Path("presence-router.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	var toAdapter, toSync []time.Duration
	for i := range runs {
		name := fmt.Sprintf("watcher%02d", i)
		cli, err := e.stack.User(e.ctx, name, "password-"+name)
		if err != nil {
			t.Fatal(err)
		}
		syncer, err := harness.NewSyncer(e.ctx, cli)
		if err != nil {
			t.Fatal(err)
		}
		e.syncs[name] = syncer
		start := time.Now()
		resp, err := e.users["admin"].SendText(e.ctx, e.room, "!presence always-send add @"+name+":localhost")
		if err != nil {
			t.Fatal(err)
		}
		got, ok := syncer.WaitPresence(uid("alice"), "propagation source", 10*time.Second)
		if !ok {
			t.Fatalf("run %d: %s did not get alice's presence within 10 s", i, name)
		}
		toSync = append(toSync, got.At.Sub(start))
		if _, err = e.syncs["admin"].WaitReply(resp.EventID, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		var version, createdMs int64
		if err = db.QueryRow(`SELECT version, created_at FROM change WHERE event_id = ?`, string(resp.EventID)).Scan(&version, &createdMs); err != nil {
			t.Fatalf("run %d: the change of %s: %v", i, resp.EventID, err)
		}
		seen, err := adapterSawVersion(e.stack.Path("synapse.log"), version)
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		toAdapter = append(toAdapter, seen.Sub(time.UnixMilli(createdMs)))
		syncer.Stop()
		delete(e.syncs, name)
	}
	report := func(what string, d []time.Duration, target time.Duration) {
		slices.Sort(d)
		p50, p95 := d[len(d)/2], d[(len(d)*95+99)/100-1]
		verdict := "PASS"
		if p50 > target {
			verdict = "MISS"
		}
		fmt.Printf("propagation %-28s runs=%d p50=%s p95=%s max=%s target p50<=%s %s\n",
			what, len(d), p50.Round(time.Millisecond), p95.Round(time.Millisecond), d[len(d)-1].Round(time.Millisecond), target, verdict)
	}
	report("commit->adapter", toAdapter, 100*time.Millisecond)
	report("command->recipient /sync", toSync, 2*time.Second)
}

// adapterSawVersion returns when the adapter logged the given version.
func adapterSawVersion(logPath string, version int64) (time.Time, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		f, err := os.Open(logPath)
		if err != nil {
			return time.Time{}, err
		}
		scanner := bufio.NewScanner(f)
		scanner.Buffer(make([]byte, 1<<20), 1<<20)
		for scanner.Scan() {
			m := synapseLogLine.FindStringSubmatch(scanner.Text())
			if m == nil || m[2] != strconv.FormatInt(version, 10) {
				continue
			}
			_ = f.Close()
			return time.ParseInLocation("2006-01-02 15:04:05,000", m[1], time.Local)
		}
		_ = f.Close()
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("the adapter never logged version %d in %s", version, logPath)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
