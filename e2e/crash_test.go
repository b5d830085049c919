//go:build e2e

package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/e2e/harness"
)

// TestCrashSafety kills presence-router with SIGKILL at random moments while
// 200 commands arrive through Synapse: list and group commands in the
// control room, and self-service hide and unhide in direct chats. Synapse
// accepted every command, so every one must end up applied, and none
// twice: with presence-router on SQLite, and on PostgreSQL.
func TestCrashSafety(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		crashScenario(t, startStackWith(t, harness.Options{Admins: []string{"admin"}}))
	})
	t.Run("postgres", func(t *testing.T) {
		pg := startPostgres(t)
		crashScenario(t, startStackWith(t, harness.Options{Admins: []string{"admin"}, Postgres: pg}))
	})
}

// sendWhileKilling sends n commands with send, spaced by gap, while
// presence-router is killed with SIGKILL three times at random moments
// (and started again each time); it returns the commands' event IDs.
func sendWhileKilling(t *testing.T, e *env, n int, gap time.Duration, send func(i int) (id.EventID, error)) []id.EventID {
	t.Helper()
	sent := make(chan id.EventID, n)
	go func() {
		defer close(sent)
		for i := range n {
			evt, err := send(i)
			if err != nil {
				t.Errorf("send %d: %v", i, err)
				return
			}
			sent <- evt
			time.Sleep(gap)
		}
	}()
	for kill := range 3 {
		time.Sleep(time.Duration(300+rand.IntN(700)) * time.Millisecond)
		e.stack.KillRouter()
		t.Logf("kill -9 number %d", kill+1)
		if err := e.stack.StartRouter(e.ctx); err != nil {
			t.Fatal(err)
		}
	}
	var eventIDs []id.EventID
	for evt := range sent {
		eventIDs = append(eventIDs, evt)
	}
	if len(eventIDs) != n {
		t.Fatalf("only %d commands were sent", len(eventIDs))
	}
	return eventIDs
}

func crashScenario(t *testing.T, e *env) {
	const commands = 200
	// Five users, each in a direct chat with the bot, hide their presence
	// and then unhide it (self-service changes).
	const selfUsers = 5
	dms := make([]id.RoomID, selfUsers)
	for k := range dms {
		name := fmt.Sprintf("self%d", k)
		cli, err := e.stack.User(e.ctx, name, "password-"+name)
		if err != nil {
			t.Fatal(err)
		}
		e.users[name] = cli
		dms[k] = e.directChat(name)
	}
	// Of the admin's commands, half add to always-send; the other half
	// create groups and add a member to each: every one is a change of its
	// own, applied in order (a member is added to a group an earlier
	// command created). Every 20th is a self-service one instead of an add.
	eventIDs := sendWhileKilling(t, e, commands, 10*time.Millisecond, func(i int) (id.EventID, error) {
		if i%20 == 0 {
			k, verb := (i/20)%selfUsers, "hide"
			if i/20 >= selfUsers {
				verb = "unhide"
			}
			resp, err := e.users[fmt.Sprintf("self%d", k)].SendText(e.ctx, dms[k], "!presence "+verb)
			if err != nil {
				return "", err
			}
			return resp.EventID, nil
		}
		text := fmt.Sprintf("!presence always-send add @crash%03d:localhost --force", i)
		switch i % 4 {
		case 1:
			text = fmt.Sprintf("!presence group create g%03d", i)
		case 3:
			text = fmt.Sprintf("!presence group add g%03d @crash%03d:localhost --force", i-2, i)
		}
		resp, err := e.users["admin"].SendText(e.ctx, e.room, text)
		if err != nil {
			return "", err
		}
		return resp.EventID, nil
	})
	// Synapse retries what it could not deliver; wait for all to apply.
	deadline := time.Now().Add(90 * time.Second)
	var applied int
	for time.Now().Before(deadline) {
		// The status command waits behind the redelivered backlog: a reply
		// missing after 20 s is asked for again until the deadline.
		sent, err := e.users["admin"].SendText(e.ctx, e.room, "!presence status")
		if err != nil {
			t.Fatal(err)
		}
		status, err := e.syncs["admin"].WaitReply(sent.EventID, 20*time.Second)
		if err == nil && strings.Contains(status.Body, fmt.Sprintf("always-send: %d users", commands/2-commands/20)) &&
			strings.Contains(status.Body, fmt.Sprintf("groups: %d (%d members", commands/4, commands/4)) &&
			strings.Contains(status.Body, "blacklist: 0 users") && strings.Contains(status.Body, fmt.Sprintf("Version: %d", commands)) {
			applied = commands
			break
		}
		time.Sleep(2 * time.Second)
	}
	db, err := e.stack.RouterDB()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if applied != commands {
		for i, evt := range eventIDs {
			var state string
			if err := db.QueryRow(`SELECT state FROM inbox WHERE event_id = $1`, string(evt)).Scan(&state); err != nil {
				state = "never received (" + err.Error() + ")"
			}
			var n int
			_ = db.QueryRow(`SELECT COUNT(*) FROM change WHERE event_id = $1`, string(evt)).Scan(&n)
			if n != 1 {
				t.Errorf("command %d (%s): inbox %s, applied %d times", i, evt, state, n)
			}
		}
		t.Fatalf("not every accepted command was applied: %s", e.command("admin", "!presence status").Body)
	}
	// Every command is in the audit log exactly once, and got its ✅.
	for _, evt := range eventIDs {
		var n int
		if err = db.QueryRow(`SELECT COUNT(*) FROM change WHERE event_id = $1`, string(evt)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("command %s applied %d times", evt, n)
		}
	}
	var dupes int
	_ = db.QueryRow(`SELECT COUNT(*) FROM (SELECT event_id FROM change GROUP BY event_id HAVING COUNT(*) > 1)`).Scan(&dupes)
	if dupes != 0 {
		t.Errorf("%d commands were applied more than once", dupes)
	}
	// Say when Synapse left a command undelivered and catch-up found it.
	if log, err := os.ReadFile(e.stack.Path("presence-router.log")); err == nil {
		if n := strings.Count(string(log), "Recovered commands the homeserver had not delivered"); n > 0 {
			t.Logf("catch-up recovered undelivered commands %d time(s) in this run", n)
		}
	}
	for _, evt := range eventIDs[len(eventIDs)-5:] {
		if reply, err := e.syncs["admin"].WaitReply(evt, 30*time.Second); err != nil || reply.Reaction != "✅" {
			t.Errorf("command %s: reply %+v, %v", evt, reply, err)
		}
	}
}
