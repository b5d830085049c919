// Package router evaluates the two presence-routing lists with the stock
// example router's semantics, serves the routing API the Synapse adapter
// consults, and keeps the change feed the adapter long-polls.
package router

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"
)

// feedLimit is how many changes the feed retains at least for `since`
// replays (up to twice as many between trims).
const feedLimit = 10000

// State is one presence update as Synapse sends it; only UserID matters for
// routing.
type State struct {
	UserID id.UserID `json:"user_id"`
	State  string    `json:"state,omitempty"`
}

// Route is a group of destination users who receive the same states, given
// as indices into the request's states.
type Route struct {
	Users  []id.UserID `json:"users"`
	States []int       `json:"states"`
}

// Update is one committed rule change.
type Update struct {
	Version                         int64
	AddAlwaysSend, RemoveAlwaysSend []id.UserID
	AddBlacklist, RemoveBlacklist   []id.UserID
	PushTo                          []id.UserID // users who gained presence
	// PushToAllAlwaysSend: every always-send user after this update gained
	// presence (a user left the blacklist); PushTo is then ignored.
	PushToAllAlwaysSend bool
}

// FeedEntry is a retained change of the feed.
type FeedEntry struct {
	Version int64
	PushTo  []id.UserID
}

// Explanation says where a user's presence goes and what the user receives.
type Explanation struct {
	Version     int64
	AlwaysSend  bool        // receives every non-blacklisted user's presence
	Blacklisted bool        // their presence is not routed
	Recipients  []id.UserID // always-send users who receive their presence
}

// Engine holds the live rules and the change feed. It is safe for
// concurrent use. Apply costs O(size of the change), whatever the size of
// the lists.
type Engine struct {
	lock      sync.RWMutex
	version   int64
	blacklist map[id.UserID]struct{}
	// alwaysSend is sorted and never mutated: Apply swaps in a new slice.
	alwaysSend    []id.UserID
	alwaysSendSet map[id.UserID]struct{}
	// alwaysSendJSON caches the JSON array of alwaysSend.
	alwaysSendJSON []byte
	feed           []FeedEntry
	changed        chan struct{} // closed and replaced on every Apply
}

// NewEngine returns an engine at version with the given lists and retained
// feed history (oldest first).
func NewEngine(version int64, alwaysSend, blacklist []id.UserID, history []FeedEntry) *Engine {
	e := &Engine{
		version:       version,
		blacklist:     make(map[id.UserID]struct{}, len(blacklist)),
		alwaysSendSet: make(map[id.UserID]struct{}, len(alwaysSend)),
		changed:       make(chan struct{}),
	}
	for _, u := range blacklist {
		e.blacklist[u] = struct{}{}
	}
	for _, u := range alwaysSend {
		e.alwaysSendSet[u] = struct{}{}
	}
	e.setAlwaysSend()
	if len(history) > feedLimit {
		history = history[len(history)-feedLimit:]
	}
	e.feed = slices.Clone(history)
	return e
}

func (e *Engine) setAlwaysSend() {
	list := make([]id.UserID, 0, len(e.alwaysSendSet))
	for u := range e.alwaysSendSet {
		list = append(list, u)
	}
	slices.Sort(list)
	e.alwaysSend = list
	e.alwaysSendJSON, _ = json.Marshal(list)
}

// Apply applies a committed change. An update whose version is not above
// the current one is ignored.
func (e *Engine) Apply(u Update) {
	e.lock.Lock()
	defer e.lock.Unlock()
	if u.Version <= e.version {
		return
	}
	for _, user := range u.AddBlacklist {
		e.blacklist[user] = struct{}{}
	}
	for _, user := range u.RemoveBlacklist {
		delete(e.blacklist, user)
	}
	if len(u.AddAlwaysSend)+len(u.RemoveAlwaysSend) > 0 {
		for _, user := range u.AddAlwaysSend {
			e.alwaysSendSet[user] = struct{}{}
		}
		for _, user := range u.RemoveAlwaysSend {
			delete(e.alwaysSendSet, user)
		}
		e.setAlwaysSend()
	}
	e.version = u.Version
	pushTo := u.PushTo
	if u.PushToAllAlwaysSend {
		pushTo = e.alwaysSend // immutable: replaced, never changed in place
	}
	e.feed = append(e.feed, FeedEntry{Version: u.Version, PushTo: pushTo})
	if len(e.feed) >= 2*feedLimit {
		// Trimmed in one go once it doubles, so a change costs O(1)
		// amortized instead of a copy of the whole feed.
		e.feed = slices.Clone(e.feed[len(e.feed)-feedLimit:])
	}
	close(e.changed)
	e.changed = make(chan struct{})
}

// Version returns the current version.
func (e *Engine) Version() int64 {
	e.lock.RLock()
	defer e.lock.RUnlock()
	return e.version
}

