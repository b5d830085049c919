package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"maunium.net/go/mautrix/id"
)

// InboxEvent is an event from an appservice transaction, stored before the
// transaction is acknowledged.
type InboxEvent struct {
	EventID id.EventID
	RoomID  id.RoomID
	Sender  id.UserID
	// SentAt is the event's origin_server_ts (zero if unknown).
	SentAt time.Time
	JSON   json.RawMessage
}

// Enqueued counts what Enqueue did with a batch of events.
type Enqueued struct {
	// New events were stored; the rest were stored before.
	New int
	// TooOld events were sent before the inbox was last pruned: the inbox
	// no longer remembers whether it processed them, so they are dropped
	// rather than risk applying a command twice.
	TooOld int
}

// InboxItem is a stored event that is not done yet.
type InboxItem struct {
	Seq   int64
	Event InboxEvent
	// Reply is the committed reply of an applied item (nil while pending).
	Reply json.RawMessage
}

const (
	enqueueQuery = `
		INSERT INTO inbox (event_id, room_id, sender, event_json, received_at)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING`
	unfinishedQuery = `
		SELECT seq, event_id, room_id, sender, event_json, reply_json
		FROM inbox WHERE state <> 'done' ORDER BY seq LIMIT $1`
	markAppliedQuery = `UPDATE inbox SET state='applied', reply_json=$2 WHERE seq=$1 AND state='pending'`
	// A done item keeps only its event ID (so that a redelivery is
	// recognised) and when it arrived (for pruning): not the event, which a
	// member could make 64 KB, nor the reply.
	markDoneQuery   = `UPDATE inbox SET state='done', event_json='', reply_json=NULL WHERE seq=$1`
	lastSeqQuery    = `SELECT received_at FROM inbox ORDER BY seq DESC LIMIT 1`
	pruneQuery      = `DELETE FROM inbox WHERE state='done' AND received_at < $1`
	inboxStatsQuery = `SELECT COUNT(*) FROM inbox WHERE state <> 'done'`
	// By seq (the rowid), which follows arrival, rather than MIN/MAX over
	// the whole inbox: both read a row or a few, however long the inbox.
	firstReceiptQuery = `SELECT received_at FROM inbox ORDER BY seq LIMIT 1`
	lastReceiptQuery  = `SELECT received_at FROM inbox WHERE received_at < $1 ORDER BY seq DESC LIMIT 1`
)

// Enqueue stores events in one transaction. An event already stored (same
// event ID) is skipped, so redelivery stores nothing twice; so is one sent
// before the inbox was last pruned (see PruneInbox).
func (s *Store) Enqueue(ctx context.Context, events []InboxEvent) (Enqueued, error) {
	var res Enqueued
	if len(events) == 0 {
		return res, nil
	}
	err := s.InTxn(ctx, func(ctx context.Context) error {
		res = Enqueued{}
		horizon, err := s.prunedBefore(ctx)
		if err != nil {
			return err
		}
		now := time.Now().UnixMilli()
		for _, evt := range events {
			if !evt.SentAt.IsZero() && evt.SentAt.Before(horizon) {
				res.TooOld++
				continue
			}
			added, err := s.db.Exec(ctx, enqueueQuery, evt.EventID, evt.RoomID, evt.Sender, string(evt.JSON), now)
			if err != nil {
				return fmt.Errorf("failed to store event %s: %w", evt.EventID, err)
			}
			if n, _ := added.RowsAffected(); n > 0 {
				res.New++
			}
		}
		return nil
	})
	return res, err
}

