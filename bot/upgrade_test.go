package bot

import (
	"context"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"
)

const newRoom = id.RoomID("!new:test")

// tombstone is an m.room.tombstone of the control room sent by sender.
func tombstone(eventID string, sender id.UserID, replacement id.RoomID) map[string]any {
	return map[string]any{
		"event_id": eventID, "room_id": testRoom, "sender": sender, "type": "m.room.tombstone", "state_key": "",
		"origin_server_ts": 2, "content": map[string]any{"body": "This room has been replaced", "replacement_room": replacement},
	}
}

// inRoom moves a message to room.
func inRoom(m map[string]any, room id.RoomID) map[string]any {
	m["room_id"] = room
	return m
}

func TestBot_ControlRoomUpgrade(t *testing.T) {
	tests := []struct {
		name        string
		sender      id.UserID
		predecessor id.RoomID // the replacement's m.room.create names it
		wantMoved   bool
		wantProblem string
	}{
		{"an admin's upgrade is followed", testAdmin, testRoom, true, ""},
		{"a non-admin's tombstone changes nothing", testMod, testRoom, false, "is not a presence-router admin"},
		{"a replacement that does not name the control room changes nothing", testAdmin, "!elsewhere:test", false, "does not name the control room as its predecessor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs := newFakeHomeserver(t)
			hs.predecessors = map[id.RoomID]id.RoomID{newRoom: tt.predecessor}
			tb := newTestBotWith(t, "", nil, hs)
			tb.deliver(t, "t1", hsToken, tombstone("$tomb", tt.sender, newRoom))
			// A command in the new room proves the tombstone was processed.
			tb.deliver(t, "t2", hsToken, inRoom(message("$new", testAdmin, "!presence always-send add @new:test"), newRoom))
			tb.deliver(t, "t3", hsToken, message("$old", testAdmin, "!presence always-send add @old:test"))
			if !tt.wantMoved {
				tb.waitFor(t, "the command in the old room", func() bool { return tb.engine.Version() == 1 })
				if got := tb.ControlRoom(); got != testRoom {
					t.Errorf("control room %s, want it to stay %s", got, testRoom)
				}
				if problems := strings.Join(tb.Problems(), " "); !strings.Contains(problems, tt.wantProblem) {
					t.Errorf("problems %q, want %q", problems, tt.wantProblem)
				}
				if _, always, _ := tb.engine.Rules(); len(always) != 1 || always[0] != "@old:test" {
					t.Errorf("always-send %v, want only the old room's command", always)
				}
				return
			}
			// v1 is the move, v2 the command in the new room.
			tb.waitFor(t, "the command in the new room", func() bool { return tb.engine.Version() == 2 })
			if got := tb.ControlRoom(); got != newRoom {
				t.Fatalf("control room %s, want %s", got, newRoom)
			}
			if pinned, _, _ := tb.store.ControlRoom(context.Background()); pinned != newRoom {
				t.Errorf("pinned %s, want %s", pinned, newRoom)
			}
			tb.deliver(t, "t4", hsToken, inRoom(message("$history", testAdmin, "!presence history"), newRoom))
			tb.waitFor(t, "the history reply", func() bool {
				for _, e := range tb.hs.events("m.room.message") {
					if strings.Contains(body(e), "moved the control room from") && e.Room == string(newRoom) {
						return true
					}
				}
				return false
			})
			if _, always, _ := tb.engine.Rules(); len(always) != 1 || always[0] != "@new:test" {
				t.Errorf("always-send %v, want only the new room's command (the old room is ignored)", always)
			}
			if len(tb.Problems()) != 0 {
				t.Errorf("problems %v after a followed upgrade", tb.Problems())
			}
		})
	}
}

