package listfile

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presence-router/presence-router/rules"
)

func TestWriteRead_RoundTripKeepsEveryEntryAndReason(t *testing.T) {
	entries := []rules.ListEntry{
		{List: rules.AlwaysSend, UserID: "@dash:example.org", Reason: "Support dashboard: \"quoted\", with # and: colons"},
		{List: rules.AlwaysSend, UserID: "@mon:other.org"},
		{List: rules.Blacklist, UserID: "@*:*", Reason: "everyone (forced)"},
		{List: rules.Blacklist, UserID: "@whatsapp_*:example.org", Reason: "WhatsApp puppets\nsecond line"},
		{List: rules.Blacklist, UserID: "@a:[::1]:8448"},
	}
	var buf bytes.Buffer
	if err := Write(&buf, entries, 42, time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	got, err := Read(buf.Bytes())
	if err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	if !slices.Equal(got, entries) {
		t.Errorf("read back %+v\nwant %+v\nfile:\n%s", got, entries, buf.String())
	}
	var again bytes.Buffer
	_ = Write(&again, got, 42, time.Unix(0, 0))
	if again.String() != buf.String() {
		t.Errorf("a second round trip differs:\n%s\nvs\n%s", again.String(), buf.String())
	}
}

func TestRead_NamesTheLineOfWhatIsWrong(t *testing.T) {
	tests := []struct {
		name, file, want string
	}{
		{"not YAML", "always_send: [\n", "not a lists file"},
		{"an unknown key", "always_send: []\nblacklst: []\n", "line 2"},
		{"an unknown key in an entry", "always_send:\n  - user: \"@a:x.org\"\n    reson: typo\n", "line 3"},
		{"a bad user", "always_send:\n  - user: \"@a:x.org\"\n  - user: nope\n", "line 3"},
		{"a pattern on always-send", "always_send:\n  - user: \"@a*:x.org\"\n", "line 2: \"@a*:x.org\": patterns are for the blacklist only"},
		{"a duplicate", "blacklist:\n  - user: \"@a:x.org\"\n  - user: \"@a:x.org\"\n", "line 3"},
		{"an entry without user", "blacklist:\n  - reason: why\n", "line 2: an entry without user"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Read([]byte(tt.file))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Read: %v, want %q", err, tt.want)
			}
		})
	}
	if got, err := Read([]byte("# nothing\n")); err != nil || len(got) != 0 {
		t.Errorf("an empty file: %v, %v; want no entries", got, err)
	}
}
