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
	"github.com/presence-router/presence-router/rules"
	"github.com/presence-router/presence-router/store"
)

// fakeService is the bot as status sees it.
type fakeService struct {
	room     id.RoomID
	problems []string
	// identities are the users whose identity changed: first and current
	// master keys; accepting one makes it unchanged.
	identities map[id.UserID][2]string
	// unknown are the local users the homeserver does not know.
	unknown map[id.UserID]bool
}

func (s *fakeService) UserExists(_ context.Context, user id.UserID) (bool, error) {
	return !s.unknown[user], nil
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
// checkReply reports (under label) a reply whose result is not result or
// whose text lacks one of want.
func checkReply(t *testing.T, label string, rep *Reply, result string, want []string) {
	t.Helper()
	if rep.Result != result {
		t.Errorf("%s: result %q, want %q: %s", label, rep.Result, result, rep.Markdown)
	}
	for _, w := range want {
		if !strings.Contains(rep.Markdown, w) {
			t.Errorf("%s: reply lacks %q:\n%s", label, w, rep.Markdown)
		}
	}
}

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
			checkReply(t, tt.body, tr.run(t, tt.body), tt.result, tt.want)
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

// A change is previewed with --dry-run (anywhere among the arguments),
// undone with undo, reported honestly, and guarded against typos: each step
// as an admin types it, with the reply it must give and the lists after it.
func TestRunner_ChangesAnOperatorCanTrust(t *testing.T) {
	tr := newTestRunner(t)
	tr.Service.(*fakeService).unknown = map[id.UserID]bool{"@dahs:test": true}
	steps := []struct {
		name, body string
		result     string
		want       []string
		version    int64 // the engine's version after the step
	}{
		{"a dry run says what would change", "!presence always-send add @dash:test --dry-run", ResultOK,
			[]string{"Dry run: Would add `@dash:test` to the always-send list.", "Would send current presence to `@dash:test`.", "Nothing was changed."}, 0},
		{"--dry-run in the reason's place is an option too", "!presence always-send add @dash:test Support --dry-run", ResultOK, []string{"Dry run:", "(reason: Support)", "Nothing was changed."}, 0},
		{"bad input is reported as without --dry-run", "!presence always-send add @nope --dry-run", ResultInvalid, []string{"`@nope`", "Nothing was changed."}, 0},
		{"an unknown option is named", "!presence always-send add @dash:test --dryrun", ResultInvalid, []string{"`--dryrun`", "unknown option"}, 0},
		{"the same without --dry-run applies", "!presence always-send add @dash:test", ResultOK, []string{"Added `@dash:test` to the always-send list. Version 1."}, 1},
		{"an unregistered local user is refused on always-send", "!presence always-send add @dahs:test @desk:test", ResultInvalid, []string{"`@dahs:test` is not registered on `test` (a typo?)", "Nothing was changed", "`--force`"}, 1},
		{"--force adds them anyway", "!presence always-send add @dahs:test --force", ResultOK, []string{"Added `@dahs:test`", "Version 2."}, 2},
		{"on the blacklist an unregistered user is a warning", "!presence blacklist add @dahs:test", ResultOK, []string{"Added `@dahs:test` to the blacklist. Version 3.", "⚠️ `@dahs:test` is not registered"}, 3},
		{"remote users are not checked", "!presence always-send add @someone:elsewhere.org", ResultOK, []string{"Version 4."}, 4},
		{"undo removes what a change added", "!presence undo 4 wrong server", ResultOK, []string{"Removed `@someone:elsewhere.org` from the always-send list (reason: wrong server). Version 5."}, 5},
		{"history shows the undo", "!presence history 1", ResultOK, []string{"**v5**", "(undo of version 4)"}, 5},
		{"an undo can be undone", "!presence undo 5", ResultOK, []string{"Added `@someone:elsewhere.org`", "Version 6."}, 6},
		{"undo refused after a later change to the same entries", "!presence undo 4", ResultInvalid, []string{"Version 5 changed some of the same entries after version 4", "Nothing was changed", "`--force`"}, 6},
		{"undo of a version that does not exist", "!presence undo 99", ResultInvalid, []string{"There is no version 99"}, 6},
		{"undo --dry-run previews", "!presence undo 3 --dry-run", ResultOK, []string{"Dry run: Would remove `@dahs:test` from the blacklist.", "Nothing was changed."}, 6},
		{"a pattern", "!presence blacklist add @al*:test", ResultOK, []string{"Version 7."}, 7},
		{"removing a user a pattern still hides says so", "!presence blacklist add @alice:test", ResultOK, []string{"Version 8."}, 8},
		{"the reply names the pattern", "!presence blacklist remove @alice:test", ResultOK, []string{"Removed `@alice:test` from the blacklist", "`@alice:test` stays hidden: the pattern `@al*:test` still matches them."}, 9},
		{"pattern removal is case-insensitive", "!presence blacklist remove @AL*:TEST", ResultOK, []string{"Removed `@al*:test` from the blacklist"}, 10},
	}
	for _, step := range steps {
		checkReply(t, step.name, tr.run(t, step.body), step.result, step.want)
		if v := tr.Engine.Version(); v != step.version {
			t.Errorf("%s: version %d, want %d", step.name, v, step.version)
		}
	}
}

// An import (a change with no command event) and a change of no list (the
// control room's move, an accepted identity) are not undone, and say why.
func TestRunner_UndoOfWhatIsNoCommand(t *testing.T) {
	tr := newTestRunner(t)
	ctx := context.Background()
	res, err := tr.store.Apply(ctx, rules.Mutation{Sender: "(command line)", Command: "import lists.yaml", Entries: []rules.Entry{{List: rules.AlwaysSend, UserID: "@dash:test", Action: rules.Add}}})
	if err != nil {
		t.Fatal(err)
	}
	tr.Engine.Apply(res.Change.Update())
	moved, err := tr.store.Record(ctx, rules.Mutation{EventID: "$tomb", Sender: "@admin:test", Command: "moved the control room from !a:test to !b:test (room upgrade)"})
	if err != nil {
		t.Fatal(err)
	}
	tr.Engine.Apply(moved.Update())
	learned, err := tr.store.Apply(ctx, rules.Mutation{Sender: "@presence:test", Command: rules.LearnedCommand, Entries: []rules.Entry{{List: rules.Known, UserID: "@new:test", Action: rules.Add}}})
	if err != nil {
		t.Fatal(err)
	}
	tr.Engine.Apply(learned.Change.Update())
	for body, want := range map[string]string{
		"!presence undo 1": "Version 1 was an import of 1 entries",
		"!presence undo 2": "Version 2 changed no list",
		"!presence undo 3": "Version 3 recorded users seen syncing",
	} {
		if rep := tr.run(t, body); rep.Result != ResultInvalid || !strings.Contains(rep.Markdown, want) {
			t.Errorf("%q: %s %q, want %q", body, rep.Result, rep.Markdown, want)
		}
	}
}
