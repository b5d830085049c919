package router

import (
	"encoding/json"
	"slices"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/rules"
)

func groupEngine(t *testing.T, blacklist []id.UserID, known []id.UserID, groups map[rules.GroupName][]id.UserID) *Engine {
	t.Helper()
	return LoadEngine("x", &rules.Snapshot{Version: 1, Blacklist: blacklist, Known: known, Groups: groups}, nil)
}

func interestedOf(t *testing.T, e *Engine, user id.UserID) []id.UserID {
	t.Helper()
	_, all, raw, _ := e.interestedJSON(user)
	if all {
		t.Fatalf("%s answered ALL", user)
	}
	if string(raw) == "null" {
		t.Fatalf("%s's answer encodes its users as null, which the adapter refuses", user)
	}
	var users []id.UserID
	if raw != nil {
		if err := json.Unmarshal(raw, &users); err != nil {
			t.Fatal(err)
		}
	}
	return slices.DeleteFunc(users, func(u id.UserID) bool { return u == user })
}

func TestGroups_RouteBetweenMembersAsTheRuleSays(t *testing.T) {
	tests := []struct {
		name      string
		blacklist []id.UserID
		known     []id.UserID
		groups    map[rules.GroupName][]id.UserID
		source    id.UserID
		routed    []id.UserID // who receives source's presence
		receives  []id.UserID // whose presence source receives
	}{
		{"members receive each other", nil, nil, map[rules.GroupName][]id.UserID{"team": {"@a:x", "@b:x", "@c:x"}},
			"@a:x", []id.UserID{"@b:x", "@c:x"}, []id.UserID{"@b:x", "@c:x"}},
		{"an outsider is routed nowhere", nil, nil, map[rules.GroupName][]id.UserID{"team": {"@a:x", "@b:x"}},
			"@z:x", nil, nil},
		{"the blacklist wins: a blacklisted member's presence goes to nobody, they still receive", []id.UserID{"@a:x"}, nil,
			map[rules.GroupName][]id.UserID{"team": {"@a:x", "@b:x", "@c:x"}}, "@a:x", nil, []id.UserID{"@b:x", "@c:x"}},
		{"others do not receive a blacklisted member", []id.UserID{"@a:x"}, nil,
			map[rules.GroupName][]id.UserID{"team": {"@a:x", "@b:x", "@c:x"}}, "@b:x", []id.UserID{"@a:x", "@c:x"}, []id.UserID{"@c:x"}},
		{"a blacklist pattern wins too", []id.UserID{"@bot*:x"}, []id.UserID{"@bot1:x", "@a:x"},
			map[rules.GroupName][]id.UserID{"all": {"@*:x"}}, "@a:x", []id.UserID{"@bot1:x"}, nil},
		{"a pattern reaches the known users it matches", nil, []id.UserID{"@a:x", "@b:x", "@c:x"},
			map[rules.GroupName][]id.UserID{"all": {"@*:x"}}, "@a:x", []id.UserID{"@b:x", "@c:x"}, []id.UserID{"@b:x", "@c:x"}},
		{"a user not known yet receives the known members on their first sync", nil, []id.UserID{"@a:x", "@b:x"},
			map[rules.GroupName][]id.UserID{"all": {"@*:x"}}, "@new:x", []id.UserID{"@a:x", "@b:x"}, []id.UserID{"@a:x", "@b:x"}},
		{"several groups: the union", nil, nil, map[rules.GroupName][]id.UserID{"one": {"@a:x", "@b:x"}, "two": {"@a:x", "@c:x"}},
			"@a:x", []id.UserID{"@b:x", "@c:x"}, []id.UserID{"@b:x", "@c:x"}},
		{"a remote member receives a local member's presence", nil, nil, map[rules.GroupName][]id.UserID{"fed": {"@a:x", "@r:remote.org"}},
			"@a:x", []id.UserID{"@r:remote.org"}, []id.UserID{"@r:remote.org"}},
		{"a remote member's presence goes to local members only", nil, nil, map[rules.GroupName][]id.UserID{"fed": {"@a:x", "@r:remote.org", "@s:other.org"}},
			"@r:remote.org", []id.UserID{"@a:x"}, nil},
		{"a group whose members are all blacklisted answers an empty list", []id.UserID{"@a:x"}, nil,
			map[rules.GroupName][]id.UserID{"solo": {"@a:x"}}, "@a:x", nil, nil},
		{"the first user a pattern matches, before anyone is known, gets an empty list", nil, nil,
			map[rules.GroupName][]id.UserID{"all": {"@*:x"}}, "@first:x", nil, nil},
		{"patterns match case-insensitively", nil, []id.UserID{"@Alice:x", "@b:x"}, map[rules.GroupName][]id.UserID{"a": {"@a*:x", "@b:x"}},
			"@b:x", []id.UserID{"@Alice:x"}, []id.UserID{"@Alice:x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := groupEngine(t, tt.blacklist, tt.known, tt.groups)
			if got := routedTo(t, e, tt.source); !slices.Equal(got, tt.routed) {
				t.Errorf("%s's presence goes to %v; want %v", tt.source, got, tt.routed)
			}
			if tt.source.Homeserver() != "x" {
				return // Synapse asks interested_users of local users only
			}
			if got := interestedOf(t, e, tt.source); !slices.Equal(got, tt.receives) {
				t.Errorf("%s receives %v; want %v", tt.source, got, tt.receives)
			}
		})
	}
}

