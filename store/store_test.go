package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/e2e/harness"
	"github.com/presence-router/presence-router/rules"
)

// openTemp opens a new test database (SQLite, or PostgreSQL: main_test.go)
// and returns it with its location, for reopen.
func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	location := newLocation(t)
	st := reopen(t, location)
	t.Cleanup(func() { _ = st.Close() })
	return st, location
}

func add(list rules.List, users ...id.UserID) []rules.Entry {
	entries := make([]rules.Entry, len(users))
	for i, u := range users {
		entries[i] = rules.Entry{List: list, UserID: u, Action: rules.Add}
	}
	return entries
}

func remove(list rules.List, users ...id.UserID) []rules.Entry {
	entries := add(list, users...)
	for i := range entries {
		entries[i].Action = rules.Remove
	}
	return entries
}

func TestStore_ApplyVersionsAndPushTo(t *testing.T) {
	st, _ := openTemp(t)
	ctx := context.Background()
	tests := []struct {
		name        string
		entries     []rules.Entry
		wantVersion int64 // 0: no change expected
		wantPush    []id.UserID
		wantSkipped int
	}{
		{"adding always-send pushes to the new users", add(rules.AlwaysSend, "@dash:x", "@mon:y"), 1, []id.UserID{"@dash:x", "@mon:y"}, 0},
		{"adding to the blacklist pushes to nobody", add(rules.Blacklist, "@alice:x"), 2, []id.UserID{}, 0},
		{"adding a present user changes nothing", add(rules.AlwaysSend, "@dash:x"), 0, nil, 1},
		{"leaving the blacklist pushes to every always-send user", remove(rules.Blacklist, "@alice:x"), 3, []id.UserID{"@dash:x", "@mon:y"}, 0},
		{"removing an absent user changes nothing", remove(rules.Blacklist, "@alice:x"), 0, nil, 1},
		{"mixed entries apply only what changes", append(add(rules.AlwaysSend, "@dash:x"), add(rules.AlwaysSend, "@new:x")...), 4, []id.UserID{"@new:x"}, 1},
		{"removing always-send pushes to nobody", remove(rules.AlwaysSend, "@new:x"), 5, []id.UserID{}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := st.Apply(ctx, rules.Mutation{Sender: "@admin:x", EventID: id.EventID("$" + tt.name), Command: "test", Entries: tt.entries})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Unchanged) != tt.wantSkipped {
				t.Errorf("unchanged = %v, want %d", res.Unchanged, tt.wantSkipped)
			}
			if tt.wantVersion == 0 {
				if res.Change != nil {
					t.Fatalf("expected no change, got version %d", res.Change.Version)
				}
				return
			}
			if res.Change == nil || res.Change.Version != tt.wantVersion {
				t.Fatalf("change = %+v, want version %d", res.Change, tt.wantVersion)
			}
			if res.Change.PushCount != len(tt.wantPush) {
				t.Errorf("push count = %d, want %d", res.Change.PushCount, len(tt.wantPush))
			}
			if !res.Change.PushToAll && !slices.Equal(res.Change.PushTo, tt.wantPush) {
				t.Errorf("returned push_to = %v, want %v", res.Change.PushTo, tt.wantPush)
			}
			// What the feed serves, after a restart too, is what was stored.
			stored, err := st.RecentChanges(ctx, 1, 100)
			if err != nil || len(stored) != 1 || stored[0].Version != tt.wantVersion {
				t.Fatalf("stored change: %+v, %v", stored, err)
			}
			if !slices.Equal(stored[0].Entries, res.Change.Entries) || stored[0].EntriesOmitted {
				t.Errorf("stored entries = %+v (omitted %v), want %+v", stored[0].Entries, stored[0].EntriesOmitted, res.Change.Entries)
			}
			if !slices.Equal(stored[0].PushTo, tt.wantPush) {
				t.Errorf("stored push_to = %v, want %v", stored[0].PushTo, tt.wantPush)
			}
		})
	}
	rules, err := st.LoadRules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rules.Version != 5 || !slices.Equal(rules.AlwaysSend, []id.UserID{"@dash:x", "@mon:y"}) || len(rules.Blacklist) != 0 {
		t.Errorf("rules = %+v", rules)
	}
}

