package bot

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/rules"
)

// TestScale_ListAndHistory answers `blacklist list` and `history` with
// 1,000,000 blacklist entries and 10,000 always-send users, through the
// bot's own path, and prints how long each took. It takes about 30 s, so
// it runs only with PR_SCALE=1 (make bench).
func TestScale_ListAndHistory(t *testing.T) {
	if os.Getenv("PR_SCALE") != "1" {
		t.Skip("the 1,000,000-entry scale run takes about 30 s; set PR_SCALE=1 (make bench does)")
	}
	tb := newTestBot(t, "", nil)
	ctx := context.Background()
	seed := func(list rules.List, prefix string, n int) {
		for start := 0; start < n; start += 100_000 {
			m := rules.Mutation{Sender: testAdmin, Command: "seed"}
			for i := start; i < min(start+100_000, n); i++ {
				m.Entries = append(m.Entries, rules.Entry{List: list, UserID: id.UserID(fmt.Sprintf("@%s%07d:example.org", prefix, i)), Action: rules.Add})
			}
			res, err := tb.store.Apply(ctx, m)
			if err != nil {
				t.Fatal(err)
			}
			tb.engine.Apply(res.Change.Update())
		}
	}
	seed(rules.Blacklist, "blocked", 1_000_000)
	seed(rules.AlwaysSend, "dash", 10_000)
	tests := []struct {
		name, command string
		want          []string
	}{
		{"blacklist list", "!presence blacklist list", []string{"1000000 users", "more, not shown"}},
		{"always-send list", "!presence always-send list", []string{"10000 users", "more, not shown"}},
		{"history", "!presence history 5", []string{"newest first", "and 9995 more to always-send"}},
		{"explain", "!presence explain @blocked0500000:example.org", []string{"blacklisted"}},
		{"status", "!presence status", []string{"1000000"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			tb.deliver(t, fmt.Sprintf("t%d", i), hsToken, message(fmt.Sprintf("$scale%d", i), testAdmin, tt.command))
			deadline := time.Now().Add(30 * time.Second)
			for len(tb.hs.events("m.room.message")) < i+1 {
				if time.Now().After(deadline) {
					t.Fatalf("no reply to %q within 30 s", tt.command)
				}
				time.Sleep(time.Millisecond)
			}
			took := time.Since(start)
			reply := tb.hs.events("m.room.message")[i]
			fmt.Printf("scale: %-16s answered in %8s (%d bytes)   target: answers, under the 64 KiB event limit\n", tt.name, took.Round(time.Millisecond), reply.Size)
			if reply.Size >= 65536 {
				t.Errorf("reply is %d bytes, over Matrix's event limit", reply.Size)
			}
			for _, want := range tt.want {
				if !strings.Contains(body(reply), want) {
					t.Errorf("reply lacks %q: %.300q", want, body(reply))
				}
			}
		})
	}
}
