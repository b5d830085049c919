package router

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/rules"
	"github.com/presence-router/presence-router/store"
)

// gains lists the users who receive the presence of some user after a
// change and did not before, by the engine's rule (Explain), over the users
// of the test.
func gains(before, after map[id.UserID][]id.UserID) []id.UserID {
	var out []id.UserID
	seen := map[id.UserID]bool{}
	for source, recipients := range after {
		for _, u := range recipients {
			if !slices.Contains(before[source], u) && !seen[u] {
				seen[u] = true
				out = append(out, u)
			}
		}
	}
	slices.Sort(out)
	return out
}

func recipientsOf(e *Engine, universe []id.UserID) map[id.UserID][]id.UserID {
	out := make(map[id.UserID][]id.UserID, len(universe))
	for _, u := range universe {
		out[u] = e.Explain(u).Recipients
	}
	return out
}

// TestRule_StoreAndEngineAgreeOnWhoGainsPresence applies random changes to
// the store, which decides in SQL who gains presence (push_to), and checks
// it against the engine's rule: exactly the users who now receive some
// user's presence that they did not receive before.
func TestRule_StoreAndEngineAgreeOnWhoGainsPresence(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "agree.db"), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// A user on no list keeps every always-send user's "gain" visible.
	universe := []id.UserID{"@a:x", "@b:x", "@c:x", "@d:remote.org", "@e:x", "@never-listed:x"}
	engine := NewEngine("", 0, nil, nil, nil)
	rng := rand.New(rand.NewPCG(1, 2))
	for step := range 400 {
		var m rules.Mutation
		m.Sender = "@admin:x"
		for range 1 + rng.IntN(3) {
			list := rules.AlwaysSend
			if rng.IntN(2) == 0 {
				list = rules.Blacklist
			}
			action := rules.Add
			if rng.IntN(2) == 0 {
				action = rules.Remove
			}
			user := universe[rng.IntN(len(universe)-1)]
			if !slices.ContainsFunc(m.Entries, func(e rules.Entry) bool { return e.List == list && e.UserID == user }) {
				m.Entries = append(m.Entries, rules.Entry{List: list, UserID: user, Action: action})
			}
		}
		before := recipientsOf(engine, universe)
		var res rules.Result
		err := st.InTxn(ctx, func(ctx context.Context) error {
			var err error
			res, err = st.Apply(ctx, m)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.Change == nil {
			continue
		}
		engine.Apply(res.Change.Update())
		want := gains(before, recipientsOf(engine, universe))
		got := slices.Clone(res.Change.PushTo)
		if res.Change.PushToAll {
			_, got, _ = engine.Rules()
		}
		slices.Sort(got)
		if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Fatalf("step %d %+v: the store pushes to %v; by the rule, %v gained presence", step, m.Entries, got, want)
		}
	}
}

// routedTo is who receives source's presence by the routing API's answer
// (usersForStatesJSON, the evaluator Synapse is answered with), besides
// source itself.
func routedTo(t *testing.T, e *Engine, source id.UserID) []id.UserID {
	var routes [2]RouteJSON
	_, n, groupRoutes := e.usersForStatesJSON([]State{{UserID: source}}, &routes)
	set := map[id.UserID]bool{}
	for _, r := range append(routes[:n:n], groupRoutes...) {
		if len(r.Indices) == 0 {
			continue
		}
		var users []id.UserID
		if err := json.Unmarshal(r.Users, &users); err != nil {
			t.Fatal(err)
		}
		for _, u := range users {
			set[u] = u != source
		}
	}
	var out []id.UserID
	for u, other := range set {
		if other {
			out = append(out, u)
		}
	}
	slices.Sort(out)
	return out
}

