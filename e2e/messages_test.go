//go:build e2e

package e2e

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/e2e/harness"
)

// send sends a message event of the admin's to the control room and
// returns the bot's reply to it.
func (e *env) send(content map[string]any) (id.EventID, harness.Reply) {
	e.t.Helper()
	resp, err := e.users["admin"].SendMessageEvent(e.ctx, e.room, event.EventMessage, content)
	if err != nil {
		e.t.Fatal(err)
	}
	reply, err := e.syncs["admin"].WaitReply(resp.EventID, 20*time.Second)
	if err != nil {
		e.t.Fatalf("%v: %v", content, err)
	}
	return resp.EventID, reply
}

// TestCommandsInRepliesEditsAndEmotes sends commands as Matrix clients do
// besides plain messages, on a real Synapse: a reply with the legacy
// fallback (Element's older versions, many bridges) is applied; an edit of
// a command and a command sent as an emote are each answered once and
// change nothing.
func TestCommandsInRepliesEditsAndEmotes(t *testing.T) {
	e := startStack(t, false)
	questionID, question := e.send(map[string]any{"msgtype": "m.text", "body": "!presence status"})

	// A reply, quoting the bot's answer in both fallbacks.
	cmdID, reply := e.send(map[string]any{
		"msgtype": "m.text",
		"body":    "> <@presence:localhost> " + strings.SplitN(question.Body, "\n", 2)[0] + "\n> more\n\n!presence always-send add @dash:localhost",
		"format":  "org.matrix.custom.html",
		"formatted_body": "<mx-reply><blockquote><a href=\"https://matrix.to/#/!r/$q\">In reply to</a> " +
			"<a href=\"https://matrix.to/#/@presence:localhost\">@presence:localhost</a><br>!presence help</blockquote></mx-reply>" +
			"!presence always-send add @dash:localhost",
		"m.relates_to": map[string]any{"m.in_reply_to": map[string]any{"event_id": questionID}},
	})
	if reply.Reaction != "✅" || !strings.Contains(reply.Body, "Added") {
		t.Fatalf("a command in a reply: %+v", reply)
	}
	if always, _ := e.rules(); len(always) != 1 || always[0] != "@dash:localhost" {
		t.Fatalf("always-send %v after the reply's command", always)
	}

	// An edit of that command.
	_, reply = e.send(map[string]any{
		"msgtype": "m.text", "body": "* !presence always-send add @eve:localhost",
		"m.new_content": map[string]any{"msgtype": "m.text", "body": "!presence always-send add @eve:localhost"},
		"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": cmdID},
	})
	if !strings.Contains(reply.Body, "Edits are not applied") {
		t.Errorf("an edit of a command: %+v", reply)
	}

	// A command as an emote.
	_, reply = e.send(map[string]any{"msgtype": "m.emote", "body": "!presence always-send remove @dash:localhost"})
	if !strings.Contains(reply.Body, "emotes") {
		t.Errorf("a command as an emote: %+v", reply)
	}
	if always, _ := e.rules(); len(always) != 1 || always[0] != "@dash:localhost" {
		t.Errorf("always-send %v after the edit and the emote, want only dash", always)
	}
	// One reply each: the next command's reply is the next notice.
	if r := e.command("admin", "!presence status"); r.Reaction != "✅" {
		t.Errorf("status: %+v", r)
	}
	if notices, _ := e.syncs["admin"].CountReplies(cmdID); notices != 1 {
		t.Errorf("the reply's command got %d replies, want 1", notices)
	}
}

// TestCatchUpSkipsCommandsFromBeforeTheBotJoined has presence-router
// running before its control room exists, as on a first install: the admin
// creates the room, types a command, and invites the bot only later. The
// bot's catch-up reads that command in the timeline and must not apply it
// (it logs it as skipped, with the reason); a command after the join is
// applied.
func TestCatchUpSkipsCommandsFromBeforeTheBotJoined(t *testing.T) {
	e := newEnv(t, false)
	if err := e.stack.StartSynapse(e.ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.stack.StartRouter(e.ctx); err != nil {
		t.Fatal(err)
	}
	var early id.EventID
	e.beforeInvite = func() {
		resp, err := e.users["admin"].SendText(e.ctx, e.room, "!presence blacklist add @alice:localhost")
		if err != nil {
			t.Fatal(err)
		}
		early = resp.EventID
		time.Sleep(7 * time.Second) // past catch-up's grace for recent events
	}
	e.populate()
	if r := e.command("admin", "!presence always-send add @dash:localhost"); r.Reaction != "✅" {
		t.Fatalf("a command after the join: %+v", r)
	}
	deadline := time.Now().Add(30 * time.Second)
	skipped := regexp.MustCompile(`msg="Skipped a command[^\n]*event_id="?` + regexp.QuoteMeta(string(early)) + `[^\n]*reason="sent before presence-router`)
	for !skipped.MatchString(e.stack.Tail(harness.RouterLog(0), 500)) {
		if time.Now().After(deadline) {
			t.Fatal("presence-router's log does not say it skipped the command sent before it joined")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if always, blacklist := e.rules(); len(blacklist) != 0 || len(always) != 1 {
		t.Errorf("always-send %v, blacklist %v: the command sent before the bot joined was applied", always, blacklist)
	}
}
