// Package learner commits the users the routing API learns of, in
// batches: local users who sync and whom a group's pattern matches
// (rules.Known). Synapse lists its users nowhere a module or an
// appservice can read cheaply; get_interested_users, which it calls on
// every syncing user's /sync, is how presence-router learns them.
package learner

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/rules"
)

// MaxPending bounds the users waiting to be committed; past it, a user is
// dropped and learned at a later /sync of theirs.
const MaxPending = 100_000

// Store commits the batches (*store.Store).
type Store interface {
	Apply(ctx context.Context, m rules.Mutation) (rules.Result, error)
}

// Learner collects users to learn and commits them, at most one change
// per Interval: many users who start syncing at once (after a group with
// a pattern is created) make a few changes, not one each.
type Learner struct {
	store Store
	// committed applies a committed change to the router (the follower's
	// Committed).
	committed func(context.Context, *rules.Change) error
	sender    id.UserID
	log       *logrus.Entry
	// Interval is the least time between two commits.
	Interval time.Duration

	lock    sync.Mutex
	pending map[id.UserID]struct{}
	wake    chan struct{}
}

// New returns a learner that commits through st as sender and applies
// each change with committed.
func New(st Store, committed func(context.Context, *rules.Change) error, sender id.UserID, log *logrus.Entry) *Learner {
	return &Learner{store: st, committed: committed, sender: sender, log: log, Interval: 500 * time.Millisecond,
		pending: make(map[id.UserID]struct{}), wake: make(chan struct{}, 1)}
}

// Learn queues user to be committed as known. It never waits.
func (l *Learner) Learn(user id.UserID) {
	l.lock.Lock()
	if len(l.pending) < MaxPending {
		l.pending[user] = struct{}{}
	}
	l.lock.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Run commits the queued users until ctx ends.
func (l *Learner) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.wake:
		}
		if err := l.commit(ctx); err != nil && ctx.Err() == nil {
			// The users stay queued for the next try.
			l.log.WithError(err).Warn("Failed to record the users who started syncing; retrying")
			l.Learn("")
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(l.Interval):
		}
	}
}

// commit commits every queued user in one change.
func (l *Learner) commit(ctx context.Context) error {
	l.lock.Lock()
	delete(l.pending, "")
	users := slices.Sorted(maps.Keys(l.pending))
	l.lock.Unlock()
	if len(users) == 0 {
		return nil
	}
	m := rules.Mutation{Sender: l.sender, Command: rules.LearnedCommand}
	for _, u := range users {
		m.Entries = append(m.Entries, rules.Entry{List: rules.Known, UserID: u, Action: rules.Add})
	}
	res, err := l.store.Apply(ctx, m)
	if err != nil {
		return fmt.Errorf("failed to commit %d users: %w", len(users), err)
	}
	l.lock.Lock()
	for _, u := range users {
		delete(l.pending, u)
	}
	l.lock.Unlock()
	if res.Change == nil {
		return nil
	}
	l.log.WithFields(logrus.Fields{"users": len(res.Change.Entries), "version": res.Change.Version}).
		Info("Users matched by a group's pattern started syncing: they now receive and send presence through it")
	if err = l.committed(ctx, res.Change); err != nil {
		// The follower applies it at its next catch-up.
		l.log.WithError(err).Warn("Failed to apply the learned users at once; the next catch-up applies them")
	}
	return nil
}
