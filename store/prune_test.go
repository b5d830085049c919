package store

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"
)

// process takes an inbox item through applied to done, as the bot does.
func process(t *testing.T, st *Store, eventID id.EventID) {
	t.Helper()
	ctx := context.Background()
	items, err := st.Unfinished(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, item := range items {
		if item.Event.EventID != eventID {
			continue
		}
		if err = st.InTxn(ctx, func(ctx context.Context) error {
			return st.MarkApplied(ctx, item.Seq, json.RawMessage(`{"markdown":"ok"}`))
		}); err != nil {
			t.Fatal(err)
		}
		if err = st.MarkDone(ctx, item.Seq); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("%s is not in the inbox", eventID)
}

func (s *Store) inboxRows(t *testing.T) (rows int, jsonBytes int) {
	t.Helper()
	if err := s.db.QueryRow(context.Background(), `SELECT COUNT(*), COALESCE(SUM(LENGTH(event_json) + COALESCE(LENGTH(reply_json), 0)), 0) FROM inbox`).Scan(&rows, &jsonBytes); err != nil {
		t.Fatal(err)
	}
	return rows, jsonBytes
}

func TestStore_DoneItemsKeepNoEventJSON(t *testing.T) {
	st, _ := openTemp(t)
	ctx := context.Background()
	big := make([]byte, 60<<10)
	for i := range big {
		big[i] = 'x'
	}
	var events []InboxEvent
	for i := range 50 {
		eventID := id.EventID("$spam" + string(rune('A'+i)))
		events = append(events, InboxEvent{EventID: eventID, RoomID: "!r:x", Sender: "@member:x", JSON: json.RawMessage(`{"body":"` + string(big) + `"}`)})
	}
	if _, err := st.Enqueue(ctx, events); err != nil {
		t.Fatal(err)
	}
	for _, evt := range events {
		process(t, st, evt.EventID)
	}
	rows, size := st.inboxRows(t)
	if rows != 50 || size != 0 {
		t.Errorf("after 50 refused 60 KB commands the inbox holds %d rows with %d bytes of JSON; want 50 rows and none", rows, size)
	}
}

func TestStore_PruneInboxKeepsExactlyOnce(t *testing.T) {
	st, _ := openTemp(t)
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour)
	old := InboxEvent{EventID: "$old", RoomID: "!r:x", Sender: "@a:x", SentAt: t0, JSON: json.RawMessage(`{}`)}
	if _, err := st.Enqueue(ctx, []InboxEvent{old}); err != nil {
		t.Fatal(err)
	}
	process(t, st, old.EventID)
	// Nothing newer arrived: the newest item is never pruned, however old.
	if n, err := st.PruneInbox(ctx, 0); err != nil || n != 0 {
		t.Fatalf("pruning an inbox of one item deleted %d (%v); want 0", n, err)
	}
	time.Sleep(5 * time.Millisecond)
	newer := InboxEvent{EventID: "$newer", RoomID: "!r:x", Sender: "@a:x", SentAt: time.Now(), JSON: json.RawMessage(`{}`)}
	if _, err := st.Enqueue(ctx, []InboxEvent{newer}); err != nil {
		t.Fatal(err)
	}
	// Within the retention nothing goes.
	if n, err := st.PruneInbox(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("pruning within the retention deleted %d (%v)", n, err)
	}
	if n, err := st.PruneInbox(ctx, time.Millisecond); err != nil || n != 1 {
		t.Fatalf("pruning deleted %d (%v); want the old done item", n, err)
	}
	if rows, _ := st.inboxRows(t); rows != 1 {
		t.Fatalf("%d rows after pruning; want 1", rows)
	}
	// The pruned event is redelivered: it must not be stored (and applied)
	// again. A new event is still stored.
	res, err := st.Enqueue(ctx, []InboxEvent{old, {EventID: "$new", RoomID: "!r:x", Sender: "@a:x", SentAt: time.Now(), JSON: json.RawMessage(`{}`)}})
	if err != nil {
		t.Fatal(err)
	}
	if res.New != 1 || res.TooOld != 1 {
		t.Errorf("redelivery of a pruned event: %+v; want the old one dropped as too old and the new one stored", res)
	}
	items, _ := st.Unfinished(ctx, 10)
	for _, item := range items {
		if item.Event.EventID == old.EventID {
			t.Errorf("the pruned event is pending again: it would be applied twice")
		}
	}
}

func TestStore_NewDatabaseIsPrivate(t *testing.T) {
	sqliteOnly(t, "the modes of the database's files")
	path := filepath.Join(t.TempDir(), "private.db")
	st, err := Open(context.Background(), path, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err = st.Enqueue(context.Background(), []InboxEvent{{EventID: "$1", RoomID: "!r:x", Sender: "@a:x", JSON: json.RawMessage(`{}`)}}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{path, path + "-wal", path + "-shm"} {
		info, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if perm := info.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %o; want 0600", filepath.Base(name), perm)
		}
	}
}

func TestStore_ControlRoomPin(t *testing.T) {
	st, path := openTemp(t)
	ctx := context.Background()
	if _, ok, err := st.ControlRoom(ctx); err != nil || ok {
		t.Fatalf("a new database has a pinned room (%v, %v)", ok, err)
	}
	if err := st.PinControlRoom(ctx, "!first:x"); err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	st = reopen(t, path)
	defer st.Close()
	if room, ok, err := st.ControlRoom(ctx); err != nil || !ok || room != "!first:x" {
		t.Fatalf("pinned room after a restart = %q, %v, %v", room, ok, err)
	}
}
