package store

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/rules"
)

// holdWriteLock takes the database's write lock from another connection,
// as another process (an import, a backup tool) would, and releases it
// after hold: SQLite's, or on PostgreSQL the advisory lock every writer of
// the store takes.
func holdWriteLock(t *testing.T, location string, hold time.Duration) <-chan struct{} {
	t.Helper()
	driver, dsn, lock, unlock := "sqlite3", "file:"+location, "BEGIN IMMEDIATE", "ROLLBACK"
	if onPostgres() {
		driver, dsn = "postgres", location
		lock, unlock = fmt.Sprintf("SELECT pg_advisory_lock(%d)", writerLock), fmt.Sprintf("SELECT pg_advisory_unlock(%d)", writerLock)
	}
	other, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close() })
	conn, err := other.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err = conn.ExecContext(context.Background(), lock); err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	go func() {
		defer close(released)
		time.Sleep(hold)
		_, _ = conn.ExecContext(context.Background(), unlock)
		_ = conn.Close()
	}()
	return released
}

// A write lock held longer than SQLite's busy timeout (5 s) makes the first
// attempt fail with SQLITE_BUSY; the store retries instead of losing the
// write. On PostgreSQL the write waits for the other writer's lock.
func TestStore_BusyDatabaseIsRetriedNotLost(t *testing.T) {
	if testing.Short() {
		t.Skip("holds a lock for 6 s; skipped with -short")
	}
	const hold = 6 * time.Second
	tests := []struct {
		name  string
		write func(ctx context.Context, st *Store) error
		check func(ctx context.Context, t *testing.T, st *Store)
	}{
		{
			name: "a rule change waits for the lock and commits",
			write: func(ctx context.Context, st *Store) error {
				_, err := st.Apply(ctx, rules.Mutation{Sender: "@admin:x", Command: "blacklist add", Entries: add(rules.Blacklist, "@busy:x")})
				return err
			},
			check: func(ctx context.Context, t *testing.T, st *Store) {
				rules, err := st.LoadRules(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if rules.Version != 1 || len(rules.Blacklist) != 1 || rules.Blacklist[0] != "@busy:x" {
					t.Errorf("rules after the busy write: %+v", rules)
				}
			},
		},
		{
			name: "an incoming command waits for the lock and is stored",
			write: func(ctx context.Context, st *Store) error {
				n, err := st.Enqueue(ctx, []InboxEvent{{EventID: id.EventID("$busy"), RoomID: "!r:x", Sender: "@admin:x", JSON: []byte(`{}`)}})
				if err == nil && n.New != 1 {
					t.Errorf("Enqueue stored %d events, want 1", n)
				}
				return err
			},
			check: func(ctx context.Context, t *testing.T, st *Store) {
				items, err := st.Unfinished(ctx, 10)
				if err != nil {
					t.Fatal(err)
				}
				if len(items) != 1 || items[0].Event.EventID != "$busy" {
					t.Errorf("inbox after the busy write: %+v", items)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st, path := openTemp(t)
			ctx := context.Background()
			released := holdWriteLock(t, path, hold)
			start := time.Now()
			if err := tt.write(ctx, st); err != nil {
				t.Fatalf("write under a busy database failed: %v", err)
			}
			if elapsed := time.Since(start); elapsed < hold {
				t.Fatalf("write finished after %s, before the lock was released (%s): the lock was not held", elapsed, hold)
			}
			<-released
			tt.check(ctx, t, st)
		})
	}
}
