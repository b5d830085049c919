// Package store owns presence-router's database (SQLite, the embedded
// default, or PostgreSQL): the two rule lists, the change log that doubles
// as the audit log, and the inbox of command events. Every SQL statement of
// the service lives in this package.
package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lib/pq"
	"github.com/mattn/go-sqlite3"
	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream" // registers the sqlite3-fk-wal-fullsync driver
)

//go:embed upgrades/*.sql
var upgrades embed.FS

var upgradeTable = dbutil.BuildUpgradeTable().WithFSPath(upgrades, "upgrades").Finish()

// Store is the database. It is safe for concurrent use.
type Store struct {
	db *dbutil.Database
	// uri is the PostgreSQL URI ("" for SQLite), for the connection that
	// listens for changes; path is the SQLite file ("" for PostgreSQL).
	uri, path string
	// pushToAllQuery differs by dialect (JSON aggregation).
	pushToAllQuery string
}

// Open opens (creating if needed) the SQLite database at path and runs
// every pending migration. It fails with a message naming the path when the
// directory is missing or not writable.
func Open(ctx context.Context, path string, log zerolog.Logger) (*Store, error) {
	dir := filepath.Dir(path)
	info, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("failed to open database: directory %s: %w", dir, err)
	} else if !info.IsDir() {
		return nil, fmt.Errorf("failed to open database: %s is not a directory", dir)
	}
	if err = checkWritable(dir, path); err != nil {
		return nil, err
	}
	uri := "file:" + path + "?_txlock=immediate"
	db, err := dbutil.NewWithDialect(uri, "sqlite3-fk-wal-fullsync")
	if err != nil {
		return nil, fmt.Errorf("failed to open database %s: %w", path, err)
	}
	// One writer at a time is all SQLite allows; readers use WAL snapshots.
	db.RawDB.SetMaxOpenConns(4)
	return open(ctx, &Store{db: db, path: path}, path, log)
}

// OpenPostgres opens the PostgreSQL database at uri (postgres://user:password@host:port/dbname?sslmode=…)
// and runs every pending migration. The database must exist; its errors
// name the server and database but never the password.
func OpenPostgres(ctx context.Context, uri string, log zerolog.Logger) (*Store, error) {
	name := RedactURI(uri)
	db, err := dbutil.NewWithDialect(uri, "postgres")
	if err != nil {
		return nil, fmt.Errorf("failed to open database %s: %w", name, err)
	}
	db.RawDB.SetMaxOpenConns(8)
	return open(ctx, &Store{db: db, uri: uri}, name, log)
}

// RedactURI returns uri with its password, if any, replaced by xxxxx:
// the one in the user information and a password query parameter
// (libpq's ?password=) alike.
func RedactURI(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		return "(an unparsable database URI)"
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// URIPassword returns the passwords uri carries (in its user information
// or a password query parameter), for a log redactor.
func URIPassword(uri string) []string {
	u, err := url.Parse(uri)
	if err != nil {
		return nil
	}
	var out []string
	if password, ok := u.User.Password(); ok && password != "" {
		out = append(out, password)
	}
	if password := u.Query().Get("password"); password != "" {
		out = append(out, password)
	}
	return out
}

// open migrates the database of s (named name in errors) and completes s.
func open(ctx context.Context, s *Store, name string, log zerolog.Logger) (*Store, error) {
	db := s.db
	db.Owner = "presence-router"
	db.UpgradeTable = upgradeTable
	db.Log = dbutil.ZeroLogger(log.With().Str("component", "database").Logger())
	if err := db.RawDB.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("failed to open database %s: %w", name, err)
	}
	if err := db.Upgrade(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("failed to upgrade database %s: %w", name, err)
	}
	s.pushToAllQuery = setPushToAllSQLite
	if db.Dialect == dbutil.Postgres {
		s.pushToAllQuery = setPushToAllPostgres
	}
	return s, nil
}

// checkWritable fails early and clearly when SQLite could not create its
// files next to the database. A new database file is created here, readable
// by its owner only (0600); SQLite gives its -wal and -shm files the same
// mode.
func checkWritable(dir, path string) error {
	if _, err := os.Stat(path); err == nil {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("failed to open database %s: %w", path, err)
		}
		return f.Close()
	}
	probe, err := os.CreateTemp(dir, ".presence-router-probe-*")
	if err != nil {
		return fmt.Errorf("failed to open database: directory %s is not writable: %w", dir, err)
	}
	name := probe.Name()
	_ = probe.Close()
	if err = os.Remove(name); err != nil {
		return fmt.Errorf("failed to open database: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("failed to create database %s: %w", path, err)
	}
	return f.Close()
}

// Close closes the database.
func (s *Store) Close() error {
	return s.db.Close()
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.db.RawDB.PingContext(ctx)
}

// writerLock is the PostgreSQL advisory lock every write transaction
// holds, so that writers (presence-router and an import running beside it)
// take turns as SQLite's immediate transactions do.
const writerLock = 0x7072_6f75_7465 // "proute"

// InTxn runs fn in one write transaction; the store's methods called with
// the context fn receives join that transaction. Write transactions run one
// at a time, also across processes. A busy database is retried with backoff
// for up to about 30 seconds before giving up.
func (s *Store) InTxn(ctx context.Context, fn func(ctx context.Context) error) error {
	if s.db.Dialect == dbutil.Postgres {
		inner := fn
		fn = func(ctx context.Context) error {
			if _, err := s.db.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", writerLock); err != nil {
				return fmt.Errorf("failed to take the writer lock: %w", err)
			}
			return inner(ctx)
		}
	}
	backoff := 50 * time.Millisecond
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := s.db.DoTxn(ctx, nil, fn)
		if err == nil || !isBusy(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("failed to commit: %w (database busy)", ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

func isBusy(err error) bool {
	var sqliteErr sqlite3.Error
	if errors.As(err, &sqliteErr) {
		return sqliteErr.Code == sqlite3.ErrBusy || sqliteErr.Code == sqlite3.ErrLocked
	}
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		return pqErr.Code == "40001" || pqErr.Code == "40P01" // serialization failure, deadlock
	}
	return strings.Contains(err.Error(), "database is locked")
}

// DB is the database, for the tables of mautrix's crypto and state stores
// (each migrated with its own version table).
func (s *Store) DB() *dbutil.Database { return s.db }
