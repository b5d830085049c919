package router

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/rules"
)

func states(users ...id.UserID) []State {
	out := make([]State, len(users))
	for i, u := range users {
		out[i] = State{UserID: u, State: "online"}
	}
	return out
}

// route is one route of a users_for_states answer.
type route struct {
	Users  []id.UserID `json:"users"`
	States []int       `json:"states"`
}

// usersForStates asks the routing API, the production path, for a batch.
func usersForStates(t *testing.T, e *Engine, batch []State) (int64, []route) {
	t.Helper()
	if batch == nil {
		batch = []State{}
	}
	body, _ := json.Marshal(map[string]any{"states": batch})
	h := NewHandler(e, HandlerOptions{Token: testToken})
	rec, _ := do(h, "POST", Prefix+"users_for_states", testToken, string(body))
	var answer struct {
		Version int64   `json:"version"`
		Routes  []route `json:"routes"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &answer); rec.Code != 200 || err != nil {
		t.Fatalf("users_for_states = %d %s (%v)", rec.Code, rec.Body, err)
	}
	return answer.Version, answer.Routes
}

// TestRule_UsersForStates is the rule's table, evaluated through the
// routing API as the adapter asks it.
func TestRule_UsersForStates(t *testing.T) {
	tests := []struct {
		name       string
		server     string // "" treats every user as local
		alwaysSend []id.UserID
		blacklist  []id.UserID
		states     []State
		want       []route
	}{
		{"empty input still lists every always-send user", "", []id.UserID{"@dash:x"}, nil, nil,
			[]route{{Users: []id.UserID{"@dash:x"}, States: []int{}}}},
		{"no always-send users routes nothing", "", nil, nil, states("@alice:x"), []route{}},
		{"every non-blacklisted state goes to every always-send user", "", []id.UserID{"@mon:x", "@dash:x"}, []id.UserID{"@alice:x"},
			states("@alice:x", "@bob:x", "@carol:x"),
			[]route{{Users: []id.UserID{"@dash:x", "@mon:x"}, States: []int{1, 2}}}},
		{"the same user twice in one batch keeps both states", "", []id.UserID{"@dash:x"}, nil, states("@bob:x", "@bob:x"),
			[]route{{Users: []id.UserID{"@dash:x"}, States: []int{0, 1}}}},
		{"a blacklisted always-send user still receives, but is not routed", "", []id.UserID{"@dash:x"}, []id.UserID{"@dash:x"},
			states("@dash:x", "@bob:x"),
			[]route{{Users: []id.UserID{"@dash:x"}, States: []int{1}}}},
		{"remote users are routed and receive", "", []id.UserID{"@dash:remote.org"}, []id.UserID{"@eve:other.org:8448"},
			states("@bob:remote.org", "@eve:other.org:8448"),
			[]route{{Users: []id.UserID{"@dash:remote.org"}, States: []int{0}}}},
		{"an always-send user who receives nothing has no states", "", []id.UserID{"@dash:x"}, []id.UserID{"@alice:x"},
			states("@alice:x"),
			[]route{{Users: []id.UserID{"@dash:x"}, States: []int{}}}},
		{"a remote always-send user receives local users' presence only", "hs1", []id.UserID{"@dash:hs1", "@carol:hs2"}, nil,
			states("@alice:hs1", "@rob:hs2", "@bob:hs1"),
			[]route{{Users: []id.UserID{"@carol:hs2"}, States: []int{0, 2}}, {Users: []id.UserID{"@dash:hs1"}, States: []int{0, 1, 2}}}},
		{"only remote always-send users and a remote state", "hs1", []id.UserID{"@carol:hs2"}, nil,
			states("@rob:hs2", "@alice:hs1"),
			[]route{{Users: []id.UserID{"@carol:hs2"}, States: []int{1}}}},
		{"a remote user's state goes to local always-send users in one route", "hs1", []id.UserID{"@dash:hs1"}, nil,
			states("@rob:hs2"),
			[]route{{Users: []id.UserID{"@dash:hs1"}, States: []int{0}}}},
		{"remote always-send users and local states only is one route", "hs1", []id.UserID{"@dash:hs1", "@carol:hs2"}, nil,
			states("@alice:hs1"),
			[]route{{Users: []id.UserID{"@carol:hs2", "@dash:hs1"}, States: []int{0}}}},
		{"a server name with a port is another server", "hs1:8448", []id.UserID{"@carol:hs1", "@dash:hs1:8448"}, nil,
			states("@rob:hs1", "@ann:[::1]:8448"),
			[]route{{Users: []id.UserID{"@carol:hs1"}, States: []int{}}, {Users: []id.UserID{"@dash:hs1:8448"}, States: []int{0, 1}}}},
		{"a blacklisted local user reaches nobody, remote or local", "hs1", []id.UserID{"@dash:hs1", "@carol:hs2"}, []id.UserID{"@alice:hs1"},
			states("@alice:hs1", "@rob:hs2"),
			[]route{{Users: []id.UserID{"@carol:hs2"}, States: []int{}}, {Users: []id.UserID{"@dash:hs1"}, States: []int{1}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEngine(tt.server, 7, tt.alwaysSend, tt.blacklist, nil)
			version, routes := usersForStates(t, e, tt.states)
			if version != 7 {
				t.Errorf("version = %d, want 7", version)
			}
			if !slices.EqualFunc(routes, tt.want, func(a, b route) bool {
				return slices.Equal(a.Users, b.Users) && slices.Equal(a.States, b.States)
			}) {
				t.Errorf("routes = %+v, want %+v", routes, tt.want)
			}
			// Every user interested_users answers "all" for is in the answer.
			for _, u := range tt.alwaysSend {
				if _, all := e.InterestedUsers(u); !all {
					t.Errorf("%s is always-send but not interested in all", u)
				}
				if !slices.ContainsFunc(routes, func(r route) bool { return slices.Contains(r.Users, u) }) {
					t.Errorf("all-user %s missing from the answer", u)
				}
			}
		})
	}
}

func TestEngine_ApplyAndExplain(t *testing.T) {
	e := NewEngine("", 0, nil, nil, nil)
	e.Apply(rules.Update{Version: 1, AddAlwaysSend: []id.UserID{"@dash:x"}, PushTo: []id.UserID{"@dash:x"}})
	e.Apply(rules.Update{Version: 2, AddBlacklist: []id.UserID{"@alice:x"}})
	e.Apply(rules.Update{Version: 2, AddBlacklist: []id.UserID{"@stale:x"}}) // not above: ignored
	if _, _, bl := e.Rules(); !slices.Equal(bl, []id.UserID{"@alice:x"}) {
		t.Fatalf("blacklist = %v; a stale update was applied", bl)
	}
	tests := []struct {
		user id.UserID
		want Explanation
	}{
		{"@alice:x", Explanation{Version: 2, Blacklisted: true}},
		{"@bob:x", Explanation{Version: 2, Recipients: []id.UserID{"@dash:x"}}},
		{"@dash:x", Explanation{Version: 2, AlwaysSend: true, Recipients: []id.UserID{"@dash:x"}}},
	}
	for _, tt := range tests {
		got := e.Explain(tt.user)
		if got.Version != tt.want.Version || got.AlwaysSend != tt.want.AlwaysSend || got.Blacklisted != tt.want.Blacklisted || !slices.Equal(got.Recipients, tt.want.Recipients) {
			t.Errorf("Explain(%s) = %+v, want %+v", tt.user, got, tt.want)
		}
	}
	e.Apply(rules.Update{Version: 3, RemoveAlwaysSend: []id.UserID{"@dash:x"}, RemoveBlacklist: []id.UserID{"@alice:x"}})
	if a, b, c := e.Counts(); a != 0 || b != 0 || c != 0 {
		t.Errorf("counts = %d, %d after removals", a, b)
	}
}

func ptr(v int64) *int64 { return &v }

func TestEngine_Changes(t *testing.T) {
	history := []rules.Update{{Version: 3, PushTo: []id.UserID{"@a:x"}}, {Version: 4, PushTo: []id.UserID{"@b:x", "@a:x"}}}
	tests := []struct {
		name      string
		since     *int64
		wantPush  []id.UserID
		wantReset bool
	}{
		{"no since resets", nil, []id.UserID{}, true},
		{"since above the version resets", ptr(9), []id.UserID{}, true},
		{"since older than the history resets", ptr(1), []id.UserID{}, true},
		{"since just before the history replays all of it", ptr(2), []id.UserID{"@a:x", "@b:x"}, false},
		{"since inside the history replays the rest", ptr(3), []id.UserID{"@a:x", "@b:x"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEngine("", 4, nil, nil, history)
			a := e.Changes(context.Background(), tt.since, time.Second)
			v, push, reset := a.Version, a.PushTo, a.Reset
			if v != 4 || reset != tt.wantReset || !slices.Equal(push, tt.wantPush) {
				t.Errorf("= %d, %v, %v; want 4, %v, %v", v, push, reset, tt.wantPush, tt.wantReset)
			}
		})
	}
	t.Run("waits, then times out with no change", func(t *testing.T) {
		e := NewEngine("", 4, nil, nil, history)
		start := time.Now()
		a := e.Changes(context.Background(), ptr(4), 100*time.Millisecond)
		v, push, reset := a.Version, a.PushTo, a.Reset
		if v != 4 || len(push) != 0 || reset || time.Since(start) < 100*time.Millisecond {
			t.Errorf("= %d, %v, %v after %s", v, push, reset, time.Since(start))
		}
	})
	t.Run("wakes on Apply", func(t *testing.T) {
		e := NewEngine("", 4, nil, nil, history)
		go func() {
			time.Sleep(50 * time.Millisecond)
			e.Apply(rules.Update{Version: 5, AddAlwaysSend: []id.UserID{"@c:x"}, PushTo: []id.UserID{"@c:x"}})
		}()
		a := e.Changes(context.Background(), ptr(4), 10*time.Second)
		v, push := a.Version, a.PushTo
		if v != 5 || !slices.Equal(push, []id.UserID{"@c:x"}) {
			t.Errorf("= %d, %v", v, push)
		}
	})
}

func TestEngine_ChangesSayWhatChanged(t *testing.T) {
	e := NewEngine("", 0, nil, nil, nil)
	e.Apply(rules.Update{Version: 1, AddAlwaysSend: []id.UserID{"@dash:x", "@mon:x"}})
	e.Apply(rules.Update{Version: 2, AddBlacklist: []id.UserID{"@ceo:x"}})
	e.Apply(rules.Update{Version: 3, RemoveAlwaysSend: []id.UserID{"@mon:x"}, RemoveBlacklist: []id.UserID{"@old:x"}})
	e.Apply(rules.Update{Version: 4, AddAlwaysSend: []id.UserID{"@desk:x"}})
	tests := []struct {
		name               string
		since              int64
		sources            []id.UserID
		added, removed     []id.UserID
		allSources, isNone bool
	}{
		{"a blacklist change names its user", 1, []id.UserID{"@ceo:x", "@old:x"}, []id.UserID{"@desk:x"}, []id.UserID{"@mon:x"}, false, false},
		{"the net destination change wins", 0, []id.UserID{"@ceo:x", "@old:x"}, []id.UserID{"@dash:x", "@desk:x"}, []id.UserID{"@mon:x"}, false, false},
		{"only destinations", 3, []id.UserID{}, []id.UserID{"@desk:x"}, nil, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.Changes(context.Background(), ptr(tt.since), time.Second)
			if a.Reset || a.AllSources != tt.allSources || !slices.Equal(a.Sources, tt.sources) ||
				!slices.Equal(a.DestinationsAdded, tt.added) || !slices.Equal(a.DestinationsRemoved, tt.removed) && len(tt.removed)+len(a.DestinationsRemoved) > 0 {
				t.Errorf("answer = %+v; want sources %v, added %v, removed %v", a, tt.sources, tt.added, tt.removed)
			}
		})
	}
	t.Run("a change too large to list says every source changed", func(t *testing.T) {
		many := make([]id.UserID, MaxFeedSources+1)
		for i := range many {
			many[i] = id.UserID(fmt.Sprintf("@u%d:x", i))
		}
		e.Apply(rules.Update{Version: 5, AddBlacklist: many})
		if a := e.Changes(context.Background(), ptr(4), time.Second); !a.AllSources || len(a.Sources) != 0 {
			t.Errorf("answer has all_sources %v and %d sources; want all_sources", a.AllSources, len(a.Sources))
		}
	})
	t.Run("a change read back without its entries says every source changed", func(t *testing.T) {
		e := NewEngine("", 2, nil, nil, []rules.Update{{Version: 2, EntriesOmitted: true}})
		if a := e.Changes(context.Background(), ptr(1), time.Second); !a.AllSources {
			t.Errorf("answer = %+v; want all_sources", a)
		}
	})
}

func TestEngine_PushToAllAlwaysSendServesTheListAfterTheChange(t *testing.T) {
	e := NewEngine("", 1, []id.UserID{"@dash:x", "@mon:x"}, []id.UserID{"@alice:x"}, nil)
	// A user leaves the blacklist and a new always-send user arrives in the
	// same change: everyone on always-send afterwards gains presence.
	e.Apply(rules.Update{Version: 2, RemoveBlacklist: []id.UserID{"@alice:x"}, AddAlwaysSend: []id.UserID{"@new:x"}, PushToAllAlwaysSend: true, PushTo: []id.UserID{"@ignored:x"}})
	e.Apply(rules.Update{Version: 3, RemoveAlwaysSend: []id.UserID{"@mon:x"}})
	a := e.Changes(context.Background(), ptr(1), time.Second)
	push, reset := a.PushTo, a.Reset
	if reset || !slices.Equal(push, []id.UserID{"@dash:x", "@mon:x", "@new:x"}) {
		t.Errorf("push_to since 1 = %v (reset %v), want the always-send list after version 2", push, reset)
	}
}

// TestEngine_RemoteUsers covers what the federation limit changes besides
// users_for_states: explain, and the change feed (a remote always-send
// user changes the answers of remote sources, which nobody can list).
func TestEngine_RemoteUsers(t *testing.T) {
	e := NewEngine("hs1", 1, []id.UserID{"@dash:hs1", "@carol:hs2"}, nil, nil)
	if ex := e.Explain("@rob:hs2"); !ex.Remote || !slices.Equal(ex.Recipients, []id.UserID{"@dash:hs1"}) {
		t.Errorf("explain remote rob = %+v, want recipients [@dash:hs1] only", ex)
	}
	if ex := e.Explain("@alice:hs1"); ex.Remote || !slices.Equal(ex.Recipients, []id.UserID{"@carol:hs2", "@dash:hs1"}) {
		t.Errorf("explain local alice = %+v, want both recipients", ex)
	}
	if ex := e.Explain("@carol:hs2"); !ex.Remote || !ex.AlwaysSend {
		t.Errorf("explain carol = %+v", ex)
	}
	for _, tt := range []struct {
		name       string
		update     rules.Update
		allSources bool
	}{
		{"a local always-send user patches the answers", rules.Update{Version: 2, AddAlwaysSend: []id.UserID{"@mon:hs1"}}, false},
		{"a remote always-send user added drops them", rules.Update{Version: 3, AddAlwaysSend: []id.UserID{"@zed:hs3"}}, true},
		{"a remote always-send user removed drops them", rules.Update{Version: 4, RemoveAlwaysSend: []id.UserID{"@zed:hs3"}}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			since := tt.update.Version - 1
			e.Apply(tt.update)
			answer := e.Changes(context.Background(), &since, 0)
			if answer.AllSources != tt.allSources {
				t.Errorf("all_sources = %v, want %v (%+v)", answer.AllSources, tt.allSources, answer)
			}
		})
	}
}
