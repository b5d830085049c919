package store

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"

	"github.com/presence-router/presence-router/e2e/harness"
)

// postgresBase, when set, makes every test database a new PostgreSQL
// database on that server instead of a SQLite file: PR_TEST_POSTGRES=start
// starts a server for the run (`make test` does), a postgres:// URI names
// one that may create databases.
var postgresBase string

var databases atomic.Int64

func TestMain(m *testing.M) {
	var pg *harness.Postgres
	switch v := os.Getenv("PR_TEST_POSTGRES"); v {
	case "":
	case "start":
		var err error
		if pg, err = harness.StartPostgres(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, "PR_TEST_POSTGRES=start:", err)
			os.Exit(1)
		}
		postgresBase = pg.URI("postgres")
		fmt.Printf("store tests on PostgreSQL (127.0.0.1:%d)\n", pg.Port)
	default:
		postgresBase = v
	}
	code := m.Run()
	if pg != nil {
		pg.Stop()
	}
	os.Exit(code)
}

// onPostgres reports whether the tests run on PostgreSQL.
func onPostgres() bool { return postgresBase != "" }

// sqliteOnly skips a test of SQLite's files or locks on PostgreSQL.
func sqliteOnly(t testing.TB, why string) {
	if onPostgres() {
		t.Skip("SQLite only: " + why)
	}
}

// newLocation returns where a new test database lives: a file path in a
// temporary directory, or the URI of a new PostgreSQL database.
func newLocation(t testing.TB) string {
	t.Helper()
	if !onPostgres() {
		return filepath.Join(t.TempDir(), "test.db")
	}
	u, err := url.Parse(postgresBase)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("store_test_%d_%d", os.Getpid(), databases.Add(1))
	db, err := sql.Open("postgres", postgresBase)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err = db.Exec(fmt.Sprintf("CREATE DATABASE %q", name)); err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

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
