package router

import (
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/internal/patternref"
	"github.com/presence-router/presence-router/rules"
	"github.com/presence-router/presence-router/userid"
)

func TestRule_Patterns(t *testing.T) {
	dash := []id.UserID{"@dash:x"}
	tests := []struct {
		name      string
		blacklist []id.UserID
		states    []State
		routed    []int
	}{
		{"a prefix pattern hides the bridge's puppets, case-insensitively", []id.UserID{"@whatsapp_*:x"},
			states("@whatsapp_491:x", "@WhatsApp_7:x", "@alice:x", "@whatsapp_1:other"), []int{2, 3}},
		{"a server pattern hides a whole server", []id.UserID{"@*:bridge.x"}, states("@a:bridge.x", "@b:bridge.x", "@a:x"), []int{2}},
		{"? stands for exactly one character", []id.UserID{"@bot-??:x"}, states("@bot-01:x", "@bot-1:x", "@bot-123:x"), []int{1, 2}},
		{"a user matched by a pattern and listed exactly", []id.UserID{"@bot-*:x", "@bot-7:x"}, states("@bot-7:x", "@alice:x"), []int{1}},
		{"overlapping patterns", []id.UserID{"@telegram_*:x", "@*_bot:x"}, states("@telegram_bot:x", "@telegram_1:x", "@x_bot:x", "@alice:x"), []int{3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEngine("", 1, dash, tt.blacklist, nil)
			_, routes := usersForStates(t, e, tt.states)
			if len(routes) != 1 || !slices.Equal(routes[0].States, tt.routed) {
				t.Errorf("routes = %+v; want states %v routed", routes, tt.routed)
			}
		})
	}
}

func TestEngine_PatternChanges(t *testing.T) {
	e := NewEngine("", 1, []id.UserID{"@dash:x"}, []id.UserID{"@bot-7:x"}, nil)
	batch := states("@bot-7:x", "@bot-8:x", "@alice:x")
	check := func(step string, want []int) {
		t.Helper()
		if _, routes := usersForStates(t, e, batch); !slices.Equal(routes[0].States, want) {
			t.Errorf("%s: routed %v; want %v", step, routes[0].States, want)
		}
	}
	check("exact entry only", []int{1, 2})
	e.Apply(rules.Update{Version: 2, AddBlacklist: []id.UserID{"@bot-*:x"}})
	check("after adding the pattern (the verdicts of version 1 must not stay)", []int{2})
	if ex := e.Explain("@bot-8:x"); !ex.Blacklisted || ex.Pattern != "@bot-*:x" {
		t.Errorf("explain names %+v; want the pattern", ex)
	}
	if ex := e.Explain("@bot-7:x"); !ex.Blacklisted || ex.Pattern != "" {
		t.Errorf("explain of an exact entry names pattern %q", ex.Pattern)
	}
	e.Apply(rules.Update{Version: 3, RemoveBlacklist: []id.UserID{"@bot-*:x"}})
	check("the pattern removed while the exact entry remains", []int{1, 2})
	// A cached verdict must not outlive its pattern while another remains.
	e.Apply(rules.Update{Version: 4, AddBlacklist: []id.UserID{"@bot-*:x", "@other-*:x"}})
	check("two patterns", []int{2})
	e.Apply(rules.Update{Version: 5, RemoveBlacklist: []id.UserID{"@bot-*:x"}})
	check("one pattern removed, another left", []int{1, 2})
	a := e.Changes(t.Context(), ptr(1), 0)
	if !a.AllSources {
		t.Errorf("a pattern change did not say every source changed: %+v", a)
	}
}

// FuzzPatternMatch checks that the compiled set (userid.Set) agrees
// with the reference reading of a pattern (internal/patternref), for ASCII
// patterns against any user ID, non-ASCII ones included, and that parsing
// never panics.
func FuzzPatternMatch(f *testing.F) {
	for _, seed := range [][2]string{{"@whatsapp_*:x", "@WhatsApp_1:x"}, {"@bot-??:x", "@bot-1:x"}, {"@*_bot:*", "@a_bot:b"}, {"@a*b*c:x", "@abbc:x"}, {"@*:*", "@a:b"}, {"@k*:x", "@\u212aelvin:x"}, {"@s?:x", "@\u017fa:x"}, {"@?:x", "@é:x"}, {"@a*:x", "@A\u00e9:x"}} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, p, user string) {
		_, _ = userid.ParsePattern(p)
		if !isASCIIWithoutNewline(p) || !utf8.ValidString(user) || strings.ContainsAny(user, "\n\r") || !userid.IsPattern(p) {
			return // patterns are ASCII (ParsePattern); user IDs hold no line breaks
		}
		_, got := userid.NewSet([]string{p}).Match(user)
		if want := patternref.Match(p, user); got != want {
			t.Fatalf("pattern %q on %q: compiled %v, reference %v", p, user, got, want)
		}
	})
}

func isASCIIWithoutNewline(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsAny(s, "\n\r") && strings.IndexFunc(s, func(r rune) bool { return r > 0x7e }) < 0
}
