package bot

import (
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"
)

const testDirectRoom = id.RoomID("!dm:test")

func direct(eventID string, sender id.UserID, body string) map[string]any {
	m := message(eventID, sender, body)
	m["room_id"] = testDirectRoom
	return m
}

// openDirect has testMember invite the bot to room as a direct chat, and
// waits for the bot to join it.
func (tb *testBot) openDirect(t *testing.T, room id.RoomID) {
	t.Helper()
	tb.deliver(t, "open-"+string(room), hsToken, map[string]any{
		"event_id": "$invite-" + string(room), "room_id": room, "sender": testMember, "type": "m.room.member",
		"state_key": "@presence:test", "content": map[string]any{"membership": "invite", "is_direct": true},
	})
	tb.waitFor(t, "the direct chat joined", func() bool {
		tb.hs.lock.Lock()
		defer tb.hs.lock.Unlock()
		return slices.Contains(tb.hs.joins, string(room))
	})
}

// TestDirect_OnlyRecordedDirectChatsAreAnswered: a room the bot did not
// join as a direct chat (an old control room, a room whose invite it
// declined) gets no answer, and nothing changes there; the same command
// in a direct chat a local user opened is answered.
func TestDirect_OnlyRecordedDirectChatsAreAnswered(t *testing.T) {
	tb := newTestBot(t, "", nil)
	old := message("$old-room", testMember, "!presence hide")
	old["room_id"] = "!old-control:test"
	admin := message("$old-admin", testAdmin, "!presence blacklist add @x:test")
	admin["room_id"] = "!old-control:test"
	tb.deliver(t, "t1", hsToken, old, admin)
	time.Sleep(300 * time.Millisecond)
	if sent := tb.hs.events("m.room.message"); len(sent) != 0 || tb.engine.Version() != 0 {
		t.Fatalf("a room that is not a direct chat was answered: %v, version %d", sent, tb.engine.Version())
	}
	tb.openDirect(t, testDirectRoom)
	tb.deliver(t, "t2", hsToken, direct("$hide", testMember, "!presence hide"))
	if r := tb.nthReply(t, 1); !strings.Contains(r, "no longer routed") {
		t.Fatalf("hide in the direct chat: %q", r)
	}
}

// lastReply waits for the nth reply and returns its body.
func (tb *testBot) nthReply(t *testing.T, n int) string {
	t.Helper()
	return body(tb.replies(t, n)[n-1])
}

func TestDirect_AUserHidesAndUnhidesTheirOwnPresence(t *testing.T) {
	tb := newTestBot(t, "", nil)
	tb.openDirect(t, testDirectRoom)
	tb.deliver(t, "t1", hsToken, direct("$hide", testMember, "!presence hide"))
	if r := tb.nthReply(t, 1); !strings.Contains(r, "no longer routed") {
		t.Fatalf("hide: %q", r)
	}
	tb.waitFor(t, "the member on the blacklist", func() bool { return tb.engine.Explain(testMember).Blacklisted })
	tb.deliver(t, "t2", hsToken, direct("$explain", testMember, "!presence explain"))
	if r := tb.nthReply(t, 2); !strings.Contains(r, string(testMember)) || !strings.Contains(r, "blacklisted") {
		t.Fatalf("explain of oneself: %q", r)
	}
	history, err := tb.store.History(t.Context(), 1)
	if err != nil || len(history) != 1 || history[0].Sender != testMember || !strings.HasSuffix(history[0].Command, "(self-service)") {
		t.Fatalf("history: %+v %v", history, err)
	}
	tb.deliver(t, "t3", hsToken, direct("$unhide", testMember, "!presence unhide"))
	if r := tb.nthReply(t, 3); !strings.Contains(r, "routed again") {
		t.Fatalf("unhide: %q", r)
	}
	tb.waitFor(t, "the member off the blacklist", func() bool { return !tb.engine.Explain(testMember).Blacklisted })
}

func TestDirect_WhatADirectChatRefuses(t *testing.T) {
	tests := []struct {
		name, want string
		setup      map[string]any // sent in the control room first
		evt        map[string]any
	}{
		{"an admin's blacklisting cannot be undone by its user", "only an admin can take you off",
			message("$black", testAdmin, "!presence blacklist add @member:test"), direct("$u", testMember, "!presence unhide")},
		{"a group command", "In a direct chat, presence-router takes", nil, direct("$g", testAdmin, "!presence group create mine")},
		{"a list command, even from an admin", "In a direct chat, presence-router takes", nil, direct("$l", testAdmin, "!presence blacklist add @x:test")},
		{"explaining someone else", "about yourself", nil, direct("$e", testMember, "!presence explain @admin:test")},
		{"a remote user", "serves the users of", nil, direct("$r", "@far:elsewhere.org", "!presence hide")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTestBot(t, "", nil)
			tb.openDirect(t, testDirectRoom)
			n := 1
			if tt.setup != nil {
				tb.deliver(t, "t0", hsToken, tt.setup)
				tb.replies(t, 1)
				n = 2
			}
			version := tb.engine.Version()
			tb.deliver(t, "t1", hsToken, tt.evt)
			if r := tb.nthReply(t, n); !strings.Contains(r, tt.want) {
				t.Fatalf("reply %q; want %q", r, tt.want)
			}
			if tb.engine.Version() != version {
				t.Fatal("a refused direct-chat command changed the rules")
			}
		})
	}
	t.Run("hide in the control room points to a direct chat", func(t *testing.T) {
		tb := newTestBot(t, "", nil)
		tb.deliver(t, "t1", hsToken, message("$h", testAdmin, "!presence hide"))
		if r := tb.nthReply(t, 1); !strings.Contains(r, "direct chat") || tb.engine.Version() != 0 {
			t.Fatalf("hide in the control room: %q, version %d", r, tb.engine.Version())
		}
	})
}

func TestDirect_CommandsAreRateLimitedPerUser(t *testing.T) {
	tb := newTestBot(t, "", nil)
	tb.openDirect(t, testDirectRoom)
	var evts []map[string]any
	for i := range directLimit + 5 {
		evts = append(evts, direct("$x"+string(rune('a'+i)), testMember, "!presence explain"))
	}
	evts = append(evts, direct("$other", testMod, "!presence explain"))
	tb.deliver(t, "t1", hsToken, evts...)
	// directLimit answers, one refusal, and the other user's answer.
	replies := tb.replies(t, directLimit+2)
	time.Sleep(300 * time.Millisecond)
	if n := len(tb.hs.events("m.room.message")); n != directLimit+2 {
		t.Fatalf("%d replies; want %d", n, directLimit+2)
	}
	refused := 0
	for _, r := range replies {
		if strings.Contains(body(r), "Too many commands") {
			refused++
		}
	}
	if refused != 1 {
		t.Fatalf("%d refusals; want 1", refused)
	}
}
