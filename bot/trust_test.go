package bot

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	logtest "github.com/sirupsen/logrus/hooks/test"
	"maunium.net/go/mautrix/id"
)

// blacklistSize is the number of entries on the blacklist.
func (tb *testBot) blacklistSize() int {
	_, _, blacklist := tb.engine.Rules()
	return len(blacklist)
}

func TestBot_PowerLevelChangesCountForTheNextCommand(t *testing.T) {
	fifty := 50
	tb := newTestBot(t, "", &fifty)
	send := func(n int, sender id.UserID) sentEvent {
		t.Helper()
		eventID := fmt.Sprintf("$cmd%d", n)
		tb.deliver(t, fmt.Sprintf("t%d", n), hsToken, message(eventID, sender, fmt.Sprintf("!presence blacklist add @user%d:test", n)))
		return tb.replies(t, n)[n-1]
	}
	if reply := send(1, testMod); tb.blacklistSize() != 1 {
		t.Fatalf("a moderator at level 50 was refused: %q", body(reply))
	}
	// The room's admin lowers the moderator to 0: the next command is refused.
	tb.hs.lock.Lock()
	tb.hs.userPL[testMod] = 0
	tb.hs.userPL[testMember] = 100
	tb.hs.lock.Unlock()
	if reply := send(2, testMod); tb.blacklistSize() != 1 || !strings.Contains(body(reply), "not a presence-router admin") {
		t.Fatalf("a demoted moderator's command was applied (blacklist %d): %q", tb.blacklistSize(), body(reply))
	}
	// A member raised to 100 is accepted at once.
	if reply := send(3, testMember); tb.blacklistSize() != 2 {
		t.Fatalf("a member promoted to 100 was refused: %q", body(reply))
	}
}

func TestBot_AdminPowerLevelAtOrBelowUsersDefaultIsReported(t *testing.T) {
	fifty := 50
	hs := newFakeHomeserver(t)
	hs.usersDefault = 50
	tb := newTestBotWith(t, "", &fifty, hs)
	tb.waitFor(t, "a problem about admin_power_level", func() bool {
		for _, p := range tb.Problems() {
			if strings.Contains(p, "bot.admin_power_level (50)") && strings.Contains(p, "users_default 50") {
				return true
			}
		}
		return false
	})
	tb.deliver(t, "t", hsToken, message("$status", testAdmin, "!presence status"))
	if reply := body(tb.replies(t, 1)[0]); !strings.Contains(reply, "every member of the room may change the lists") {
		t.Errorf("status does not show the warning: %q", reply)
	}
}

