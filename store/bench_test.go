package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/rules"
)

// BenchmarkStore_ApplyOneChange commits one-user changes to a database with
// 1,000,000 blacklist entries and 10,000 always-send users. Adding to the
// blacklist pushes to nobody; removing from it pushes to every always-send
// user, so that change carries 10,000 IDs.
func BenchmarkStore_ApplyOneChange(b *testing.B) {
	st, err := Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"), zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	seed := func(list rules.List, prefix string, n int) {
		for start := 0; start < n; start += 100_000 {
			m := rules.Mutation{Sender: "@bench:x", Command: "seed"}
			for i := start; i < min(start+100_000, n); i++ {
				m.Entries = append(m.Entries, rules.Entry{List: list, UserID: id.UserID(fmt.Sprintf("@%s%07d:example.org", prefix, i)), Action: rules.Add})
			}
			if _, err := st.Apply(ctx, m); err != nil {
				b.Fatal(err)
			}
		}
	}
	seed(rules.Blacklist, "blocked", 1_000_000)
	seed(rules.AlwaysSend, "dash", 10_000)
	for _, action := range []rules.Action{rules.Add, rules.Remove} {
		b.Run("blacklist "+string(action), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				if action == rules.Remove { // put the user in place first
					if _, err := st.Apply(ctx, rules.Mutation{Sender: "@a:x", Entries: add(rules.Blacklist, "@toggle:x")}); err != nil {
						b.Fatal(err)
					}
				} else if _, err := st.Apply(ctx, rules.Mutation{Sender: "@a:x", Entries: remove(rules.Blacklist, "@toggle:x")}); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				res, err := st.Apply(ctx, rules.Mutation{Sender: "@a:x", Entries: []rules.Entry{{List: rules.Blacklist, UserID: "@toggle:x", Action: action}}})
				if err != nil || res.Change == nil {
					b.Fatalf("apply: %v %+v", err, res)
				}
			}
		})
	}
}
