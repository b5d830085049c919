//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/e2e/harness"
)

// ready is a presence-router process's GET /_matrix/mau/ready: its status
// and whether it says it is the active process.
func ready(url string) (int, bool) {
	resp, err := http.Get(url + "/_matrix/mau/ready")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	var body struct {
		Active bool `json:"active"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Active
}

// TestHighAvailability runs what docs/high-availability.md shows: two
// presence-router processes on one PostgreSQL database behind HAProxy,
// which sends Synapse's transactions to the ready (active) one, and the
// adapter with both URLs. The active one is killed with SIGKILL during a
// stream of 100 commands: the standby takes over within 10 s, every
// command is applied and answered exactly once, and routing for a syncing
// user never fails and follows the rules changed after the take-over.
func TestHighAvailability(t *testing.T) {
	pg := startPostgres(t)
	e := startStackWith(t, harness.Options{Admins: []string{"admin"}, Postgres: pg, Standby: true})
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(e.stack.Tail(harness.RouterLog(1), 60))
			t.Log(e.stack.Tail("haproxy.log", 30))
		}
	})
	checkDocFiles(t, e.stack, "../docs/high-availability.md", 4)
	urls := e.stack.RouterURLs
	if code, active := ready(urls[0]); code != http.StatusOK || !active {
		t.Fatalf("the first process: ready %d, active %v; want 200, active", code, active)
	}
	if code, active := ready(urls[1]); code != http.StatusServiceUnavailable || active {
		t.Fatalf("the second process: ready %d, active %v; want 503, standing by", code, active)
	}
	dash := e.syncs["dash"]

	// Commands go through the load balancer, routing through the adapter.
	if reply := e.command("admin", "!presence always-send add @dash:localhost"); reply.Reaction != "✅" {
		t.Fatalf("reply = %+v", reply)
	}
	e.setPresence("alice", "online", "alice before")
	if _, ok := dash.WaitPresence(uid("alice"), "alice before", 10*time.Second); !ok {
		t.Fatalf("dash did not receive alice's presence; got %+v", dash.Presence())
	}
	syncErrors := dash.SyncErrors()

	// kill -9 the active process during a stream of 100 commands.
	const commands = 100
	sent := make(chan id.EventID, commands)
	go func() {
		defer close(sent)
		for i := range commands {
			resp, err := e.users["admin"].SendText(e.ctx, e.room, fmt.Sprintf("!presence blacklist add @ha%03d:localhost", i))
			if err != nil {
				t.Errorf("send %d: %v", i, err)
				return
			}
			sent <- resp.EventID
			time.Sleep(30 * time.Millisecond)
		}
	}()
	time.Sleep(time.Second)
	e.stack.KillRouterProcess(0)
	killed := time.Now()
	var tookOver time.Duration
	for time.Since(killed) < 20*time.Second {
		if code, active := ready(urls[1]); code == http.StatusOK && active {
			tookOver = time.Since(killed)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if tookOver == 0 {
		t.Fatal("the standby did not become active within 20 s of kill -9 of the active process")
	}
	fmt.Printf("failover: the standby was active %s after kill -9 of the active process (limit 10 s)\n", tookOver.Round(time.Millisecond))
	if tookOver > 10*time.Second {
		t.Errorf("the standby took %s to become active; want at most 10 s", tookOver)
	}
	var eventIDs []id.EventID
	for evt := range sent {
		eventIDs = append(eventIDs, evt)
	}
	if len(eventIDs) != commands {
		t.Fatalf("only %d commands were sent", len(eventIDs))
	}

	// Every command applied exactly once (Synapse retries what it could
	// not deliver), and answered exactly once.
	db, err := e.stack.RouterDB()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	deadline := time.Now().Add(90 * time.Second)
	for _, evt := range eventIDs {
		var n int
		for {
			if err = db.QueryRow(`SELECT COUNT(*) FROM change WHERE event_id = $1`, string(evt)).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n > 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if n != 1 {
			t.Fatalf("command %s applied %d times", evt, n)
		}
	}
	admin := e.syncs["admin"]
	for _, evt := range eventIDs {
		if reply, err := admin.WaitReply(evt, time.Until(deadline)); err != nil || reply.Reaction != "✅" {
			t.Fatalf("command %s: reply %+v, %v", evt, reply, err)
		}
	}
	time.Sleep(2 * time.Second) // a second answer would come now
	for _, evt := range eventIDs {
		if notices, reactions := admin.CountReplies(evt); notices != 1 || reactions != 1 {
			t.Errorf("command %s was answered %d times with %d reactions; want once", evt, notices, reactions)
		}
	}

	// Routing follows the rules changed after the take-over.
	if reply := e.command("admin", "!presence blacklist add @alice:localhost"); reply.Reaction != "✅" {
		t.Fatalf("reply = %+v", reply)
	}
	e.setPresence("alice", "unavailable", "alice hidden")
	e.setPresence("bob", "online", "bob after the take-over")
	if _, ok := dash.WaitPresence(uid("bob"), "bob after the take-over", 10*time.Second); !ok {
		t.Fatalf("dash did not receive bob's presence after the take-over; got %+v", dash.Presence())
	}
	time.Sleep(2 * time.Second)
	if dash.SawPresence(uid("alice"), "alice hidden") {
		t.Error("dash received alice's presence after she was blacklisted on the new active process")
	}
	if n := dash.SyncErrors() - syncErrors; n != 0 {
		t.Errorf("%d of dash's /sync requests failed across the take-over", n)
	}
	if log, err := os.ReadFile(e.stack.Path("synapse.log")); err != nil || !strings.Contains(string(log), "using "+urls[1]+" from now on") {
		t.Errorf("the adapter's log does not say it moved to %s (%v)", urls[1], err)
	}

	// The killed process, started again, stands by.
	if err = e.stack.StartRouterProcess(e.ctx, 0); err != nil {
		t.Fatal(err)
	}
	if code, active := ready(urls[0]); code != http.StatusServiceUnavailable || active {
		t.Errorf("the restarted process: ready %d, active %v; want 503, standing by", code, active)
	}
}
