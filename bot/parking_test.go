package bot

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/encryption"
)

// fakeEncryption reads encrypted events whose session it holds a body for
// (keys), as if decrypting them; the others miss their keys.
type fakeEncryption struct {
	lock      sync.Mutex
	keys      map[id.SessionID]string
	withheld  map[id.SessionID]event.RoomKeyWithheldCode
	requested []id.SessionID
}

func (f *fakeEncryption) Start(context.Context, context.Context) error { return nil }
func (f *fakeEncryption) Ready() bool                                  { return true }
func (f *fakeEncryption) ReadsEncrypted() bool                         { return true }
func (f *fakeEncryption) Wait()                                        {}
func (f *fakeEncryption) Refusal(context.Context, *event.Event, bool) (string, error) {
	return "", nil
}
func (f *fakeEncryption) Seal(_ context.Context, _ id.RoomID, t event.Type, content any) (event.Type, any, error) {
	return t, content, nil
}

func (f *fakeEncryption) Decrypt(_ context.Context, _ *logrus.Entry, evt *event.Event) (*event.Event, error) {
	f.lock.Lock()
	defer f.lock.Unlock()
	session := evt.Content.AsEncrypted().SessionID
	if code, ok := f.withheld[session]; ok {
		return nil, &encryption.WithheldError{Code: code}
	}
	body, ok := f.keys[session]
	if !ok {
		return nil, fmt.Errorf("%w: no session %s", encryption.ErrKeysMissing, session)
	}
	content, _ := json.Marshal(map[string]any{"msgtype": "m.text", "body": body})
	out := &event.Event{ID: evt.ID, RoomID: evt.RoomID, Sender: evt.Sender, Type: event.EventMessage, Timestamp: evt.Timestamp, Content: event.Content{VeryRaw: content}}
	_ = out.Content.ParseRaw(out.Type)
	return out, nil
}

func (f *fakeEncryption) RequestKeys(_ context.Context, evt *event.Event) error {
	f.lock.Lock()
	defer f.lock.Unlock()
	f.requested = append(f.requested, evt.Content.AsEncrypted().SessionID)
	return nil
}

func (f *fakeEncryption) give(session id.SessionID, body string) {
	f.lock.Lock()
	defer f.lock.Unlock()
	f.keys[session] = body
}

// encryptedIn is an encrypted message of sender's in session.
func encryptedIn(eventID string, sender id.UserID, session string) map[string]any {
	m := encrypted(eventID, sender)
	m["content"].(map[string]any)["session_id"] = session
	return m
}

const testEve = id.UserID("@eve:test") // a member who may not command

// repliesTo returns the bodies of the bot's replies to eventID.
func repliesTo(tb *testBot, eventID string) []string {
	var out []string
	for _, e := range tb.hs.events("m.room.message") {
		rel, _ := e.Content["m.relates_to"].(map[string]any)
		reply, _ := rel["m.in_reply_to"].(map[string]any)
		if reply["event_id"] == eventID {
			out = append(out, body(e))
		}
	}
	return out
}

