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
		{List: rules.GroupList("empty")},
		{List: rules.GroupList("everyone"), Reason: "replaces the directory room"},
		{List: rules.GroupList("everyone"), UserID: "@*:example.org", Reason: "the whole server"},
		{List: rules.GroupList("everyone"), UserID: "@guest:other.org"},
		{List: rules.GroupList("support.team-2")},
		{List: rules.GroupList("support.team-2"), UserID: "@a:example.org", Reason: "on call"},
	}
	var buf bytes.Buffer
	if err := Write(&buf, entries, 42, time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	got, err := Read(buf.Bytes())
	if err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	if !slices.Equal(got.Entries, entries) || !got.Groups {
		t.Errorf("read back %+v\nwant %+v\nfile:\n%s", got, entries, buf.String())
	}
	var again bytes.Buffer
	_ = Write(&again, got.Entries, 42, time.Unix(0, 0))
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
		{"a pattern on always-send", "always_send:\n  - user: \"@a*:x.org\"\n", "line 2: \"@a*:x.org\": patterns are for the blacklist and groups only"},
		{"a bad group name", "groups:\n  - name: team\n  - name: \"Bad name!\"\n", "line 3"},
		{"a group listed twice", "groups:\n  - name: team\n  - name: TEAM\n", "line 3: the group team is listed twice"},
		{"a bad member", "groups:\n  - name: team\n    members:\n      - user: \"@a:x.org\"\n      - user: nope\n", "line 5"},
		{"a member twice", "groups:\n  - name: team\n    members:\n      - user: \"@a:x.org\"\n      - user: \"@a:x.org\"\n", "line 5"},
		{"an unknown key in a group", "groups:\n  - name: team\n    member: []\n", "line 3"},
		{"a group without a name", "groups:\n  - members: []\n", "line 2"},
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
	if got, err := Read([]byte("# nothing\n")); err != nil || len(got.Entries) != 0 || got.Groups {
		t.Errorf("an empty file: %v, %v; want no entries, and nothing said of groups", got, err)
	}
	if got, err := Read([]byte("always_send: []\nblacklist: []\n")); err != nil || got.Groups {
		t.Errorf("a file from before groups: %v, %v; want nothing said of groups", got, err)
	}
	if got, err := Read([]byte("groups: []\n")); err != nil || !got.Groups {
		t.Errorf("a file with no groups: %v, %v; want it to say there are none", got, err)
	}
}

// FuzzRead: whatever file Read accepts, Write writes back as a file that
// Read reads as the same entries (a malformed file is refused, never
// half-read, and never panics).
func FuzzRead(f *testing.F) {
	for _, seed := range []string{
		"always_send:\n  - user: \"@a:x.org\"\n    reason: r\nblacklist:\n  - user: \"@b*:x.org\"\ngroups:\n  - name: team\n    reason: t\n    members:\n      - user: \"@*:x.org\"\n",
		"groups: []\n", "groups:\n  - name: a\n  - name: b\n    members: []\n", "blacklist:\n  - user: \"@*:*\"\n", "# nothing\n", "groups: {}\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data string) {
		lists, err := Read([]byte(data))
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := Write(&buf, lists.Entries, 1, time.Unix(0, 0)); err != nil {
			t.Fatalf("Write of what Read accepted: %v", err)
		}
		again, err := Read(buf.Bytes())
		if err != nil {
			t.Fatalf("Read of what Write wrote: %v\n%s", err, buf.String())
		}
		// Write lists the groups by first appearance, members in order.
		if !slices.Equal(sortedEntries(again.Entries), sortedEntries(lists.Entries)) || !again.Groups {
			t.Fatalf("read back %+v, want %+v\n%s", again.Entries, lists.Entries, buf.String())
		}
	})
}

func sortedEntries(entries []rules.ListEntry) []rules.ListEntry {
	out := slices.Clone(entries)
	slices.SortFunc(out, func(a, b rules.ListEntry) int {
		return strings.Compare(string(a.List)+"\x00"+string(a.UserID), string(b.List)+"\x00"+string(b.UserID))
	})
	return out
}
