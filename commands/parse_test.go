package commands

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/rules"

	"github.com/presence-router/presence-router/userid"
)

func TestParseCommand(t *testing.T) {
	const p = "!presence"
	tests := []struct {
		name     string
		body     string
		html     string
		want     *Command // nil with wantErr "" means: not for us
		wantErr  string   // substring of the ParseError
		wantBadN int      // number of bad arguments named
	}{
		{"not for us: other text", "hello", "", nil, "", 0},
		{"not for us: other prefix", "!other help", "", nil, "", 0},
		{"not for us: prefix glued to a word", "!presencex help", "", nil, "", 0},
		{"not for us: empty", "", "", nil, "", 0},
		{"bare prefix is help", "!presence", "", &Command{Verb: VerbHelp}, "", 0},
		{"help", "!presence help", "", &Command{Verb: VerbHelp}, "", 0},
		{"a reply's plain fallback is not the command", "> <@bob:x.org> is dash on?\n> yes\n\n!presence status", "", &Command{Verb: VerbStatus}, "", 0},
		{"a reply's HTML fallback is not the command", "> <@bob:x.org> hi\n\n!presence status", "<mx-reply><blockquote>hi !presence help</blockquote></mx-reply>!presence status", &Command{Verb: VerbStatus}, "", 0},
		{"quoted lines without a reply header are text", "> !presence status", "", nil, "", 0},
		{"help topic", "!presence help always-send", "", &Command{Verb: VerbHelp, Topic: "always-send"}, "", 0},
		{"help topic alias", "!presence help always_send", "", &Command{Verb: VerbHelp, Topic: "always-send"}, "", 0},
		{"help unknown topic", "!presence help nope", "", nil, "No help topic", 0},
		{"prefix is case-insensitive", "!PRESENCE Always-Send ADD @dash:example.org", "", &Command{Verb: VerbAdd, List: rules.AlwaysSend, Users: []id.UserID{"@dash:example.org"}}, "", 0},
		{"add one", "!presence always-send add @dash:example.org", "", &Command{Verb: VerbAdd, List: rules.AlwaysSend, Users: []id.UserID{"@dash:example.org"}}, "", 0},
		{"add several with a reason", "!presence always-send add @a:x.org @b:x.org  Support   desk", "", &Command{Verb: VerbAdd, List: rules.AlwaysSend, Users: []id.UserID{"@a:x.org", "@b:x.org"}, Reason: "Support   desk"}, "", 0},
		{"duplicates are dropped", "!presence blacklist add @a:x.org @a:x.org", "", &Command{Verb: VerbAdd, List: rules.Blacklist, Users: []id.UserID{"@a:x.org"}}, "", 0},
		{"remove", "!presence blacklist remove @alice:example.org", "", &Command{Verb: VerbRemove, List: rules.Blacklist, Users: []id.UserID{"@alice:example.org"}}, "", 0},
		{"remove with a reason", "!presence blacklist remove @alice:example.org asked again", "", &Command{Verb: VerbRemove, List: rules.Blacklist, Users: []id.UserID{"@alice:example.org"}, Reason: "asked again"}, "", 0},
		{"list alias always_send", "!presence always_send list", "", &Command{Verb: VerbList, List: rules.AlwaysSend}, "", 0},
		{"blacklist list", "!presence blacklist list", "", &Command{Verb: VerbList, List: rules.Blacklist}, "", 0},
		{"list takes no arguments", "!presence blacklist list @a:x.org", "", nil, "takes no arguments", 0},
		{"remote user with port", "!presence always-send add @bot:remote.example:8448", "", &Command{Verb: VerbAdd, List: rules.AlwaysSend, Users: []id.UserID{"@bot:remote.example:8448"}}, "", 0},
		{"IPv6 server", "!presence always-send add @bot:[::1]:8448", "", &Command{Verb: VerbAdd, List: rules.AlwaysSend, Users: []id.UserID{"@bot:[::1]:8448"}}, "", 0},
		{"historical localpart", "!presence always-send add @Dash!Board:x.org", "", &Command{Verb: VerbAdd, List: rules.AlwaysSend, Users: []id.UserID{"@Dash!Board:x.org"}}, "", 0},
		{"matrix.to link", "!presence always-send add https://matrix.to/#/@dash:example.org", "", &Command{Verb: VerbAdd, List: rules.AlwaysSend, Users: []id.UserID{"@dash:example.org"}}, "", 0},
		{"percent-encoded matrix.to link with via", "!presence always-send add https://matrix.to/#/%40dash%3Aexample.org?via=example.org", "", &Command{Verb: VerbAdd, List: rules.AlwaysSend, Users: []id.UserID{"@dash:example.org"}}, "", 0},
		{"matrix: URI", "!presence always-send add matrix:u/dash:example.org", "", &Command{Verb: VerbAdd, List: rules.AlwaysSend, Users: []id.UserID{"@dash:example.org"}}, "", 0},
		{"pill in formatted body", "!presence always-send add Dash Board",
			`!presence always-send add <a href="https://matrix.to/#/@dash:example.org">Dash Board</a> reception`,
			&Command{Verb: VerbAdd, List: rules.AlwaysSend, Users: []id.UserID{"@dash:example.org"}, Reason: "reception"}, "", 0},
		{"two pills", "", `!presence blacklist add <a href="https://matrix.to/#/@a:x.org">A</a> <a href="https://matrix.to/#/%40b%3Ax.org">B</a>`,
			&Command{Verb: VerbAdd, List: rules.Blacklist, Users: []id.UserID{"@a:x.org", "@b:x.org"}}, "", 0},
		{"room link is not a user", "!presence always-send add https://matrix.to/#/#room:x.org", "", nil, "does not point to a user", 1},
		{"missing sigil", "!presence always-send add dash:example.org", "", nil, "missing the @ sigil", 1},
		{"missing server", "!presence always-send add @dash", "", nil, "missing the :server part", 1},
		{"bad port", "!presence always-send add @dash:example.org:99999", "", nil, "invalid port", 1},
		{"mixed good and bad arguments name every bad one", "!presence always-send add @ok:x.org @bad @also:bad_host.org", "", nil, "@bad", 2},
		{"missing user", "!presence always-send add", "", nil, "Missing user", 0},
		{"only a reason", "!presence always-send add because", "", nil, "Missing user", 0},
		{"missing action", "!presence always-send", "", nil, "add, remove or list", 0},
		{"unknown action", "!presence blacklist purge", "", nil, "Unknown blacklist action", 0},
		{"unknown command points to help", "!presence frobnicate", "", nil, "Unknown command `frobnicate`", 0},
		{"explain", "!presence explain @alice:x.org", "", &Command{Verb: VerbExplain, Users: []id.UserID{"@alice:x.org"}}, "", 0},
		{"explain without a user explains the sender", "!presence explain", "", &Command{Verb: VerbExplain}, "", 0},
		{"explain takes one user", "!presence explain @a:x.org @b:x.org", "", nil, "one user, or none", 0},
		{"group add reads the name and the members", "!presence group add Support @a:x.org @*:x.org why", "", &Command{Verb: VerbAdd, List: groupTopic, Group: "support", Users: []id.UserID{"@a:x.org", "@*:x.org"}, Reason: "why"}, "", 0},
		{"group create takes a reason", "!presence groups create team.b_1 the B team", "", &Command{Verb: VerbCreate, List: groupTopic, Group: "team.b_1", Reason: "the B team"}, "", 0},
		{"group delete with --dry-run", "!presence group delete x --dry-run", "", &Command{Verb: VerbDelete, List: groupTopic, Group: "x", DryRun: true}, "", 0},
		{"group list of one", "!presence group list x", "", &Command{Verb: VerbList, List: groupTopic, Group: "x"}, "", 0},
		{"group name with a bad character", "!presence group create sup/port", "", nil, "a group name is", 1},
		{"group name too long", "!presence group create " + strings.Repeat("a", 65), "", nil, "a group name is", 1},
		{"group add without members", "!presence group add support", "", nil, "Missing member", 0},
		{"group add without a name", "!presence group add", "", nil, "Missing the group's name", 0},
		{"group pattern over every server needs --force", "!presence group add all @*:*", "", nil, "matches every user", 1},
		{"group pattern over every server with --force", "!presence group add all @*:* --force", "", &Command{Verb: VerbAdd, List: groupTopic, Group: "all", Users: []id.UserID{"@*:*"}, Force: true}, "", 0},
		{"group unknown action", "!presence group rename a b", "", nil, "Unknown group action", 0},
		{"group without an action", "!presence group", "", nil, "Missing what to do with groups", 0},
		{"explain a bad user", "!presence explain @alice", "", nil, "missing the :server part", 1},
		{"history default", "!presence history", "", &Command{Verb: VerbHistory, Count: 10}, "", 0},
		{"history count", "!presence history 25", "", &Command{Verb: VerbHistory, Count: 25}, "", 0},
		{"history bad count", "!presence history 0", "", nil, "from 1 to 100", 1},
		{"status", "!presence status", "", &Command{Verb: VerbStatus}, "", 0},
		{"status takes no arguments", "!presence status now", "", nil, "takes no arguments", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCommand(p, tt.body, tt.html)
			if tt.wantErr != "" {
				var perr *ParseError
				if !errors.As(err, &perr) || !strings.Contains(renderedText(err.Error()), tt.wantErr) {
					t.Fatalf("err = %v; want a ParseError mentioning %q", err, tt.wantErr)
				}
				if len(perr.Args) != tt.wantBadN {
					t.Errorf("bad args = %+v; want %d", perr.Args, tt.wantBadN)
				}
				if !strings.Contains(err.Error(), "help") {
					t.Errorf("error does not point to help: %q", err.Error())
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tt.want == nil {
				if got != nil {
					t.Fatalf("got %+v for a message not addressed to the bot", got)
				}
				return
			}
			if got == nil || got.Verb != tt.want.Verb || got.List != tt.want.List || !slices.Equal(got.Users, tt.want.Users) ||
				got.Reason != tt.want.Reason || got.Count != tt.want.Count || got.Topic != tt.want.Topic {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseCommand_Limits(t *testing.T) {
	many := "!presence always-send add" + strings.Repeat(" @u:x.org", 1)
	for i := 0; i < 1001; i++ {
		many += " @u" + strings.Repeat("a", i%5) + string(rune('a'+i%26)) + ":x" + string(rune('a'+i/26%26)) + ".org"
	}
	if _, err := ParseCommand("!presence", many, ""); err == nil || !strings.Contains(err.Error(), "Too many users") {
		t.Errorf("1002 users: err = %v", err)
	}
	if _, err := ParseCommand("!presence", "!presence status "+strings.Repeat("x", 70000), ""); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("huge command: err = %v", err)
	}
}

func TestHelpMarkdown_CoversEveryCommand(t *testing.T) {
	plain := func(md string) string { return strings.ReplaceAll(renderedText(md), "`", "") }
	overview := plain(HelpMarkdown("!presence", ""))
	for _, c := range commands {
		if !strings.Contains(overview, c.Usage("!presence")) {
			t.Errorf("the overview lacks %q", c.Usage("!presence"))
		}
		topic := plain(HelpMarkdown("!presence", c.topic()))
		if !strings.Contains(topic, c.Usage("!presence")) || c.example != "" && !strings.Contains(topic, "Example: !presence "+c.Words()+" "+c.example) {
			t.Errorf("help %s lacks %q or its example: %q", c.topic(), c.Usage("!presence"), topic)
		}
		// Every example parses as the command it illustrates.
		if c.example != "" {
			cmd, err := ParseCommand("!presence", "!presence "+c.Words()+" "+c.example, "")
			if err != nil || cmd == nil || cmd.Verb != c.verb || cmd.List != c.list {
				t.Errorf("the example of %q does not parse as it: %+v, %v", c.Words(), cmd, err)
			}
		}
	}
}

func FuzzParseCommand(f *testing.F) {
	for _, seed := range []string{"!presence", "!presence always-send add @a:x.org reason", "!presence help blacklist",
		"!presence blacklist remove https://matrix.to/#/%40a%3Ax", "!presence history 5", "!presence explain @a:[::1]:80",
		"!presence always-send add --dry-run @a:x.org", "!presence blacklist add @a*:x.org --force why --dry-run", "!presence undo 3 --force oops",
		"!presence always-send remove @a:x.org reason with --DRY-RUN inside", "!presence undo --dry-run 7"} {
		f.Add(seed, "")
	}
	f.Add("", `!presence always-send add <a href="https://matrix.to/#/@a:x.org">A</a>`)
	f.Fuzz(func(t *testing.T, body, html string) {
		cmd, err := ParseCommand("!presence", body, html)
		if err != nil {
			var perr *ParseError
			if !errors.As(err, &perr) {
				t.Fatalf("error is not a ParseError: %v", err)
			}
			return
		}
		if cmd == nil {
			return
		}
		for _, u := range cmd.Users {
			parse := userid.Parse
			if userid.IsPattern(string(u)) {
				parse = userid.ParsePattern
			}
			if _, err := parse(string(u)); err != nil && !(cmd.Force && errors.Is(err, userid.ErrTooBroad)) {
				t.Fatalf("accepted invalid user %q: %v", u, err)
			}
		}
		// --dry-run and --force are options wherever a word reads as one
		// (invisible characters and invalid bytes dropped, as the reason
		// drops them): never part of a reason, and set exactly when typed.
		reads := func(w string) bool { return strings.EqualFold(sanitize(w, len(w)), optionDryRun) }
		for _, opt := range []string{optionDryRun, optionForce} {
			for _, word := range strings.Fields(cmd.Reason) {
				if strings.EqualFold(word, opt) {
					t.Fatalf("%s ended up in the reason %q", opt, cmd.Reason)
				}
			}
		}
		if html == "" && (cmd.Verb == VerbAdd || cmd.Verb == VerbRemove || cmd.Verb == VerbUndo) {
			typed := slices.ContainsFunc(strings.Fields(event.TrimReplyFallbackText(body)), reads)
			if cmd.DryRun != typed {
				t.Fatalf("DryRun %v for %q", cmd.DryRun, body)
			}
		}
		if (cmd.Verb == VerbAdd || cmd.Verb == VerbRemove) && len(cmd.Users) == 0 {
			t.Fatalf("%s without users", cmd.Verb)
		}
	})
}
