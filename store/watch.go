package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/lib/pq"

	"github.com/presence-router/presence-router/rules"
)

const (
	changesSinceQuery = `
	SELECT version, COALESCE(event_id, ''), sender, command, reason, created_at, push_to
	FROM change WHERE version > $1 ORDER BY version LIMIT $2`
	changesBetweenQuery = `
	SELECT version, COALESCE(event_id, ''), sender, command, reason, created_at, push_to
	FROM change WHERE version > $1 AND version < $2 ORDER BY version LIMIT $3`
)

// ChangesSince returns up to limit changes after version, oldest first, with
// their entries.
func (s *Store) ChangesSince(ctx context.Context, version int64, limit int) ([]rules.Change, error) {
	return s.queryChanges(ctx, changesSinceQuery, version, limit)
}

// ChangesBetween returns up to limit changes with a version above after and
// below before, oldest first, with their entries. Writers take turns (see
// InTxn), so once a change is committed every change below it that will
// ever exist is committed too: a version missing between two committed ones
// is a transaction that rolled back, never one still to come.
func (s *Store) ChangesBetween(ctx context.Context, after, before int64, limit int) ([]rules.Change, error) {
	return s.queryChanges(ctx, changesBetweenQuery, after, before, limit)
}

// changesChannel is the PostgreSQL notification channel on which every
// committed change is announced (its payload is the version).
const changesChannel = "presence_router_changes"

// notifyChange announces a change to the other processes on PostgreSQL; the
// notification is delivered when the transaction commits, and not at all
// if it rolls back.
func (s *Store) notifyChange(ctx context.Context, version int64) error {
	if s.uri == "" {
		return nil
	}
	if _, err := s.db.Exec(ctx, "SELECT pg_notify($1, $2)", changesChannel, strconv.FormatInt(version, 10)); err != nil {
		return fmt.Errorf("failed to announce the change: %w", err)
	}
	return nil
}

// ListenChanges returns a channel that receives a value soon after any
// process commits a change, and after the listening connection is
// re-established (when notifications may have been missed). On SQLite it
// returns nil: there is nothing to listen to, and the caller polls. The
// listener stops when ctx ends.
func (s *Store) ListenChanges(ctx context.Context, onError func(error)) (<-chan struct{}, error) {
	if s.uri == "" {
		return nil, nil
	}
	wake := make(chan struct{}, 1)
	poke := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	listener := pq.NewListener(s.uri, 100*time.Millisecond, 5*time.Second, func(ev pq.ListenerEventType, err error) {
		switch {
		case err != nil:
			onError(fmt.Errorf("failed to listen for changes on %s: %w", RedactURI(s.uri), err))
		case ev == pq.ListenerEventReconnected:
			poke()
		}
	})
	if err := listener.Listen(changesChannel); err != nil {
		_ = listener.Close()
		return nil, fmt.Errorf("failed to listen for changes on %s: %w", RedactURI(s.uri), err)
	}
	go func() {
		defer listener.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case <-listener.NotificationChannel():
				poke()
			case <-time.After(90 * time.Second):
				go func() { _ = listener.Ping() }()
			}
		}
	}()
	return wake, nil
}

// ErrActiveElsewhere says that another process holds the active lock.
var ErrActiveElsewhere = errors.New("another presence-router process is active on this database")

// activeLock is the PostgreSQL advisory lock the active process holds for
// as long as it runs (on a connection of its own).
const activeLock = 0x7072_6163_7476 // "practv"

// Active is the active process's hold on the database: one process at a
// time runs the bot (on PostgreSQL, others wait as standbys; on SQLite,
// others are refused).
type Active struct {
	// Lost is closed when the hold is lost (the lock's connection to
	// PostgreSQL broke); the process must stop acting as the active one.
	Lost <-chan struct{}
	// Release gives the hold up.
	Release func()
}

// TryActive tries once to become the active process: it fails with an
// error wrapping ErrActiveElsewhere while another process holds the lock.
// On PostgreSQL the lock is a session advisory lock on a connection kept
// for it (PostgreSQL releases it when the process dies and its connection
// closes); its connection is checked every second. On SQLite it is an
// exclusive flock on the database file (released by the kernel when the
// process dies).
func (s *Store) TryActive(ctx context.Context) (*Active, error) {
	if s.uri == "" {
		return s.tryActiveSQLite()
	}
	conn, err := s.db.RawDB.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to take the active lock: %w", err)
	}
	var held bool
	if err = conn.QueryRowContext(ctx, "SELECT pg_try_advisory_lock($1)", activeLock).Scan(&held); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("failed to take the active lock: %w", err)
	}
	if !held {
		_ = conn.Close()
		return nil, fmt.Errorf("failed to take the active lock: %w", ErrActiveElsewhere)
	}
	lost := make(chan struct{})
	stop := make(chan struct{})
	var once sync.Once
	go func() {
		defer close(lost)
		defer conn.Close()
		ticker := time.NewTicker(time.Second)
		defer ticker.Stop()
		for {
			select {
			case <-stop:
				unlockCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, _ = conn.ExecContext(unlockCtx, "SELECT pg_advisory_unlock($1)", activeLock)
				cancel()
				return
			case <-ticker.C:
			}
			pingCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := conn.ExecContext(pingCtx, "SELECT 1")
			cancel()
			if err != nil {
				return
			}
		}
	}()
	return &Active{Lost: lost, Release: func() { once.Do(func() { close(stop) }) }}, nil
}

func (s *Store) tryActiveSQLite() (*Active, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return nil, fmt.Errorf("failed to lock %s: %w", s.path, err)
	}
	if err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("failed to lock %s: %w", s.path, ErrActiveElsewhere)
		}
		return nil, fmt.Errorf("failed to lock %s: %w", s.path, err)
	}
	var once sync.Once
	return &Active{Lost: make(chan struct{}), Release: func() { once.Do(func() { _ = f.Close() }) }}, nil
}
