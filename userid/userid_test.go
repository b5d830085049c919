package userid

import (
	"errors"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string // "" means valid
	}{
		{"@alice:example.org", ""},
		{"@a.b_c=d-e/f+g:example.org", ""},
		{"@Historical!Chars~:example.org", ""},
		{"@alice:example.org:8448", ""},
		{"@alice:127.0.0.1", ""},
		{"@alice:127.0.0.1:8008", ""},
		{"@alice:[::1]", ""},
		{"@alice:[2001:db8::1]:8448", ""},
		{"@alice:localhost", ""},
		{"alice:example.org", "missing the @ sigil"},
		{"@alice", "missing the :server part"},
		{"@:example.org", "empty localpart"},
		{"@al ice:example.org", "invalid character"},
		{"@alicé:example.org", "invalid character"},
		{"@alice:", "empty server name"},
		{"@alice:exa_mple.org", "not allowed"},
		{"@alice:example.org:", "invalid port"},
		{"@alice:example.org:0", "invalid port"},
		{"@alice:example.org:65536", "invalid port"},
		{"@alice:example.org:123456", "invalid port"},
		{"@alice:example.org:80a", "invalid port"},
		{"@alice:[::1", "unclosed IPv6"},
		{"@alice:[not-ip]", "bad IPv6"},
		{"@alice:[::1]x", "invalid server name"},
		{"@a:[fe80::1%eth0]", "with a zone"},
		{"@a:host:00080", "no leading zeros"},
		{"@a:[::1]:0443", "no leading zeros"},
		{"@" + strings.Repeat("a", 250) + ":example.org", "the limit is 255"},
		{"", "missing the @ sigil"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr == "" {
				if err != nil || string(got) != tt.in {
					t.Fatalf("Parse(%q) = %q, %v; want valid", tt.in, got, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q) error = %v; want it to mention %q", tt.in, err, tt.wantErr)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, seed := range []string{"@alice:example.org", "@a:[::1]:80", "@:x", "@a:b:", "@\x00:x", "@a:1.2.3.4:65535"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := Parse(s)
		if err != nil {
			return
		}
		if len(got) > MaxLength || !strings.HasPrefix(string(got), "@") || !strings.Contains(string(got), ":") {
			t.Fatalf("accepted %q", s)
		}
		if again, err := Parse(string(got)); err != nil || again != got {
			t.Fatalf("re-parse of %q = %q, %v", got, again, err)
		}
	})
}

func TestSet_FoldsASCIILettersOnly(t *testing.T) {
	tests := []struct {
		pattern, user string
		want          bool
	}{
		{"@whatsapp_*:x", "@WhatsApp_1:x", true},
		{"@BOT-??:X", "@bot-12:x", true},
		{"@k*:x", "@\u212aelvin:x", false}, // Kelvin sign
		{"@*s:x", "@bo\u017f:x", false},    // long s
		{"@a?:x", "@a\u00e9:x", true},      // one character, two bytes
		{"@*:x", "@a:y", false},
	}
	for _, tt := range tests {
		if _, got := NewSet([]string{tt.pattern}).Match(tt.user); got != tt.want {
			t.Errorf("NewSet(%q).Match(%q) = %v; want %v", tt.pattern, tt.user, got, tt.want)
		}
	}
}

func TestParsePattern_EveryoneHoweverSpelledAndOneCase(t *testing.T) {
	tests := []struct {
		pattern string
		want    id.UserID // "" for too broad
	}{
		{"@*:*", ""}, {"@?*:*", ""}, {"@*:?*", ""}, {"@*?:*", ""}, {"@*:*?", ""}, {"@*?*:*", ""}, {"@?:?", ""},
		{"@*:example.org", "@*:example.org"},
		{"@WhatsApp_*:Example.ORG", "@whatsapp_*:example.org"},
		{"@a?:*", "@a?:*"},
	}
	for _, tt := range tests {
		got, err := ParsePattern(tt.pattern)
		switch {
		case tt.want == "" && !errors.Is(err, ErrTooBroad):
			t.Errorf("ParsePattern(%q) = %q, %v; want ErrTooBroad", tt.pattern, got, err)
		case tt.want != "" && (err != nil || got != tt.want):
			t.Errorf("ParsePattern(%q) = %q, %v; want %q", tt.pattern, got, err, tt.want)
		}
	}
}
