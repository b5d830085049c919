//go:build e2e

package e2e

import (
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// TestControlRoomUpgrade upgrades the control room as Element does (the
// client API's /upgrade, to a version-12 room) on a real Synapse. First a
// member who is no presence-router admin, though allowed to send a
// tombstone, points the control room at a room of hers: nothing moves and
// status says so. Then the admin upgrades and invites the bot to the
// replacement: within 30 s the bot answers there, the move is in history,
// no command is left waiting, and a command in the old room is ignored.
func TestControlRoomUpgrade(t *testing.T) {
	e := startStack(t, false)
	old := e.room
	eve := e.users["eve"]

	// eve's tombstone.
	e.setPowerLevel(e.stack.UserID("eve"), 150) // what a tombstone takes in a version-12 room
	decoy, err := eve.CreateRoom(e.ctx, &mautrix.ReqCreateRoom{
		Preset: "private_chat", CreationContent: map[string]any{"predecessor": map[string]any{"room_id": old}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = eve.SendStateEvent(e.ctx, old, event.StateTombstone, "", &event.TombstoneEventContent{Body: "moved", ReplacementRoom: decoy.RoomID}); err != nil {
		t.Fatal(err)
	}
	var status string
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(status, "is not a presence-router admin: presence-router stays") {
		if time.Now().After(deadline) {
			t.Fatalf("status does not report the non-admin's tombstone: %q", status)
		}
		time.Sleep(500 * time.Millisecond)
		status = e.command("admin", "!presence status").Body
	}
	if !strings.Contains(status, string(old)) {
		t.Errorf("status after eve's tombstone does not keep the control room %s: %q", old, status)
	}

	// The admin's upgrade.
	began := time.Now()
	var upgraded struct {
		ReplacementRoom id.RoomID `json:"replacement_room"`
	}
	admin := e.users["admin"]
	if _, err = admin.MakeRequest(e.ctx, "POST", admin.BuildClientURL("v3", "rooms", old, "upgrade"), map[string]any{"new_version": "12"}, &upgraded); err != nil {
		t.Fatal(err)
	}
	e.invite(admin, upgraded.ReplacementRoom, e.stack.BotID())
	e.room = upgraded.ReplacementRoom
	var reply string
	for !strings.Contains(reply, string(upgraded.ReplacementRoom)) {
		if time.Since(began) > 30*time.Second {
			t.Fatalf("the bot does not answer in the replacement room within 30 s: %q", reply)
		}
		resp, err := admin.SendText(e.ctx, e.room, "!presence status")
		if err != nil {
			t.Fatal(err)
		}
		if r, err := e.syncs["admin"].WaitReply(resp.EventID, 3*time.Second); err == nil {
			reply = r.Body
		}
	}
	t.Logf("the bot answered in the replacement room %s after the upgrade began", time.Since(began).Round(time.Millisecond))
	if !strings.Contains(reply, "Commands waiting: 0") || strings.Contains(reply, "⚠️") {
		t.Errorf("status in the replacement room: %q", reply)
	}
	if h := e.command("admin", "!presence history"); !strings.Contains(h.Body, "moved the control room from") {
		t.Errorf("history does not show the move: %q", h.Body)
	}

	// The old room is ignored.
	resp, err := admin.SendText(e.ctx, old, "!presence always-send add @bob:localhost")
	if err != nil {
		t.Fatal(err)
	}
	if r := e.command("admin", "!presence always-send add @dash:localhost"); r.Reaction != "✅" {
		t.Fatalf("a command in the replacement room: %+v", r)
	}
	if notices, _ := e.syncs["admin"].CountReplies(resp.EventID); notices != 0 {
		t.Errorf("the bot answered a command in the old room")
	}
	if always, _ := e.rules(); len(always) != 1 || always[0] != "@dash:localhost" {
		t.Errorf("always-send %v: the old room's command was applied", always)
	}
}