// No member stalls the bot in an encrypted room: a member who may not
// command and whose messages cannot be decrypted gets no reply and makes
// nobody wait; an admin's command whose keys are late waits apart, with
// that admin's later commands behind it, while another admin's go on.
func TestBot_UndecryptableMessagesStallNobody(t *testing.T) {
	level := 50 // @mod:test is an admin by power level; @eve:test is not
	enc := &fakeEncryption{keys: map[id.SessionID]string{
		"admin-1":  "!presence always-send add @one:test",
		"admin-2b": "!presence always-send add @two:test",
		"mod":      "!presence always-send add @mod-added:test",
	}}
	tb := newTestBotEnc(t, "", &level, newFakeHomeserver(t), string(testRoom), enc)

	start := time.Now()
	tb.deliver(t, "t1", hsToken, encryptedIn("$eve1", testEve, "eve-x"), encryptedIn("$eve2", testEve, "eve-y"), encryptedIn("$eve3", testEve, "eve-z"),
		encryptedIn("$admin1", testAdmin, "admin-1"))
	tb.waitFor(t, "the admin's command", func() bool { return len(repliesTo(tb, "$admin1")) == 1 })
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the admin's command was answered after %s, behind the undecryptable messages", took)
	}
	// The admin's item is done just after its reply is sent; eve's must
	// not wait at all (parked, they would for 30 s).
	tb.waitFor(t, "no inbox item waiting (the undecryptable messages of a member who may not command wait for nothing)", func() bool {
		n, err := tb.store.Backlog(context.Background())
		return err == nil && n == 0
	})
	for _, eve := range []string{"$eve1", "$eve2", "$eve3"} {
		if got := repliesTo(tb, eve); len(got) != 0 {
			t.Errorf("a member who may not command got a reply to an undecryptable message: %q", got)
		}
	}

	// The admin's next command's keys are late; their command after it
	// waits behind it, the moderator's does not.
	tb.deliver(t, "t2", hsToken, encryptedIn("$admin2a", testAdmin, "admin-2a"), encryptedIn("$admin2b", testAdmin, "admin-2b"), encryptedIn("$mod", testMod, "mod"))
	tb.waitFor(t, "the moderator's command", func() bool { return len(repliesTo(tb, "$mod")) == 1 })
	if len(repliesTo(tb, "$admin2b")) != 0 {
		t.Error("the admin's second command overtook their first, whose keys are missing")
	}
	enc.give("admin-2a", "!presence always-send add @late:test")
	tb.waitFor(t, "both of the admin's commands", func() bool { return len(repliesTo(tb, "$admin2b")) == 1 && len(repliesTo(tb, "$admin2a")) == 1 })
	_, always, _ := tb.engine.Rules()
	if want := []id.UserID{"@late:test", "@mod-added:test", "@one:test", "@two:test"}; !slices.Equal(always, want) {
		t.Errorf("always-send %v, want %v", always, want)
	}
	history, err := tb.store.History(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, c := range slices.Backward(history) {
		order = append(order, strings.TrimPrefix(string(c.Entries[0].UserID), "@"))
	}
	if want := []string{"one:test", "mod-added:test", "late:test", "two:test"}; !slices.Equal(order, want) {
		t.Errorf("applied in the order %v, want %v (each sender's in the order sent)", order, want)
	}
}

// When an admin's client withholds a command's keys, the reply says what to
// do (not the library's words), at once; a member who may not command gets
// no reply.
func TestBot_WithheldKeysAreExplained(t *testing.T) {
	enc := &fakeEncryption{keys: map[id.SessionID]string{}, withheld: map[id.SessionID]event.RoomKeyWithheldCode{
		"unverified": event.RoomKeyWithheldUnverified, "blocked": event.RoomKeyWithheldBlacklisted, "eve": event.RoomKeyWithheldUnverified,
	}}
	tb := newTestBotEnc(t, "", nil, newFakeHomeserver(t), string(testRoom), enc)
	tb.deliver(t, "t1", hsToken, encryptedIn("$eve", testEve, "eve"), encryptedIn("$u", testAdmin, "unverified"), encryptedIn("$b", testAdmin, "blocked"))
	tb.waitFor(t, "both replies", func() bool { return len(repliesTo(tb, "$u")) == 1 && len(repliesTo(tb, "$b")) == 1 })
	for eventID, want := range map[string]string{"$u": "Verify", "$b": "Unblock"} {
		if got := repliesTo(tb, eventID)[0]; !strings.Contains(got, want) || strings.Contains(got, "withheld:") {
			t.Errorf("reply to %s: %q, want it to say %q in words", eventID, got, want)
		}
	}
	if got := repliesTo(tb, "$eve"); len(got) != 0 {
		t.Errorf("a member who may not command got a reply: %q", got)
	}
}

func (f *fakeEncryption) AcceptIdentity(context.Context, id.UserID) (*encryption.Identity, error) {
	return nil, encryption.ErrIdentityUnchanged
}
