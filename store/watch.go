package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

const changesSinceQuery = `
	SELECT version, COALESCE(event_id, ''), sender, command, reason, created_at, push_to
	FROM change WHERE version > $1 ORDER BY version LIMIT $2`

// ChangesSince returns up to limit changes after version, oldest first, with
// their entries.
func (s *Store) ChangesSince(ctx context.Context, version int64, limit int) ([]Change, error) {
	rows, err := s.db.Query(ctx, changesSinceQuery, version, limit)
	if err != nil {
		return nil, fmt.Errorf("failed to read changes: %w", err)
	}
	var changes []Change
	for rows.Next() {
		var c Change
		var createdAt int64
		var pushJSON string
		if err = rows.Scan(&c.Version, &c.EventID, &c.Sender, &c.Command, &c.Reason, &createdAt, &pushJSON); err != nil {
			_ = rows.Close()
			return nil, fmt.Errorf("failed to read change: %w", err)
		}
		c.CreatedAt = time.UnixMilli(createdAt).UTC()
		_ = json.Unmarshal([]byte(pushJSON), &c.PushTo)
		changes = append(changes, c)
	}
	_ = rows.Close()
	for i := range changes {
		if changes[i].Entries, err = s.entries(ctx, changes[i].Version); err != nil {
			return nil, err
		}
	}
	return changes, nil
}

// Watch polls for changes committed by other processes (for example an
// import while the service runs) and passes each one, in order, to apply.
// current returns the version the caller already has. It returns when ctx
// ends.
func (s *Store) Watch(ctx context.Context, interval time.Duration, current func() int64, apply func(Change), onError func(error)) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		latest, err := s.Version(ctx)
		if err != nil {
			onError(err)
			continue
		}
		for have := current(); latest > have && ctx.Err() == nil; have = current() {
			changes, err := s.ChangesSince(ctx, have, 1000)
			if err != nil {
				onError(err)
				break
			}
			if len(changes) == 0 {
				break
			}
			for _, c := range changes {
				apply(c)
			}
		}
	}
}