func TestStore_VersionSurvivesReopen(t *testing.T) {
	st, path := openTemp(t)
	ctx := context.Background()
	if _, err := st.Apply(ctx, rules.Mutation{Sender: "@a:x", Entries: add(rules.AlwaysSend, "@d:x")}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Apply(ctx, rules.Mutation{Sender: "@a:x", Entries: remove(rules.AlwaysSend, "@d:x")}); err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	st2 := reopen(t, path)
	defer st2.Close()
	v, err := st2.Version(ctx)
	if err != nil || v != 2 {
		t.Fatalf("version after reopen = %d, %v; want 2", v, err)
	}
	res, err := st2.Apply(ctx, rules.Mutation{Sender: "@a:x", Entries: add(rules.Blacklist, "@b:x")})
	if err != nil || res.Change.Version != 3 {
		t.Fatalf("next version = %+v, %v; want 3", res.Change, err)
	}
}

func TestStore_HistoryNewestFirstWithEntries(t *testing.T) {
	st, _ := openTemp(t)
	ctx := context.Background()
	_, _ = st.Apply(ctx, rules.Mutation{Sender: "@a:x", Reason: "dashboards", Entries: add(rules.AlwaysSend, "@d:x", "@e:x")})
	_, _ = st.Apply(ctx, rules.Mutation{Sender: "@b:x", Entries: add(rules.Blacklist, "@c:x")})
	history, err := st.History(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(history) != 2 || history[0].Sender != "@b:x" || history[1].Reason != "dashboards" || len(history[1].Entries) != 2 {
		t.Fatalf("history = %+v", history)
	}
	feed, err := st.RecentChanges(ctx, 1, 100)
	if err != nil || len(feed) != 1 || feed[0].Version != 2 {
		t.Fatalf("recent = %+v, %v", feed, err)
	}
	// A change with more entries than asked for comes without them.
	feed, err = st.RecentChanges(ctx, 2, 1)
	if err != nil || len(feed) != 2 || !feed[0].EntriesOmitted || len(feed[0].Entries) != 0 || feed[1].EntriesOmitted || len(feed[1].Entries) != 1 {
		t.Fatalf("recent with at most 1 entry each = %+v, %v; want the 2-entry change without entries", feed, err)
	}
}

func TestStore_InboxStoresEachEventOnce(t *testing.T) {
	st, _ := openTemp(t)
	ctx := context.Background()
	evt := InboxEvent{EventID: "$1", RoomID: "!r:x", Sender: "@a:x", JSON: json.RawMessage(`{"event_id":"$1"}`)}
	n, err := st.Enqueue(ctx, []InboxEvent{evt, evt})
	if err != nil || n.New != 1 {
		t.Fatalf("first enqueue = %+v, %v; want 1", n, err)
	}
	if n, _ = st.Enqueue(ctx, []InboxEvent{evt}); n.New != 0 {
		t.Fatalf("redelivery stored %d events", n.New)
	}
	items, _ := st.Unfinished(ctx, 10)
	if len(items) != 1 || items[0].Reply != nil {
		t.Fatalf("items = %+v", items)
	}
	err = st.InTxn(ctx, func(ctx context.Context) error {
		if _, err := st.Apply(ctx, rules.Mutation{EventID: "$1", Sender: "@a:x", Entries: add(rules.AlwaysSend, "@d:x")}); err != nil {
			return err
		}
		return st.MarkApplied(ctx, items[0].Seq, json.RawMessage(`{"ok":true}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err = st.MarkApplied(ctx, items[0].Seq, json.RawMessage(`{}`)); err == nil {
		t.Fatal("applying an item twice must fail")
	}
	items, _ = st.Unfinished(ctx, 10)
	if len(items) != 1 || string(items[0].Reply) != `{"ok":true}` {
		t.Fatalf("applied item = %+v", items)
	}
	_ = st.MarkDone(ctx, items[0].Seq)
	if items, _ = st.Unfinished(ctx, 10); len(items) != 0 {
		t.Fatalf("done item still unfinished: %+v", items)
	}
}

func TestStore_ReceiptsBoundCatchUp(t *testing.T) {
	st, _ := openTemp(t)
	ctx := context.Background()
	if _, ok, err := st.FirstReceipt(ctx); err != nil || ok {
		t.Fatalf("empty inbox: ok %v, %v", ok, err)
	}
	var times, before []time.Time // after and before each event's Enqueue
	for _, eventID := range []id.EventID{"$1", "$2", "$3"} {
		before = append(before, time.Now().Truncate(time.Millisecond))
		if _, err := st.Enqueue(ctx, []InboxEvent{{EventID: eventID, RoomID: "!r:x", Sender: "@a:x", JSON: json.RawMessage(`{}`)}}); err != nil {
			t.Fatal(err)
		}
		times = append(times, time.Now())
		time.Sleep(5 * time.Millisecond)
	}
	first, ok, err := st.FirstReceipt(ctx)
	if err != nil || !ok || first.After(times[0]) || first.Before(before[0]) {
		t.Errorf("first receipt %v (ok %v, %v), want the first event's %v", first, ok, err, times[0])
	}
	last, ok, err := st.LastReceiptBefore(ctx, before[2])
	if err != nil || !ok || last.After(times[1]) || last.Before(before[1]) {
		t.Errorf("last receipt before the third event: %v (ok %v, %v), want the second event's %v", last, ok, err, times[1])
	}
	if _, ok, _ = st.LastReceiptBefore(ctx, times[0].Add(-time.Second)); ok {
		t.Error("a receipt before the first event")
	}
}

func TestStore_FailedTransactionLeavesNothing(t *testing.T) {
	st, _ := openTemp(t)
	ctx := context.Background()
	_, _ = st.Enqueue(ctx, []InboxEvent{{EventID: "$1", RoomID: "!r:x", Sender: "@a:x", JSON: json.RawMessage(`{}`)}})
	items, _ := st.Unfinished(ctx, 10)
	err := st.InTxn(ctx, func(ctx context.Context) error {
		if _, err := st.Apply(ctx, rules.Mutation{Sender: "@a:x", Entries: add(rules.AlwaysSend, "@d:x")}); err != nil {
			return err
		}
		return st.MarkApplied(ctx, items[0].Seq+100, nil) // fails: no such item
	})
	if err == nil {
		t.Fatal("expected the transaction to fail")
	}
	if v, _ := st.Version(ctx); v != 0 {
		t.Errorf("a failed transaction left version %d", v)
	}
}

func TestOpen_ReportsUnusablePaths(t *testing.T) {
	dir := t.TempDir()
	readOnly := filepath.Join(dir, "ro")
	_ = os.Mkdir(readOnly, 0o500)
	tests := []struct {
		name string
		path string
		want string
	}{
		{"missing directory", filepath.Join(dir, "nope", "x.db"), "nope"},
		{"read-only directory", filepath.Join(readOnly, "x.db"), "not writable"},
	}
	if os.Geteuid() == 0 {
		tests = tests[:1] // root writes anywhere; the read-only case cannot fail here
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(context.Background(), tt.path, zerolog.Nop())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestStore_ChangesBetweenListsWhatLiesBelowACommittedChange(t *testing.T) {
	st, path := openTemp(t)
	other := reopen(t, path)
	defer other.Close()
	ctx := context.Background()
	for i, writer := range []*Store{st, other, other, st} {
		if _, err := writer.Apply(ctx, rules.Mutation{Sender: "@a:x", Entries: add(rules.Blacklist, id.UserID(fmt.Sprintf("@u%d:x", i)))}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name          string
		after, before int64
		limit         int
		want          []int64
	}{
		{"between two of this process's changes", 1, 4, 10, []int64{2, 3}},
		{"nothing between neighbours", 3, 4, 10, nil},
		{"the limit cuts from the oldest", 0, 5, 2, []int64{1, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			changes, err := st.ChangesBetween(ctx, tt.after, tt.before, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			var got []int64
			for _, c := range changes {
				got = append(got, c.Version)
				if len(c.Entries) != 1 {
					t.Errorf("change %d has %d entries, want 1", c.Version, len(c.Entries))
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("versions %v, want %v", got, tt.want)
			}
		})
	}
}

// Another process's commit wakes a listener at once on PostgreSQL; SQLite
// has nothing to listen to (the caller polls).
func TestStore_ListenChangesWakesOnAnotherProcessesCommit(t *testing.T) {
	st, path := openTemp(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wake, err := st.ListenChanges(ctx, func(err error) { t.Log(err) })
	if err != nil {
		t.Fatal(err)
	}
	if !onPostgres() {
		if wake != nil {
			t.Fatal("SQLite returned a channel to listen on")
		}
		return
	}
	other := reopen(t, path)
	defer other.Close()
	if _, err = other.Apply(ctx, rules.Mutation{Sender: "@a:x", Entries: add(rules.AlwaysSend, "@d:x")}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
	case <-time.After(2 * time.Second):
		t.Fatal("no notification within 2 s of another process's commit")
	}
	// A change that rolls back announces nothing.
	err = other.InTxn(ctx, func(ctx context.Context) error {
		if _, err := other.Apply(ctx, rules.Mutation{Sender: "@a:x", Entries: add(rules.AlwaysSend, "@e:x")}); err != nil {
			return err
		}
		return errors.New("roll back")
	})
	if err == nil {
		t.Fatal("the transaction did not fail")
	}
	select {
	case <-wake:
		t.Fatal("a rolled-back change was announced")
	case <-time.After(300 * time.Millisecond):
	}
}

// One process at a time is active on a database; the next one can take
// over once it lets go.
func TestStore_OneActiveProcessAtATime(t *testing.T) {
	st, path := openTemp(t)
	other := reopen(t, path)
	defer other.Close()
	ctx := context.Background()
	first, err := st.TryActive(ctx)
	if err != nil {
		t.Fatalf("the first process could not become active: %v", err)
	}
	if _, err = other.TryActive(ctx); !errors.Is(err, ErrActiveElsewhere) {
		t.Fatalf("a second process: %v, want ErrActiveElsewhere", err)
	}
	first.Release()
	var second *Active
	deadline := time.Now().Add(5 * time.Second)
	for second, err = other.TryActive(ctx); err != nil && time.Now().Before(deadline); second, err = other.TryActive(ctx) {
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("no take-over after the first let go: %v", err)
	}
	defer second.Release()
	if !onPostgres() {
		return
	}
	// The lock's connection is cut (as when the database restarts or the
	// network breaks): the holder is told it lost the hold.
	db, err := sql.Open("postgres", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err = db.Exec(`SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1`, activeLock&0xffffffff); err != nil {
		t.Fatal(err)
	}
	select {
	case <-second.Lost:
	case <-time.After(5 * time.Second):
		t.Fatal("the holder was not told that its lock's connection broke")
	}
}

func TestOpenPostgres_ErrorsNameTheServerNotThePassword(t *testing.T) {
	port, err := harness.FreePort() // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	uri := fmt.Sprintf("postgres://presence:s3cret-password@127.0.0.1:%d/presence_router?sslmode=disable&connect_timeout=2", port)
	_, err = OpenPostgres(context.Background(), uri, zerolog.Nop())
	if err == nil {
		t.Fatal("opened a database where no server listens")
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("127.0.0.1:%d", port)) || strings.Contains(err.Error(), "s3cret-password") {
		t.Errorf("error = %v; want the server named and the password left out", err)
	}
}

// Blacklist patterns stored by an earlier version in several cases become
// one entry each, in lower case (upgrade 03); users and the change log stay.
func TestUpgrade_PatternsInLowerCase(t *testing.T) {
	st, path := openTemp(t)
	ctx := context.Background()
	rows := []struct {
		list rules.List
		user string
	}{
		{rules.Blacklist, "@Bot-*:X"}, {rules.Blacklist, "@bot-*:x"}, {rules.Blacklist, "@BOT-*:X"},
		{rules.Blacklist, "@Puppet_??:Y"}, {rules.Blacklist, "@CEO:x"}, {rules.AlwaysSend, "@Dash:x"},
	}
	for _, r := range rows {
		if _, err := st.db.Exec(ctx, "INSERT INTO rule (list, user_id, version) VALUES ($1, $2, 1)", r.list, r.user); err != nil {
			t.Fatal(err)
		}
	}
	// As version 2 had them: no reason on an entry, no pattern index
	// (upgrade 04).
	for _, undo := range []string{"DROP INDEX rule_patterns_idx", "ALTER TABLE rule DROP COLUMN reason"} {
		if _, err := st.db.Exec(ctx, undo); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.db.Exec(ctx, "UPDATE version SET version = 2"); err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	st = reopen(t, path)
	defer st.Close()
	snap, err := st.LoadRules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(snap.Blacklist)
	if want := []id.UserID{"@CEO:x", "@bot-*:x", "@puppet_??:y"}; !slices.Equal(snap.Blacklist, want) {
		t.Errorf("blacklist %v, want %v", snap.Blacklist, want)
	}
	if want := []id.UserID{"@Dash:x"}; !slices.Equal(snap.AlwaysSend, want) {
		t.Errorf("always-send %v, want %v", snap.AlwaysSend, want)
	}
}

func TestRedactURI_HidesEveryPassword(t *testing.T) {
	tests := []struct{ uri, want string }{
		{"postgres://presence:s3cret@db:5432/pr?sslmode=disable", "postgres://presence:xxxxx@db:5432/pr?sslmode=disable"},
		{"postgres://presence@db/pr?password=s3cret&sslmode=disable", "postgres://presence@db/pr?password=xxxxx&sslmode=disable"},
		{"postgres://db/pr", "postgres://db/pr"},
	}
	for _, tt := range tests {
		if got := RedactURI(tt.uri); got != tt.want || strings.Contains(got, "s3cret") {
			t.Errorf("RedactURI(%q) = %q, want %q", tt.uri, got, tt.want)
		}
		if pw := URIPassword(tt.uri); strings.Contains(tt.uri, "s3cret") && !slices.Equal(pw, []string{"s3cret"}) {
			t.Errorf("URIPassword(%q) = %q", tt.uri, pw)
		}
	}
	// The start's error with a query-string password names the server, not the password.
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	_, err = OpenPostgres(context.Background(), fmt.Sprintf("postgres://presence@127.0.0.1:%d/pr?password=s3cret-password&sslmode=disable&connect_timeout=2", port), zerolog.Nop())
	if err == nil || strings.Contains(err.Error(), "s3cret-password") || !strings.Contains(err.Error(), fmt.Sprintf("127.0.0.1:%d", port)) {
		t.Errorf("error = %v; want the server named and the password left out", err)
	}
}

// The blacklist holds at most rules.MaxPatterns patterns, however they
// come (one change or several); a change past it fails and writes nothing,
// and exact entries are not counted.
func TestStore_PatternCap(t *testing.T) {
	st, _ := openTemp(t)
	ctx := context.Background()
	patterns := func(from, n int) []id.UserID {
		out := make([]id.UserID, n)
		for i := range out {
			out[i] = id.UserID(fmt.Sprintf("@bot%d_*:x", from+i))
		}
		return out
	}
	apply := func(entries []rules.Entry) error {
		_, err := st.Apply(ctx, rules.Mutation{Sender: "@admin:x", Entries: entries})
		return err
	}
	if err := apply(add(rules.Blacklist, patterns(0, rules.MaxPatterns-1)...)); err != nil {
		t.Fatal(err)
	}
	if err := apply(add(rules.Blacklist, "@exact:x")); err != nil {
		t.Fatalf("an exact entry at the cap: %v", err)
	}
	before, _ := st.Version(ctx)
	if err := apply(add(rules.Blacklist, patterns(5000, 2)...)); !errors.Is(err, rules.ErrTooManyPatterns) {
		t.Fatalf("two more patterns at %d: err %v, want ErrTooManyPatterns", rules.MaxPatterns-1, err)
	}
	if after, _ := st.Version(ctx); after != before {
		t.Errorf("the refused change moved the version from %d to %d", before, after)
	}
	if err := apply(add(rules.Blacklist, patterns(5000, 1)...)); err != nil {
		t.Fatalf("the last pattern under the cap: %v", err)
	}
	// One out, one in, in one change: the count stays at the cap.
	swap := append(remove(rules.Blacklist, patterns(0, 1)...), add(rules.Blacklist, patterns(6000, 1)...)...)
	if err := apply(swap); err != nil {
		t.Errorf("a swap at the cap: %v", err)
	}
}
