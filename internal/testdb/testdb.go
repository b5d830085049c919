// Package testdb gives tests a fresh database location: a SQLite file, or,
// with PR_TEST_POSTGRES set, a new PostgreSQL database (PR_TEST_POSTGRES=start
// starts a server for the run, as `make test` does; a postgres:// URI names
// one that may create databases).
package testdb

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	_ "github.com/lib/pq" // the postgres driver

	"github.com/presence-router/presence-router/e2e/harness"
)

var (
	postgresBase string
	databases    atomic.Int64
)

// Main runs a package's tests (call it from TestMain): it starts
// PostgreSQL first when PR_TEST_POSTGRES=start, and stops it after.
func Main(m *testing.M, what string) {
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
		fmt.Printf("%s on PostgreSQL (127.0.0.1:%d)\n", what, pg.Port)
	default:
		postgresBase = v
	}
	code := m.Run()
	if pg != nil {
		pg.Stop()
	}
	os.Exit(code)
}

// OnPostgres reports whether the tests run on PostgreSQL.
func OnPostgres() bool { return postgresBase != "" }

// NewLocation returns where a new test database lives: a file path in a
// temporary directory, or the URI of a new PostgreSQL database.
func NewLocation(t testing.TB) string {
	t.Helper()
	if !OnPostgres() {
		return filepath.Join(t.TempDir(), "test.db")
	}
	u, err := url.Parse(postgresBase)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("test_%d_%d", os.Getpid(), databases.Add(1))
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
