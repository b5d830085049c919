//go:build e2e

package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/e2e/harness"
)

// setPowerLevel sets user's power level in the control room, as its admin.
func (e *env) setPowerLevel(user id.UserID, level int) {
	e.t.Helper()
	admin := e.users["admin"]
	var pl event.PowerLevelsEventContent
	if err := admin.StateEvent(e.ctx, e.room, event.StatePowerLevels, "", &pl); err != nil {
		e.t.Fatal(err)
	}
	pl.SetUserLevel(user, level)
	if _, err := admin.SendStateEvent(e.ctx, e.room, event.StatePowerLevels, "", &pl); err != nil {
		e.t.Fatal(err)
	}
}

// blacklisted reads the blacklist from the routing API.
func (e *env) rules() (alwaysSend, blacklist []string) {
	e.t.Helper()
	req, _ := http.NewRequestWithContext(e.ctx, http.MethodGet, e.stack.RouterURL+"/_presence_router/v1/rules", nil)
	req.Header.Set("Authorization", "Bearer "+e.stack.RouterToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		AlwaysSend []string `json:"always_send"`
		Blacklist  []string `json:"blacklist"`
	}
	if err = json.NewDecoder(resp.Body).Decode(&body); err != nil {
		e.t.Fatal(err)
	}
	return body.AlwaysSend, body.Blacklist
}

// TestControlRoomTrust tries to take over the bot the ways a member of the
// control room could, against a real Synapse: keeping admin rights after a
// demotion, and re-pointing the control room's alias to a room of one's own.
func TestControlRoomTrust(t *testing.T) {
	fifty := 50
	e := newEnvWith(t, harness.Options{Admins: []string{"admin"}, AdminPowerLevel: &fifty})
	if err := e.stack.StartSynapse(e.ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.stack.StartRouter(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.populate()
	e.invite(e.users["admin"], e.room, uid("dash"))
	if _, err := e.users["dash"].JoinRoom(e.ctx, string(e.room), nil); err != nil {
		t.Fatal(err)
	}

	t.Run("a demotion or promotion counts for the next command", func(t *testing.T) {
		e.setPowerLevel(uid("eve"), 50)
		if r := e.command("eve", "!presence blacklist add @demo1:localhost"); r.Reaction != "✅" {
			t.Fatalf("eve at level 50 was refused: %q", r.Body)
		}
		e.setPowerLevel(uid("eve"), 0)
		if r := e.command("eve", "!presence blacklist add @demo2:localhost"); r.Reaction != "❌" || !strings.Contains(r.Body, "not a presence-router admin") {
			t.Fatalf("eve's command after her demotion to 0 was not refused: %s %q", r.Reaction, r.Body)
		}
		e.setPowerLevel(uid("dash"), 100)
		if r := e.command("dash", "!presence blacklist add @demo3:localhost"); r.Reaction != "✅" {
			t.Fatalf("dash, promoted to 100, was refused: %q", r.Body)
		}
		_, blacklist := e.rules()
		if strings.Join(blacklist, ",") != "@demo1:localhost,@demo3:localhost" {
			t.Errorf("blacklist = %v; want demo1 and demo3 only", blacklist)
		}
	})

	t.Run("re-pointing the alias does not move the bot", func(t *testing.T) {
		eve := e.users["eve"]
		e.setPowerLevel(uid("eve"), 50)
		alias := id.NewRoomAlias("control", harness.ServerName)
		// A moderator may change the room's aliases: eve deletes #control
		// and gives it to a public room of her own, where she is level 100.
		if _, err := eve.DeleteAlias(e.ctx, alias); err != nil {
			t.Fatalf("eve could not delete the alias (Synapse lets a moderator do it): %v", err)
		}
		hers, err := eve.CreateRoom(e.ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "control", Name: "not the control room"})
		if err != nil {
			t.Fatal(err)
		}
		e.stack.StopRouter()
		if err = e.stack.StartRouter(e.ctx); err != nil {
			t.Fatal(err)
		}
		// She invites the bot and commands in her room.
		_, _ = eve.InviteUser(e.ctx, hers.RoomID, &mautrix.ReqInviteUser{UserID: e.stack.BotID()})
		if _, err = eve.SendText(e.ctx, hers.RoomID, "!presence always-send add @eve:localhost"); err != nil {
			t.Fatal(err)
		}
		// The admins are answered in the real room.
		if r := e.command("admin", "!presence status"); r.Reaction != "✅" || !strings.Contains(r.Body, string(hers.RoomID)) {
			t.Errorf("status in the pinned room: %s %q; want it to name the alias's new room", r.Reaction, r.Body)
		}
		time.Sleep(2 * time.Second)
		members, err := eve.JoinedMembers(e.ctx, hers.RoomID)
		if err != nil {
			t.Fatal(err)
		}
		if _, joined := members.Joined[e.stack.BotID()]; joined {
			t.Errorf("the bot joined the room the alias now points to")
		}
		if alwaysSend, _ := e.rules(); len(alwaysSend) != 0 {
			t.Errorf("always-send = %v: a command from eve's room was applied", alwaysSend)
		}
		log, _ := os.ReadFile(e.stack.Path("presence-router.log"))
		if !strings.Contains(string(log), "is pinned to "+string(e.room)) || !strings.Contains(string(log), string(hers.RoomID)) {
			t.Errorf("presence-router's log does not name both rooms in an error")
		}
		resp, err := http.Get(e.stack.RouterURL + "/_matrix/mau/ready")
		if err != nil {
			t.Fatal(err)
		}
		ready, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(ready), string(hers.RoomID)) || !strings.Contains(string(ready), string(e.room)) {
			t.Errorf("/_matrix/mau/ready does not show the conflict: %s", ready)
		}
	})
}
