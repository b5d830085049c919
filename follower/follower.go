// Package follower keeps a router engine at the rules in the database:
// every committed change, whoever committed it (a command in this process
// or another, an import), reaches the engine exactly once and in version
// order, so that an engine never reports a version whose predecessors it
// has not applied.
package follower

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/presence-router/presence-router/router"
	"github.com/presence-router/presence-router/rules"
)

// Source is where committed changes are read (*store.Store).
type Source interface {
	// Version returns the version of the latest committed change.
	Version(ctx context.Context) (int64, error)
	// ChangesSince returns up to limit changes after version, oldest first.
	ChangesSince(ctx context.Context, version int64, limit int) ([]rules.Change, error)
	// ChangesBetween returns up to limit changes with a version above
	// after and below before, oldest first.
	ChangesBetween(ctx context.Context, after, before int64, limit int) ([]rules.Change, error)
	// LoadRules reads both lists and their version in one snapshot.
	LoadRules(ctx context.Context) (*rules.Snapshot, error)
	// RecentChanges returns up to limit of the newest changes, oldest first.
	RecentChanges(ctx context.Context, limit, maxEntries int) ([]rules.Change, error)
}

// DefaultMaxBehind is how many changes a follower applies one by one; an
// engine further behind reloads the rules instead (and says so in the log).
const DefaultMaxBehind = 1000

// Follower applies committed changes to an engine. It is safe for
// concurrent use: one change is applied at a time.
type Follower struct {
	// MaxBehind: past this many changes to apply, reload instead.
	MaxBehind int
	src       Source
	engine    *router.Engine
	log       *logrus.Entry
	lock      sync.Mutex
}

// New returns a follower that brings engine up to src.
func New(src Source, engine *router.Engine, log *logrus.Entry) *Follower {
	return &Follower{MaxBehind: DefaultMaxBehind, src: src, engine: engine, log: log}
}

// Load builds an engine for the homeserver named server from src: the
// rules at their version and the retained feed history.
func Load(ctx context.Context, src Source, server string) (*router.Engine, error) {
	snap, history, err := load(ctx, src)
	if err != nil {
		return nil, err
	}
	return router.LoadEngine(server, snap, history), nil
}

func load(ctx context.Context, src Source) (*rules.Snapshot, []rules.Update, error) {
	snap, err := src.LoadRules(ctx)
	if err != nil {
		return nil, nil, err
	}
	recent, err := src.RecentChanges(ctx, router.FeedLimit, router.MaxFeedSources)
	if err != nil {
		return nil, nil, err
	}
	history := make([]rules.Update, 0, len(recent))
	for i := range recent {
		// A change committed after the snapshot was read is left to the
		// follower: the engine applies it on top.
		if recent[i].Version <= snap.Version {
			history = append(history, recent[i].Update())
		}
	}
	return snap, history, nil
}

// Committed applies a change this process committed. Changes another
// process committed before it, which the engine has not applied yet, are
// read and applied first; a change the engine already has is ignored. On
// an error nothing is applied, and CatchUp (Run) applies the change later.
func (f *Follower) Committed(ctx context.Context, c *rules.Change) error {
	f.lock.Lock()
	defer f.lock.Unlock()
	if have := f.engine.Version(); have < c.Version-1 {
		missing, err := f.src.ChangesBetween(ctx, have, c.Version, f.MaxBehind+1)
		if err != nil {
			return fmt.Errorf("failed to read the changes before version %d: %w", c.Version, err)
		}
		if len(missing) > f.MaxBehind {
			return f.reload(ctx, have)
		}
		f.applyOthers(missing)
	}
	f.engine.Apply(c.Update())
	return nil
}

// CatchUp applies every change committed since the engine's version, in
// order, or reloads the rules when they are more than MaxBehind.
func (f *Follower) CatchUp(ctx context.Context) error {
	f.lock.Lock()
	defer f.lock.Unlock()
	have := f.engine.Version()
	latest, err := f.src.Version(ctx)
	if err != nil || latest <= have {
		return err
	}
	changes, err := f.src.ChangesSince(ctx, have, f.MaxBehind+1)
	if err != nil {
		return fmt.Errorf("failed to read the changes after version %d: %w", have, err)
	}
	if len(changes) > f.MaxBehind {
		return f.reload(ctx, have)
	}
	f.applyOthers(changes)
	return nil
}

// applyOthers applies changes read from the database, in order.
func (f *Follower) applyOthers(changes []rules.Change) {
	for i := range changes {
		f.engine.Apply(changes[i].Update())
		f.log.WithField("version", changes[i].Version).Info("Applied a change committed by another process")
	}
}

// reload replaces the engine's rules with the database's. The caller
// holds the lock.
func (f *Follower) reload(ctx context.Context, have int64) error {
	snap, history, err := load(ctx, f.src)
	if err != nil {
		return fmt.Errorf("failed to reload the rules: %w", err)
	}
	f.engine.Reload(snap, history)
	f.log.WithFields(logrus.Fields{"from_version": have, "version": snap.Version, "max_behind": f.MaxBehind}).
		Warn("Fell more than max_behind changes behind the database; reloaded the rules instead of applying each change")
	return nil
}

// Run calls CatchUp every interval and whenever wake receives (a
// notification that another process committed; nil: poll only), until ctx
// ends. Errors go to onError.
func (f *Follower) Run(ctx context.Context, interval time.Duration, wake <-chan struct{}, onError func(error)) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-wake:
		}
		if err := f.CatchUp(ctx); err != nil && ctx.Err() == nil {
			onError(err)
		}
	}
}
