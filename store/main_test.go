package store

import (
	"context"
	"testing"

	"github.com/rs/zerolog"

	"github.com/presence-router/presence-router/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m, "store tests") }

// onPostgres reports whether the tests run on PostgreSQL.
func onPostgres() bool { return testdb.OnPostgres() }

// sqliteOnly skips a test of SQLite's files or locks on PostgreSQL.
func sqliteOnly(t testing.TB, why string) {
	if onPostgres() {
		t.Skip("SQLite only: " + why)
	}
}

// newLocation returns where a new test database lives.
func newLocation(t testing.TB) string { return testdb.NewLocation(t) }

// reopen opens the test database at location (newLocation's).
func reopen(t testing.TB, location string) *Store {
	t.Helper()
	var st *Store
	var err error
	if onPostgres() {
		st, err = OpenPostgres(context.Background(), location, zerolog.Nop())
	} else {
		st, err = Open(context.Background(), location, zerolog.Nop())
	}
	if err != nil {
		t.Fatalf("open %s: %v", location, err)
	}
	return st
}