// PruneInbox deletes done items that arrived more than retention before the
// newest item, and returns how many it deleted. Measuring from the newest
// item rather than the clock keeps the items of a run that stopped long
// ago: Synapse redelivers what it sent just before a crash when the service
// is back, however late that is. From then on, Enqueue drops events sent
// before the deleted items arrived, so exactly-once holds for them too.
func (s *Store) PruneInbox(ctx context.Context, retention time.Duration) (int, error) {
	deleted := 0
	err := s.InTxn(ctx, func(ctx context.Context) error {
		var lastMS int64
		err := s.db.QueryRow(ctx, lastSeqQuery).Scan(&lastMS)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		} else if err != nil {
			return fmt.Errorf("failed to read the inbox: %w", err)
		}
		cutoff := time.UnixMilli(lastMS).Add(-retention)
		res, err := s.db.Exec(ctx, pruneQuery, cutoff.UnixMilli())
		if err != nil {
			return fmt.Errorf("failed to prune the inbox: %w", err)
		}
		n, _ := res.RowsAffected()
		deleted = int(n)
		if before, err := s.prunedBefore(ctx); err != nil || deleted == 0 || !cutoff.After(before) {
			return err
		}
		return s.setMetaTime(ctx, metaPrunedBefore, cutoff)
	})
	return deleted, err
}

// Unfinished returns up to limit items that are pending or applied but not
// done, in the order they arrived.
func (s *Store) Unfinished(ctx context.Context, limit int) ([]InboxItem, error) {
	rows, err := s.db.Query(ctx, unfinishedQuery, limit)
	if err != nil {
		return nil, fmt.Errorf("failed to read inbox: %w", err)
	}
	defer rows.Close()
	var items []InboxItem
	for rows.Next() {
		var item InboxItem
		var eventJSON string
		var reply sql.NullString
		if err = rows.Scan(&item.Seq, &item.Event.EventID, &item.Event.RoomID, &item.Event.Sender, &eventJSON, &reply); err != nil {
			return nil, fmt.Errorf("failed to read inbox item: %w", err)
		}
		item.Event.JSON = json.RawMessage(eventJSON)
		if reply.Valid {
			item.Reply = json.RawMessage(reply.String)
		}
		items = append(items, item)
	}
	return items, rows.Err()
}

// MarkApplied records that an item's effect and reply are committed. Call it
// in the same transaction (InTxn) as the item's Apply, so that the event is
// processed exactly once. It fails if the item was not pending.
func (s *Store) MarkApplied(ctx context.Context, seq int64, reply json.RawMessage) error {
	res, err := s.db.Exec(ctx, markAppliedQuery, seq, string(reply))
	if err != nil {
		return fmt.Errorf("failed to mark inbox item %d applied: %w", seq, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("failed to mark inbox item %d applied: it is not pending", seq)
	}
	return nil
}

// MarkDone records that an item needs nothing more (its reply was sent, or
// it needed none).
func (s *Store) MarkDone(ctx context.Context, seq int64) error {
	if _, err := s.db.Exec(ctx, markDoneQuery, seq); err != nil {
		return fmt.Errorf("failed to mark inbox item %d done: %w", seq, err)
	}
	return nil
}

// Backlog returns how many inbox items are not done.
func (s *Store) Backlog(ctx context.Context) (int, error) {
	var n int
	if err := s.db.QueryRow(ctx, inboxStatsQuery).Scan(&n); err != nil {
		return 0, fmt.Errorf("failed to count inbox: %w", err)
	}
	return n, nil
}

// FirstReceipt returns when the first event ever stored arrived; ok is false
// while the inbox is empty. Commands older than that were never meant for
// this service (they predate it), so catch-up reads never go further back.
func (s *Store) FirstReceipt(ctx context.Context) (first time.Time, ok bool, err error) {
	return s.receipt(ctx, firstReceiptQuery)
}

// LastReceiptBefore returns when the last event stored before t arrived; ok
// is false if there is none. A restarted service's first catch-up begins
// there, as the previous run's catch-up may not have read that far.
func (s *Store) LastReceiptBefore(ctx context.Context, t time.Time) (last time.Time, ok bool, err error) {
	return s.receipt(ctx, lastReceiptQuery, t.UnixMilli())
}

func (s *Store) receipt(ctx context.Context, query string, args ...any) (time.Time, bool, error) {
	var ms int64
	err := s.db.QueryRow(ctx, query, args...).Scan(&ms)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, false, nil
	} else if err != nil {
		return time.Time{}, false, fmt.Errorf("failed to read the inbox: %w", err)
	}
	return time.UnixMilli(ms), true, nil
}