// When the bot may not join the replacement yet, it stays, says what to
// do, and follows once an admin invites it there; a restart keeps the pin
// in the replacement although bot.control_room names the old room's ID.
func TestBot_ControlRoomUpgradeWaitsForTheInvite(t *testing.T) {
	hs := newFakeHomeserver(t)
	hs.predecessors = map[id.RoomID]id.RoomID{newRoom: testRoom}
	hs.forbidJoin = map[string]bool{string(newRoom): true}
	tb := newTestBotWith(t, "", nil, hs)
	tomb := tombstone("$tomb", testAdmin, newRoom)
	tb.deliver(t, "t1", hsToken, tomb)
	tb.waitFor(t, "the problem", func() bool { return strings.Contains(strings.Join(tb.Problems(), " "), "invite @presence:test there") })
	hs.lock.Lock()
	hs.forbidJoin, hs.tombstone = nil, tomb
	hs.lock.Unlock()
	tb.deliver(t, "t2", hsToken, map[string]any{
		"event_id": "$inv", "room_id": string(newRoom), "sender": testAdmin, "type": "m.room.member",
		"state_key": "@presence:test", "content": map[string]any{"membership": "invite"},
	})
	tb.waitFor(t, "the move", func() bool { return tb.ControlRoom() == newRoom })
	if len(tb.Problems()) != 0 {
		t.Errorf("problems %v after the upgrade was followed", tb.Problems())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5e9)
	tb.Stop(ctx)
	cancel()
	_ = tb.store.Close()
	again := newTestBotWith(t, tb.dbPath, nil, hs) // bot.control_room is still the old room's ID
	if got := again.ControlRoom(); got != newRoom {
		t.Errorf("after a restart the control room is %s, want the replacement %s", got, newRoom)
	}
}

// A reply the homeserver refuses (the bot lost permission to post) is
// tried maxReplyRefusals times, then dropped: the backlog empties and
// Problems says so. The command stays applied.
func TestBot_RefusedReplyIsDroppedAfterBoundedAttempts(t *testing.T) {
	tb := newTestBot(t, "", nil)
	tb.hs.set(func() { tb.hs.refuseSend = true })
	tb.deliver(t, "t", hsToken, message("$cmd", testAdmin, "!presence always-send add @dash:test"))
	tb.waitFor(t, "the reply to be dropped", func() bool {
		signal(tb.wakeWorker)
		n, err := tb.store.Backlog(context.Background())
		return err == nil && n == 0
	})
	if problems := strings.Join(tb.Problems(), " "); !strings.Contains(problems, "1 reply could not be sent") {
		t.Errorf("problems %q do not report the dropped reply", problems)
	}
	if tb.engine.Version() != 1 {
		t.Errorf("version %d: the command must stay applied", tb.engine.Version())
	}
	// A homeserver that does not answer is no refusal: retried until it does.
	tb.hs.lock.Lock()
	tb.hs.refuseSend, tb.hs.failSend = false, true
	tb.hs.lock.Unlock()
	tb.deliver(t, "t2", hsToken, message("$cmd2", testAdmin, "!presence always-send add @eve:test"))
	for range 2 * maxReplyRefusals {
		signal(tb.wakeWorker)
		tb.waitFor(t, "the change", func() bool { return tb.engine.Version() == 2 })
	}
	if n, _ := tb.store.Backlog(context.Background()); n != 1 {
		t.Errorf("backlog %d while the homeserver fails: the reply must wait", n)
	}
}

// The typo guard asks the homeserver: a 404 for the profile (Synapse 1.163
// answers M_UNKNOWN "No row found") is an unregistered user; an answer is
// a registered one; a failure is neither, and says so.
func TestBot_UserExistsAsksTheHomeserver(t *testing.T) {
	tb := newTestBot(t, "", nil)
	tests := []struct {
		user    id.UserID
		down    bool
		want    bool
		wantErr bool
	}{
		{"@dahs:test", false, false, false},
		{"@dash:test", false, true, false},
		{"@dash:test", true, false, true},
	}
	for _, tt := range tests {
		tb.hs.set(func() { tb.hs.down = tt.down })
		got, err := tb.UserExists(context.Background(), tt.user)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("UserExists(%s) with the homeserver down=%v: %v, %v; want %v, error %v", tt.user, tt.down, got, err, tt.want, tt.wantErr)
		}
	}
}