func TestGroups_ChangesFollowEveryEntry(t *testing.T) {
	e := NewEngine("x", 0, nil, nil, nil)
	apply := func(entries ...rules.Entry) FeedAnswer {
		t.Helper()
		since := e.Version()
		e.Apply((&rules.Change{Version: since + 1, Entries: entries}).Update())
		return e.changesSince(since)
	}
	team := rules.GroupList("team")
	f := apply(rules.GroupEntry("team", rules.Add), rules.Entry{List: team, UserID: "@a:x", Action: rules.Add}, rules.Entry{List: team, UserID: "@b:x", Action: rules.Add})
	if !f.AllInterested || !f.AllSources {
		t.Fatalf("a group change does not drop the cached answers: %+v", f)
	}
	if got := interestedOf(t, e, "@a:x"); !slices.Equal(got, []id.UserID{"@b:x"}) {
		t.Fatalf("a receives %v", got)
	}
	apply(rules.Entry{List: team, UserID: "@b:x", Action: rules.Remove})
	if got := interestedOf(t, e, "@a:x"); len(got) != 0 {
		t.Fatalf("after b left, a receives %v", got)
	}
	apply(rules.Entry{List: team, UserID: "@*:x", Action: rules.Add})
	if !e.NeedsLearning("@c:x") || e.NeedsLearning("@c:remote.org") {
		t.Fatal("a local user a pattern matches needs learning; a remote one never")
	}
	if f := apply(rules.Entry{List: rules.Known, UserID: "@c:x", Action: rules.Add}); !f.AllInterested {
		t.Fatalf("learning a member does not drop the members' answers: %+v", f)
	}
	if e.NeedsLearning("@c:x") || !slices.Equal(interestedOf(t, e, "@a:x"), []id.UserID{"@c:x"}) {
		t.Fatal("a learned user is not a member")
	}
	if f := apply(rules.Entry{List: rules.Blacklist, UserID: "@c:x", Action: rules.Add}); !f.AllInterested {
		t.Fatal("a blacklist change while groups exist does not drop the members' answers")
	}
	if got := interestedOf(t, e, "@a:x"); len(got) != 0 {
		t.Fatalf("a receives blacklisted c: %v", got)
	}
	apply(rules.GroupEntry("team", rules.Remove), rules.Entry{List: team, UserID: "@a:x", Action: rules.Remove}, rules.Entry{List: team, UserID: "@*:x", Action: rules.Remove})
	if len(e.Groups()) != 0 || len(routedTo(t, e, "@a:x")) != 0 {
		t.Fatal("a deleted group still routes")
	}
}
