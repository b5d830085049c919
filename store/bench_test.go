package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"
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
	seed := func(list List, prefix string, n int) {
		for start := 0; start < n; start += 100_000 {
			m := Mutation{Sender: "@bench:x", Command: "seed"}
			for i := start; i < min(start+100_000, n); i++ {
				m.Entries = append(m.Entries, Entry{List: list, UserID: id.UserID(fmt.Sprintf("@%s%07d:example.org", prefix, i)), Action: Add})
			}
			if _, err := st.Apply(ctx, m); err != nil {
				b.Fatal(err)
			}
		}
	}
	seed(Blacklist, "blocked", 1_000_000)
	seed(AlwaysSend, "dash", 10_000)
	for _, action := range []Action{Add, Remove} {
		b.Run("blacklist "+string(action), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				if action == Remove { // put the user in place first
					if _, err := st.Apply(ctx, Mutation{Sender: "@a:x", Entries: add(Blacklist, "@toggle:x")}); err != nil {
						b.Fatal(err)
					}
				} else if _, err := st.Apply(ctx, Mutation{Sender: "@a:x", Entries: remove(Blacklist, "@toggle:x")}); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				res, err := st.Apply(ctx, Mutation{Sender: "@a:x", Entries: []Entry{{List: Blacklist, UserID: "@toggle:x", Action: action}}})
				if err != nil || res.Change == nil {
					b.Fatalf("apply: %v %+v", err, res)
				}
			}
		})
	}
}
