package router

import (
	"context"
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
