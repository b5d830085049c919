package commands

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/router"
	"github.com/presence-router/presence-router/store"
)

// fakeService is the bot as status sees it.
type fakeService struct {
	room     id.RoomID
	problems []string
	// identities are the users whose identity changed: first and current
	// master keys; accepting one makes it unchanged.
	identities map[id.UserID][2]string
}

func (s *fakeService) ControlRoom() id.RoomID { return s.room }
func (s *fakeService) Problems() []string     { return s.problems }
func (s *fakeService) AcceptIdentity(_ context.Context, user id.UserID) (string, string, error) {
	keys, ok := s.identities[user]
	if !ok {
		return "", "", &Refusal{Text: "nothing to accept"}
	}
	delete(s.identities, user)
	return keys[0], keys[1], nil
}

// testRunner is a Runner on a fresh SQLite store and an empty engine: the
// commands with no Matrix in the way.
type testRunner struct {
	*Runner
	store *store.Store
}

func newTestRunner(t *testing.T) *testRunner {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "commands.db"), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return &testRunner{store: st, Runner: &Runner{
		Prefix: "!presence", Domain: "test", Store: st, Engine: router.NewEngine("test", 0, nil, nil, nil),
		Service: &fakeService{room: "!control:test", identities: map[id.UserID][2]string{"@alice:test": {"OLDKEY", "NEWKEY"}}}, LastContact: func() time.Time { return time.Time{} }, Started: time.Now(),
	}}
}

// run runs a command as the admin, applies its change to the engine as the
// bot does, and returns the reply's Markdown.
func (tr *testRunner) run(t *testing.T, body string) *Reply {
	t.Helper()
	cmd, err := ParseCommand(tr.Prefix, body, "")
	if err != nil {
		return Failure(err.Error(), ResultInvalid)
	}
	rep, change, err := tr.Run(context.Background(), Origin{EventID: id.EventID("$" + body), Sender: "@admin:test"}, cmd)
	if err != nil {
		t.Fatal(err)
	}
	if change != nil {
		tr.Engine.Apply(change.Update())
	}
	return rep
}

func TestRunner_RepliesToEachCommand(t *testing.T) {
	tr := newTestRunner(t)
	tests := []struct {
		name, body string
		result     string
		want       []string
	}{
		{"add to always-send pushes to the new users", "!presence always-send add @dash:test @desk:test Support", ResultOK, []string{"Added `@dash:test` and `@desk:test` to the always-send list (reason: Support). Version 1.", "Sending current presence to `@dash:test` and `@desk:test`."}},
		{"adding again changes nothing", "!presence always-send add @dash:test", ResultOK, []string{"`@dash:test` is already on the always-send list: nothing to do."}},
		{"a pattern says how many always-send users it matches", "!presence blacklist add @d*:test", ResultOK, []string{"The pattern matches 2 of the 2 always-send users"}},
		{"explain names the pattern", "!presence explain @dora:test", ResultOK, []string{"blacklisted by the pattern `@d*:test`"}},
		{"removal from the blacklist pushes to every always-send user", "!presence blacklist remove @d*:test", ResultOK, []string{"Sending current presence to every always-send user (2)."}},
		{"list shows the users", "!presence always-send list", ResultOK, []string{"The always-send list has 2 users (version 3).", "* `@dash:test`"}},
		{"history is newest first", "!presence history 2", ResultOK, []string{"The last 2 changes, newest first:", "**v3**", "**v2**"}},
		{"status counts the lists", "!presence status", ResultOK, []string{"* Version: 3", "* always-send: 2 users", "* Control room: `!control:test` (pinned)"}},
		{"a bad user is refused and named", "!presence always-send add @nope", ResultInvalid, []string{"`@nope`", "Nothing was changed."}},
		{"identity accept trusts the new identity", "!presence identity accept @alice:test new phone", ResultOK, []string{"Accepted `@alice:test`'s new identity", "`NEWKEY`", "Version 4."}},
		{"identity accept is in history", "!presence history 1", ResultOK, []string{"**v4**", "accepted the new identity of", "NEWKEY", "reason: new phone"}},
		{"identity accept with nothing to accept changes nothing", "!presence identity accept @alice:test", ResultInvalid, []string{"nothing to accept"}},
		{"identity takes accept", "!presence identity trust @alice:test", ResultInvalid, []string{"`identity` takes `accept <user> [reason]`"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := tr.run(t, tt.body)
			if rep.Result != tt.result {
				t.Errorf("result %q, want %q: %s", rep.Result, tt.result, rep.Markdown)
			}
			for _, want := range tt.want {
				if !strings.Contains(rep.Markdown, want) {
					t.Errorf("reply lacks %q:\n%s", want, rep.Markdown)
				}
			}
		})
	}
}

// A pattern is one entry whatever case it is typed in: added once, removed
// in any case, counted apart from users.
func TestRunner_PatternsAreOneEntryWhateverTheirCase(t *testing.T) {
	tr := newTestRunner(t)
	steps := []struct {
		body string
		want string
	}{
		{"!presence blacklist add @Bot-*:Test @ceo:test", "Added `@bot-*:test` and `@ceo:test` to the blacklist"},
		{"!presence blacklist add @BOT-*:TEST", "`@bot-*:test` is already on the blacklist: nothing to do."},
		{"!presence status", "* blacklist: 1 user and 1 pattern"},
		{"!presence blacklist remove @bOt-*:tESt", "Removed `@bot-*:test` from the blacklist"},
		{"!presence status", "* blacklist: 1 user\n"},
		{"!presence blacklist add @?*:* everyone", "this pattern matches every user"},
	}
	for _, step := range steps {
		if rep := tr.run(t, step.body); !strings.Contains(rep.Markdown, step.want) {
			t.Errorf("%q: reply %q, want %q", step.body, rep.Markdown, step.want)
		}
	}
}
