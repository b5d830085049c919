package router

import (
	"encoding/json"
	"fmt"
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

// TestGroups_ABatchRoutesEachStateAsItsUserAlone sends users_for_states
// batches through the handler and checks that each state of the answer
// reaches exactly whom the same user's state alone reaches: the answer's
// routes (the always-send users', each group's) and their state indices
// are written right, also when two routes hold as many states.
func TestGroups_ABatchRoutesEachStateAsItsUserAlone(t *testing.T) {
	tests := []struct {
		name   string
		groups map[rules.GroupName][]id.UserID
		states []id.UserID
	}{
		{"every state in one group", map[rules.GroupName][]id.UserID{"team": {"@a:x", "@b:x", "@c:x"}}, []id.UserID{"@a:x", "@b:x", "@c:x"}},
		{"two groups, as many states each", map[rules.GroupName][]id.UserID{"one": {"@a:x", "@b:x"}, "two": {"@c:x", "@d:x"}},
			[]id.UserID{"@a:x", "@c:x", "@b:x", "@d:x"}},
		{"two groups of the same states", map[rules.GroupName][]id.UserID{"one": {"@a:x", "@b:x"}, "two": {"@a:x", "@b:x", "@c:x"}},
			[]id.UserID{"@a:x", "@b:x"}},
		{"a blacklisted member and an outsider between members", map[rules.GroupName][]id.UserID{"team": {"@a:x", "@m:x", "@b:x"}},
			[]id.UserID{"@a:x", "@m:x", "@z:x", "@b:x"}},
		{"a remote member", map[rules.GroupName][]id.UserID{"fed": {"@a:x", "@r:remote.org", "@b:x"}}, []id.UserID{"@r:remote.org", "@a:x", "@b:x"}},
		{"a batch of over 128 states, a blacklisted member among them", map[rules.GroupName][]id.UserID{"even": append(evenUsers(200), "@m:x")},
			append(numberedUsers(150), append([]id.UserID{"@m:x"}, numberedUsers(200)[150:]...)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := LoadEngine("x", &rules.Snapshot{Version: 1, AlwaysSend: []id.UserID{"@dash:x"}, Blacklist: []id.UserID{"@m:x"}, Groups: tt.groups}, nil)
			h := NewHandler(e, HandlerOptions{Token: testToken})
			body, _ := json.Marshal(map[string]any{"states": func() (s []map[string]id.UserID) {
				for _, u := range tt.states {
					s = append(s, map[string]id.UserID{"user_id": u})
				}
				return s
			}()})
			rec, _ := do(h, "POST", Prefix+"users_for_states", testToken, string(body))
			var answer struct {
				Routes []struct {
					Users  []id.UserID `json:"users"`
					States []int       `json:"states"`
				} `json:"routes"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &answer); rec.Code != 200 || err != nil {
				t.Fatalf("%d %s (%v)", rec.Code, rec.Body, err)
			}
			got := make([]map[id.UserID]bool, len(tt.states))
			for i := range got {
				got[i] = map[id.UserID]bool{}
			}
			for _, r := range answer.Routes {
				for _, i := range r.States {
					for _, u := range r.Users {
						got[i][u] = u != tt.states[i]
					}
				}
			}
			for i, u := range tt.states {
				var reach []id.UserID
				for r, other := range got[i] {
					if other {
						reach = append(reach, r)
					}
				}
				slices.Sort(reach)
				if want := routedTo(t, e, u); !slices.Equal(reach, want) {
					t.Errorf("state %d (%s) in the batch reaches %v; alone, %v (answer %s)", i, u, reach, want, rec.Body)
				}
			}
		})
	}
}

// numberedUsers returns @u0:x … @u<n-1>:x.
func numberedUsers(n int) []id.UserID {
	out := make([]id.UserID, n)
	for i := range out {
		out[i] = id.UserID(fmt.Sprintf("@u%d:x", i))
	}
	return out
}

// evenUsers returns the even ones of numberedUsers(n).
func evenUsers(n int) []id.UserID {
	var out []id.UserID
	for i, u := range numberedUsers(n) {
		if i%2 == 0 {
			out = append(out, u)
		}
	}
	return out
}