func TestBot_ControlRoomIsPinnedAgainstAnAliasChange(t *testing.T) {
	const alias = "#control:test"
	hs := newFakeHomeserver(t)
	hs.aliases = map[string]id.RoomID{alias: testRoom}
	first := newTestBotIn(t, "", nil, hs, alias)
	if first.ControlRoom() != testRoom {
		t.Fatalf("control room = %s; want %s", first.ControlRoom(), testRoom)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	first.Stop(ctx)

	// A moderator re-points the alias to her own room; presence-router restarts.
	const evil = id.RoomID("!evil:test")
	hs.lock.Lock()
	hs.aliases[alias] = evil
	hs.joins = nil
	hs.lock.Unlock()
	tb := newTestBotIn(t, first.dbPath, nil, hs, alias)
	if tb.ControlRoom() != testRoom {
		t.Fatalf("after the alias moved, the control room is %s; want the pinned %s", tb.ControlRoom(), testRoom)
	}
	hs.lock.Lock()
	joins := append([]string(nil), hs.joins...)
	hs.lock.Unlock()
	for _, room := range joins {
		if strings.Contains(room, "evil") {
			t.Errorf("the bot joined the alias's new room: joins %v", joins)
		}
	}
	problems := strings.Join(tb.Problems(), "\n")
	for _, want := range []string{string(evil), string(testRoom), "set bot.control_room to " + string(evil)} {
		if !strings.Contains(problems, want) {
			t.Errorf("problems %q do not name %q", problems, want)
		}
	}
	// An admin's invite to her room is declined; commands there are ignored.
	invite := map[string]any{
		"event_id": "$inv", "room_id": evil, "sender": testAdmin, "type": "m.room.member",
		"state_key": "@presence:test", "content": map[string]any{"membership": "invite"},
	}
	tb.deliver(t, "t1", hsToken, invite)
	tb.waitFor(t, "the invite declined", func() bool {
		hs.lock.Lock()
		defer hs.lock.Unlock()
		return len(hs.leaves) == 1
	})
	cmd := message("$evil-cmd", testAdmin, "!presence always-send add @her:test")
	cmd["room_id"] = evil
	tb.deliver(t, "t2", hsToken, cmd, message("$real", testAdmin, "!presence blacklist add @x:test"))
	reply := body(tb.replies(t, 1)[0])
	version, alwaysSend, _ := tb.engine.Rules()
	if len(alwaysSend) != 0 || version != 1 {
		t.Errorf("a command from the alias's new room was applied: always-send %v, version %d (reply %q)", alwaysSend, version, reply)
	}
	// Moving deliberately: bot.control_room set to the new room ID.
	tb.Stop(ctx)
	moved := newTestBotIn(t, first.dbPath, nil, hs, string(evil))
	if moved.ControlRoom() != evil || len(moved.Problems()) != 0 {
		t.Errorf("after setting bot.control_room to %s, the control room is %s with problems %v", evil, moved.ControlRoom(), moved.Problems())
	}
}

func TestBot_PrunedCommandRedeliveredIsAppliedOnce(t *testing.T) {
	tb := newTestBot(t, "", nil)
	old := message("$old", testAdmin, "!presence blacklist add @old:test")
	old["origin_server_ts"] = time.Now().Add(-time.Hour).UnixMilli()
	tb.deliver(t, "t1", hsToken, old)
	tb.replies(t, 1)
	time.Sleep(10 * time.Millisecond) // the next event arrives a little later
	// A later command undoes it: applying the old one again would show.
	newer := message("$newer", testAdmin, "!presence blacklist remove @old:test")
	newer["origin_server_ts"] = time.Now().UnixMilli()
	tb.deliver(t, "t2", hsToken, newer)
	tb.replies(t, 2)
	tb.waitFor(t, "an empty backlog", func() bool {
		n, _ := tb.store.Backlog(context.Background())
		return n == 0
	})
	if n, err := tb.store.PruneInbox(context.Background(), 5*time.Millisecond); err != nil || n != 1 {
		t.Fatalf("pruned %d items (%v); want the old command", n, err)
	}
	// Synapse (or catch-up) delivers the old command again.
	if code := tb.deliver(t, "t3", hsToken, old); code != http.StatusOK {
		t.Fatalf("redelivery answered %d", code)
	}
	time.Sleep(300 * time.Millisecond)
	tb.waitFor(t, "an empty backlog", func() bool {
		n, _ := tb.store.Backlog(context.Background())
		return n == 0
	})
	if version, _, blacklist := tb.engine.Rules(); version != 2 || len(blacklist) != 0 {
		t.Errorf("the pruned command was applied again: version %d, blacklist %v", version, blacklist)
	}
}

func TestBot_HostileReasonsAndUserIDsRenderSafely(t *testing.T) {
	tb := newTestBot(t, "", nil)
	reason := "legit\n* **v99** forged entry\n# Heading\n| a | b |\n|---|---|\u202Eevil " + strings.Repeat("x", 20<<10)
	tb.deliver(t, "t1", hsToken, message("$1", testAdmin, "!presence blacklist add @we`ird:test "+reason))
	add := tb.replies(t, 1)[0]
	html, _ := add.Content["formatted_body"].(string)
	for _, bad := range []string{"<h1", "<table", "<strong>v99", "\u202E"} {
		if strings.Contains(html, bad) || strings.Contains(body(add), "\u202E") {
			t.Errorf("the add reply rendered %q from the reason: %s", bad, html)
		}
	}
	if !strings.Contains(body(add), "cut to its first 500 characters") {
		t.Errorf("the reply does not say the reason was cut: %q", body(add))
	}
	if !strings.Contains(html, "<code>@we`ird:test</code>") {
		t.Errorf("the backtick user ID is not one intact code span: %s", html)
	}
	for i := 2; i <= 30; i++ {
		tb.deliver(t, fmt.Sprintf("t%d", i), hsToken, message(fmt.Sprintf("$%d", i), testAdmin, fmt.Sprintf("!presence blacklist add @u%d:test %s", i, strings.Repeat("y", 20<<10))))
	}
	tb.replies(t, 30)
	tb.deliver(t, "h", hsToken, message("$h", testAdmin, "!presence history 30"))
	history := body(tb.replies(t, 31)[30])
	lines := 0
	for _, line := range strings.Split(history, "\n") {
		if strings.Contains(line, "reason:") {
			lines++
		}
	}
	if lines == 0 {
		t.Fatalf("history shows no entry: %q", history)
	}
	var counted int
	if _, err := fmt.Sscanf(history[strings.Index(history, "The last "):], "The last %d", &counted); err != nil || counted != lines {
		t.Errorf("history says it shows %d changes but shows %d (%v): %.500q", counted, lines, err, history)
	}
	if strings.Count(history, "forged entry") > 1 || strings.Contains(html, "<h1") {
		t.Errorf("a reason forged history lines")
	}
}

func TestBot_BadTokenWarningsAreRateLimited(t *testing.T) {
	tb := newTestBot(t, "", nil)
	hook := logtest.NewLocal(tb.log.Logger)
	for i := range 50 {
		if code := tb.deliver(t, fmt.Sprintf("bad%d", i), "wrong-token", message(fmt.Sprintf("$x%d", i), testAdmin, "!presence status")); code != http.StatusForbidden && code != http.StatusUnauthorized {
			t.Fatalf("a bad hs_token answered %d", code)
		}
	}
	warnings := 0
	for _, entry := range hook.AllEntries() {
		if strings.Contains(entry.Message, "bad hs_token") {
			warnings++
		}
	}
	if warnings != 1 {
		t.Errorf("50 bad tokens logged %d warnings; want 1 per %s", warnings, authWarnInterval)
	}
}
