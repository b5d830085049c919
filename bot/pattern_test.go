package bot

import (
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"
)

func TestParseCommand_Patterns(t *testing.T) {
	tests := []struct {
		name, body string
		users      []id.UserID
		errText    string
	}{
		{"a prefix pattern on the blacklist", "!presence blacklist add @whatsapp_*:example.org WhatsApp puppets", []id.UserID{"@whatsapp_*:example.org"}, ""},
		{"a server pattern and a user together", "!presence blacklist add @*:bridge.example.org @ceo:example.org", []id.UserID{"@*:bridge.example.org", "@ceo:example.org"}, ""},
		{"? patterns", "!presence blacklist remove @bot-??:example.org", []id.UserID{"@bot-??:example.org"}, ""},
		{"everyone is refused", "!presence blacklist add @*:*", nil, "matches every user"},
		{"everyone with --force", "!presence blacklist add @*:* --force testing", []id.UserID{"@*:*"}, ""},
		{"a bare * is not a user", "!presence blacklist add @*", nil, "missing the :server part"},
		{"a pattern with a character no server name has", "!presence blacklist add @a*:exa_mple.org", nil, "no server name has"},
		{"patterns are refused on always-send", "!presence always-send add @dash*:example.org", nil, "patterns (with * or ?) are for the blacklist only"},
		{"explain takes a user, not a pattern", "!presence explain @bot-*:example.org", nil, "for the blacklist only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, err := ParseCommand("!presence", tt.body, "")
			if tt.errText != "" {
				if err == nil || !strings.Contains(renderedText(err.Error()), tt.errText) {
					t.Fatalf("err = %v; want one saying %q", err, tt.errText)
				}
				return
			}
			if err != nil || cmd == nil || !slicesEqual(cmd.Users, tt.users) {
				t.Fatalf("= %+v, %v; want users %v", cmd, err, tt.users)
			}
		})
	}
}

func slicesEqual(a, b []id.UserID) bool {
	return strings.Join(toStrings(a), ",") == strings.Join(toStrings(b), ",")
}

func toStrings(users []id.UserID) []string {
	out := make([]string, len(users))
	for i, u := range users {
		out[i] = string(u)
	}
	return out
}

func TestBot_PatternsListedApartAndExplained(t *testing.T) {
	tb := newTestBot(t, "", nil)
	tb.deliver(t, "t0", hsToken, message("$0", testAdmin, "!presence always-send add @puppet_desk:test @dash:test"))
	tb.replies(t, 1)
	tb.deliver(t, "t1", hsToken, message("$1", testAdmin, "!presence blacklist add @puppet_*:test @ceo:test bridges"))
	if reply := body(tb.replies(t, 2)[1]); !strings.Contains(reply, "@puppet_*:test") || !strings.Contains(reply, "The pattern matches 1 of the 2 always-send users") {
		t.Fatalf("add: %q", reply)
	}
	tb.deliver(t, "t2", hsToken, message("$2", testAdmin, "!presence blacklist list"))
	list := body(tb.replies(t, 3)[2])
	if !strings.Contains(list, "1 user and 1 pattern") || strings.Index(list, "Patterns") > strings.Index(list, "Users") {
		t.Errorf("list does not show the pattern apart: %q", list)
	}
	tb.deliver(t, "t3", hsToken, message("$3", testAdmin, "!presence explain @PUPPET_7:test"))
	if explain := body(tb.replies(t, 4)[3]); !strings.Contains(explain, "blacklisted by the pattern `@puppet_*:test`") {
		t.Errorf("explain does not name the pattern: %q", explain)
	}
	tb.deliver(t, "t4", hsToken, message("$4", testAdmin, "!presence history"))
	if history := body(tb.replies(t, 5)[4]); !strings.Contains(history, "@puppet_*:test") {
		t.Errorf("history does not record the pattern: %q", history)
	}
	_, _, blacklist := tb.engine.Rules()
	if len(blacklist) != 2 || tb.engine.Explain("@puppet_9:test").Pattern != "@puppet_*:test" {
		t.Errorf("engine after the change: %v", blacklist)
	}
}
