package store

import (
	"context"
	"time"

	"github.com/presence-router/presence-router/rules"
)

const changesSinceQuery = `
	SELECT version, COALESCE(event_id, ''), sender, command, reason, created_at, push_to
	FROM change WHERE version > $1 ORDER BY version LIMIT $2`

// ChangesSince returns up to limit changes after version, oldest first, with
// their entries.
func (s *Store) ChangesSince(ctx context.Context, version int64, limit int) ([]rules.Change, error) {
	return s.queryChanges(ctx, changesSinceQuery, version, limit)
}

// Watch polls for changes committed by other processes (for example an
// import while the service runs) and passes each one, in order, to apply.
// current returns the version the caller already has. It returns when ctx
// ends.
func (s *Store) Watch(ctx context.Context, interval time.Duration, current func() int64, apply func(rules.Change), onError func(error)) {
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