// UsersForStates routes a batch of states: every state whose user is not
// blacklisted goes to every always-send user. Every always-send user is in
// the single route, with no states when nothing is routed, because Synapse
// indexes the answer by each of them on their /sync. With no always-send
// users there are no routes.
func (e *Engine) UsersForStates(states []State) (int64, []Route) {
	version, users, indices := e.evaluate(states)
	if len(users) == 0 {
		return version, []Route{}
	}
	return version, []Route{{Users: users, States: indices}}
}

// evaluate returns the version, the always-send users and the indices of
// the routed states.
func (e *Engine) evaluate(states []State) (int64, []id.UserID, []int) {
	e.lock.RLock()
	defer e.lock.RUnlock()
	indices := make([]int, 0, len(states))
	if len(e.alwaysSend) > 0 {
		for i, s := range states {
			if _, blocked := e.blacklist[s.UserID]; !blocked {
				indices = append(indices, i)
			}
		}
	}
	return e.version, e.alwaysSend, indices
}

// usersForStatesJSON is UsersForStates with the always-send users already
// encoded, for the HTTP layer.
func (e *Engine) usersForStatesJSON(states []State) (int64, []byte, []int) {
	e.lock.RLock()
	defer e.lock.RUnlock()
	if len(e.alwaysSend) == 0 {
		return e.version, nil, nil
	}
	indices := make([]int, 0, len(states))
	for i, s := range states {
		if _, blocked := e.blacklist[s.UserID]; !blocked {
			indices = append(indices, i)
		}
	}
	return e.version, e.alwaysSendJSON, indices
}

// InterestedUsers says whose presence user receives beyond shared rooms:
// everyone (all) for an always-send user, nobody else.
func (e *Engine) InterestedUsers(user id.UserID) (version int64, all bool, users []id.UserID) {
	e.lock.RLock()
	defer e.lock.RUnlock()
	_, all = e.alwaysSendSet[user]
	return e.version, all, []id.UserID{}
}

// Rules returns the version and sorted copies of both lists.
func (e *Engine) Rules() (version int64, alwaysSend, blacklist []id.UserID) {
	e.lock.RLock()
	alwaysSend = e.alwaysSend
	version = e.version
	blacklist = make([]id.UserID, 0, len(e.blacklist))
	for u := range e.blacklist {
		blacklist = append(blacklist, u)
	}
	e.lock.RUnlock()
	slices.Sort(blacklist)
	return version, slices.Clone(alwaysSend), blacklist
}

// Counts returns the size of each list.
func (e *Engine) Counts() (alwaysSend, blacklist int) {
	e.lock.RLock()
	defer e.lock.RUnlock()
	return len(e.alwaysSend), len(e.blacklist)
}

// Explain says where user's presence goes and what user receives.
func (e *Engine) Explain(user id.UserID) Explanation {
	e.lock.RLock()
	defer e.lock.RUnlock()
	ex := Explanation{Version: e.version}
	_, ex.AlwaysSend = e.alwaysSendSet[user]
	_, ex.Blacklisted = e.blacklist[user]
	if !ex.Blacklisted {
		ex.Recipients = slices.Clone(e.alwaysSend)
	}
	return ex
}

// Changes waits until the version is above since, or timeout passes, or ctx
// ends. It returns the version, the sorted users who gained presence in the
// changes after since, and reset when since is nil, above the version, or
// older than the retained history.
func (e *Engine) Changes(ctx context.Context, since *int64, timeout time.Duration) (version int64, pushTo []id.UserID, reset bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		e.lock.RLock()
		version, changed := e.version, e.changed
		switch {
		case since == nil || *since > version || e.tooOld(*since):
			e.lock.RUnlock()
			return version, []id.UserID{}, true
		case *since < version:
			pushTo = e.pushToSince(*since)
			e.lock.RUnlock()
			return version, pushTo, false
		}
		e.lock.RUnlock()
		select {
		case <-changed:
		case <-timer.C:
			return version, []id.UserID{}, false
		case <-ctx.Done():
			return version, []id.UserID{}, false
		}
	}
}

// tooOld reports whether changes after since are no longer all retained.
func (e *Engine) tooOld(since int64) bool {
	if since >= e.version {
		return false
	}
	return len(e.feed) == 0 || e.feed[0].Version > since+1
}

func (e *Engine) pushToSince(since int64) []id.UserID {
	start, _ := slices.BinarySearchFunc(e.feed, since+1, func(f FeedEntry, v int64) int {
		switch {
		case f.Version < v:
			return -1
		case f.Version > v:
			return 1
		}
		return 0
	})
	seen := make(map[id.UserID]struct{})
	out := []id.UserID{}
	for _, f := range e.feed[start:] {
		for _, u := range f.PushTo {
			if _, ok := seen[u]; !ok {
				seen[u] = struct{}{}
				out = append(out, u)
			}
		}
	}
	slices.Sort(out)
	return out
}