// TestRule_StoreAndEngineAgreeWithGroups applies random changes of every
// list (groups created, deleted, members and patterns added and removed,
// users learned) and checks the store's push_to against the routing
// answers: everyone who now receives someone's presence that they did not
// is pushed to; while there is no group, exactly they are. (A change that only learns users pushes to nobody: the
// members see a newcomer from the newcomer's next presence change.)
func TestRule_StoreAndEngineAgreeWithGroups(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "agree.db"), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	universe := []id.UserID{"@a:x", "@b:x", "@c:x", "@d:remote.org", "@e:x", "@f:x", "@never-listed:x"}
	members := append(slices.Clone(universe[:len(universe)-1]), "@*:x", "@?:x")
	groups := []rules.GroupName{"one", "two"}
	engine := NewEngine("x", 0, nil, nil, nil)
	rng := rand.New(rand.NewPCG(3, 4))
	pushed := 0
	for step := range 600 {
		m := rules.Mutation{Sender: "@admin:x"}
		switch k := rng.IntN(10); {
		case k == 0:
			m.Entries = []rules.Entry{rules.GroupEntry(groups[rng.IntN(2)], []rules.Action{rules.Add, rules.Remove}[rng.IntN(2)])}
		case k == 1:
			m.Command = rules.LearnedCommand
			m.Entries = []rules.Entry{{List: rules.Known, UserID: universe[rng.IntN(len(universe)-1)], Action: rules.Add}}
		default:
			for range 1 + rng.IntN(3) {
				list := []rules.List{rules.AlwaysSend, rules.Blacklist, rules.GroupList(groups[0]), rules.GroupList(groups[1])}[rng.IntN(4)]
				user := universe[rng.IntN(len(universe)-1)]
				if _, group := list.Group(); group {
					user = members[rng.IntN(len(members))]
				}
				action := []rules.Action{rules.Add, rules.Remove}[rng.IntN(2)]
				if !slices.ContainsFunc(m.Entries, func(e rules.Entry) bool { return e.List == list && e.UserID == user }) {
					m.Entries = append(m.Entries, rules.Entry{List: list, UserID: user, Action: action})
				}
			}
		}
		before := map[id.UserID][]id.UserID{}
		for _, u := range universe {
			before[u] = routedTo(t, engine, u)
		}
		// With a group, a user added to always-send may have received
		// everyone's presence already: they are pushed to all the same.
		hadGroups := len(engine.Groups()) > 0
		var res rules.Result
		err := st.InTxn(ctx, func(ctx context.Context) error {
			var err error
			res, err = st.Apply(ctx, m)
			return err
		})
		if errors.Is(err, rules.ErrNoSuchGroup) {
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		if res.Change == nil {
			continue
		}
		engine.Apply(res.Change.Update())
		after := map[id.UserID][]id.UserID{}
		for _, u := range universe {
			after[u] = routedTo(t, engine, u)
		}
		want := gains(before, after)
		got := slices.Clone(res.Change.PushTo)
		if res.Change.PushToAll {
			_, got, _ = engine.Rules()
		}
		slices.Sort(got)
		pushed += len(got)
		grouped := slices.ContainsFunc(m.Entries, func(e rules.Entry) bool {
			_, group := e.List.Group()
			return group || e.List == rules.Blacklist && e.Action == rules.Remove
		}) || hadGroups
		switch {
		case m.Command == rules.LearnedCommand:
			if len(got) > 0 {
				t.Fatalf("step %d: learning %v pushes to %v", step, m.Entries, got)
			}
		case grouped:
			for _, u := range want {
				if !slices.Contains(got, u) {
					t.Fatalf("step %d %+v: %s gained presence (%v) but the store pushes to %v only", step, m.Entries, u, want, got)
				}
			}
		case !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0):
			t.Fatalf("step %d %+v: the store pushes to %v; by the rule, %v gained presence", step, m.Entries, got, want)
		}
	}
	if pushed == 0 {
		t.Fatal("no change pushed to anyone: the test checked nothing")
	}
	// The engine loaded from the store routes as the one that applied
	// every change.
	snap, err := st.LoadRules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	loaded := LoadEngine("x", snap, nil)
	for _, u := range universe {
		if got, want := routedTo(t, loaded, u), routedTo(t, engine, u); !slices.Equal(got, want) {
			t.Fatalf("%s: loaded from the store routes to %v, the applied engine to %v", u, got, want)
		}
	}
}
