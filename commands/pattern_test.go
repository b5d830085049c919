package commands

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
