// Package router evaluates the two presence-routing lists with the stock
// example router's semantics, serves the routing API the Synapse adapter
// consults, and keeps the change feed the adapter long-polls.
package router

import (
	"context"
	"encoding/json"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/rules"
	"github.com/presence-router/presence-router/userid"
)

// FeedLimit is how many changes the feed retains at least for `since`
// replays (up to twice as many between trims).
const FeedLimit = 10000

// State is one presence update as Synapse sends it; only UserID matters for
// routing.
type State struct {
	UserID id.UserID `json:"user_id"`
	State  string    `json:"state,omitempty"`
}

// FeedEntry is a retained change of the feed: what a client caching
// answers needs to know about it.
type FeedEntry struct {
	Version int64
	PushTo  []id.UserID
	// Sources are users whose own presence is routed differently now
	// (blacklist entries added or removed). AllSources: too many to list,
	// or not known.
	Sources    []id.UserID
	AllSources bool
	// DestinationsAdded and DestinationsRemoved are users who now receive,
	// or no longer receive, the presence of every routed user
	// (always-send entries added or removed).
	DestinationsAdded, DestinationsRemoved []id.UserID
	// AllInterested: the interested_users answers of group members may
	// have changed (a group, its members, the known users or, while
	// groups exist, the blacklist changed).
	AllInterested bool
}

// MaxFeedSources bounds the sources one change (and one answer of the
// feed) lists; past it, the feed says every source changed.
const MaxFeedSources = 10000

func isPattern(u id.UserID) bool { return userid.IsPattern(string(u)) }

// feedEntry is what the feed keeps of an update.
func (e *Engine) feedEntry(u rules.Update, pushTo []id.UserID) FeedEntry {
	f := FeedEntry{Version: u.Version, PushTo: pushTo, AllSources: u.EntriesOmitted}
	if n := len(u.AddBlacklist) + len(u.RemoveBlacklist); n > MaxFeedSources ||
		slices.ContainsFunc(u.AddBlacklist, isPattern) || slices.ContainsFunc(u.RemoveBlacklist, isPattern) {
		// A pattern changes the answers of users nobody can list.
		f.AllSources = true
	} else if n > 0 {
		f.Sources = slices.Concat(u.AddBlacklist, u.RemoveBlacklist)
	}
	if len(u.AddAlwaysSend)+len(u.RemoveAlwaysSend) > MaxFeedSources ||
		slices.ContainsFunc(u.AddAlwaysSend, e.remote) || slices.ContainsFunc(u.RemoveAlwaysSend, e.remote) {
		// A user on another server receives local users' presence only:
		// the other users' answers do not change by them.
		f.AllSources = true
	}
	f.DestinationsAdded, f.DestinationsRemoved = u.AddAlwaysSend, u.RemoveAlwaysSend
	if len(u.Groups) > 0 || len(u.AddKnown) > 0 || u.EntriesOmitted ||
		len(e.groups) > 0 && len(u.AddBlacklist)+len(u.RemoveBlacklist) > 0 {
		// Whom a member receives and who receives a member's presence
		// changed; which members, the feed does not say.
		f.AllSources, f.AllInterested = true, true
	}
	return f
}

// Explanation says where a user's presence goes and what the user receives.
type Explanation struct {
	Version     int64
	AlwaysSend  bool        // receives every non-blacklisted user's presence
	Blacklisted bool        // their presence is not routed
	Pattern     id.UserID   // the blacklist pattern that matched ("" when listed exactly)
	Recipients  []id.UserID // always-send users who receive their presence
	Groups      []GroupReach
	// Remote: the user is on another server. Their presence reaches only
	// the local always-send users; as an always-send user, they receive
	// only local users' presence.
	Remote bool
}

// Engine holds the live rules and the change feed. It is safe for
// concurrent use. Apply costs O(size of the change) for blacklist entries;
// an always-send change rebuilds, sorts and encodes the always-send list.
type Engine struct {
	// server is the homeserver's name: presence of users on other servers
	// goes to local users only ("" treats every user as local).
	server  string
	lock    sync.RWMutex
	version int64
	// exact holds what the lists say of each user named exactly: on the
	// blacklist (patterns too), and in which groups by ID; one lookup
	// answers both on the hot path. blacklistLen counts its blacklisted.
	exact        map[id.UserID]userRules
	blacklistLen int
	// patterns are the blacklist entries that are patterns, compiled into
	// one set; a pattern added or removed changes it in place.
	patterns *userid.Set
	// verdicts caches the set's answers for the current patterns.
	verdicts *verdictCache
	// alwaysSend is sorted and never mutated: Apply swaps in a new slice.
	alwaysSend    []id.UserID
	alwaysSendSet map[id.UserID]struct{}
	// localAlwaysSendJSON and remoteAlwaysSendJSON encode the always-send
	// users of this server and of others; both nil when every always-send
	// user is local.
	localAlwaysSendJSON, remoteAlwaysSendJSON []byte
	// alwaysSendJSON caches the JSON array of alwaysSend.
	alwaysSendJSON []byte
	// groups by name, their sorted names, and the local users known to
	// match a group's pattern (rules.Known).
	groups     map[rules.GroupName]*group
	groupNames []rules.GroupName
	groupList  []*group // by groupNames' order
	known      map[id.UserID]struct{}
	feed       []FeedEntry
	changed    chan struct{} // closed and replaced on every Apply
}

// NewEngine returns an engine for the homeserver named server at version
// with the given lists and retained feed history (oldest first, as Change.Update
// makes them). With server "", every user counts as local.
func NewEngine(server string, version int64, alwaysSend, blacklist []id.UserID, history []rules.Update) *Engine {
	return LoadEngine(server, &rules.Snapshot{Version: version, AlwaysSend: alwaysSend, Blacklist: blacklist}, history)
}

// LoadEngine returns an engine for the homeserver named server with the
// rules of snap and the retained feed history (as NewEngine).
func LoadEngine(server string, snap *rules.Snapshot, history []rules.Update) *Engine {
	e := &Engine{server: server, changed: make(chan struct{})}
	e.load(snap, history)
	return e
}

// Reload replaces the rules and the retained feed history (as NewEngine
// takes them), for an engine that fell too far behind to apply each change.
// Long polls wake up; a client whose since is no longer retained is told to
// reset.
func (e *Engine) Reload(snap *rules.Snapshot, history []rules.Update) {
	e.lock.Lock()
	defer e.lock.Unlock()
	e.load(snap, history)
	close(e.changed)
	e.changed = make(chan struct{})
}

// load sets the rules and the feed history. The caller holds the write
// lock, or is NewEngine.
func (e *Engine) load(snap *rules.Snapshot, history []rules.Update) {
	e.version = snap.Version
	e.exact = make(map[id.UserID]userRules, len(snap.Blacklist))
	e.blacklistLen = 0
	e.alwaysSendSet = make(map[id.UserID]struct{}, len(snap.AlwaysSend))
	var patterns []string
	for _, u := range snap.Blacklist {
		e.setBlacklisted(u, true)
		if isPattern(u) {
			patterns = append(patterns, string(u))
		}
	}
	e.patterns = userid.NewSet(patterns)
	e.forgetVerdicts()
	for _, u := range snap.AlwaysSend {
		e.alwaysSendSet[u] = struct{}{}
	}
	e.setAlwaysSend()
	e.known = make(map[id.UserID]struct{}, len(snap.Known))
	for _, u := range snap.Known {
		e.known[u] = struct{}{}
	}
	e.groups = make(map[rules.GroupName]*group, len(snap.Groups))
	for name, members := range snap.Groups {
		e.groups[name] = e.newGroupLocked()
		for _, u := range members {
			e.applyGroupEntry(rules.Entry{List: rules.GroupList(name), UserID: u, Action: rules.Add})
		}
	}
	e.resolveGroupsLocked()
	if len(history) > FeedLimit {
		history = history[len(history)-FeedLimit:]
	}
	e.feed = make([]FeedEntry, len(history))
	for i, u := range history {
		e.feed[i] = e.feedEntry(u, u.PushTo)
	}
}

func (e *Engine) setAlwaysSend() {
	list := make([]id.UserID, 0, len(e.alwaysSendSet))
	for u := range e.alwaysSendSet {
		list = append(list, u)
	}
	slices.Sort(list)
	e.alwaysSend = list
	e.alwaysSendJSON, _ = json.Marshal(list)
	e.localAlwaysSendJSON, e.remoteAlwaysSendJSON = nil, nil
	if slices.ContainsFunc(list, e.remote) {
		local := slices.DeleteFunc(slices.Clone(list), e.remote)
		remote := slices.DeleteFunc(slices.Clone(list), func(u id.UserID) bool { return !e.remote(u) })
		e.localAlwaysSendJSON, _ = json.Marshal(local)
		e.remoteAlwaysSendJSON, _ = json.Marshal(remote)
	}
}

// remote reports whether user is on another server. It reads only the
// server name, which never changes.
func (e *Engine) remote(user id.UserID) bool {
	return e.server != "" && user.Homeserver() != e.server
}

// reachesRemote is the rule's federation limit: whether a routed user's
// presence may go to always-send users on other servers. Only local users'
// may: a server accepts presence over federation only of its sender's own
// users, and Synapse refuses to push anything else.
func (e *Engine) reachesRemote(user id.UserID) bool { return !e.remote(user) }

// Apply applies a committed change. An update whose version is not above
// the current one is ignored.
func (e *Engine) Apply(u rules.Update) {
	e.lock.Lock()
	defer e.lock.Unlock()
	if u.Version <= e.version {
		return
	}
	patternsChanged := false
	for _, user := range u.AddBlacklist {
		e.setBlacklisted(user, true)
		if isPattern(user) {
			e.patterns.Add(string(user))
			patternsChanged = true
		}
	}
	for _, user := range u.RemoveBlacklist {
		e.setBlacklisted(user, false)
		if isPattern(user) {
			e.patterns.Remove(string(user))
			patternsChanged = true
		}
	}
	if patternsChanged {
		e.forgetVerdicts()
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
	for _, user := range u.AddKnown {
		e.known[user] = struct{}{}
	}
	for _, entry := range u.Groups {
		e.applyGroupEntry(entry)
	}
	if len(u.Groups) > 0 || len(e.groups) > 0 && (len(u.AddKnown) > 0 || len(u.AddBlacklist)+len(u.RemoveBlacklist) > 0) {
		e.resolveGroupsLocked()
	}
	e.version = u.Version
	pushTo := u.PushTo
	if u.PushToAllAlwaysSend {
		pushTo = e.alwaysSend // immutable: replaced, never changed in place
	}
	e.feed = append(e.feed, e.feedEntry(u, pushTo))
	if len(e.feed) >= 2*FeedLimit {
		// Trimmed in one go once it doubles, so a change costs O(1)
		// amortized instead of a copy of the whole feed.
		e.feed = slices.Clone(e.feed[len(e.feed)-FeedLimit:])
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

// routedLocked is the rule, the one place it is evaluated: a user's
// presence is routed to every always-send user unless the user is
// blacklisted, with one limit (reachesRemote): an always-send user on
// another server receives only local users' presence. The caller holds
// the lock.
func (e *Engine) routedLocked(user id.UserID) bool {
	return e.routedAsLocked(user, e.exact[user])
}

// routedAsLocked is routedLocked for a user whose exact entries (info) the
// caller looked up already. The caller holds the lock.
func (e *Engine) routedAsLocked(user id.UserID, info userRules) bool {
	if info.blacklisted {
		return false
	}
	return e.patterns.Len() == 0 || e.matchingPatternLocked(user) == ""
}

// forgetVerdicts makes the cached verdicts stale after the patterns
// changed: O(1), whatever the number of entries. The caller holds the write
// lock.
func (e *Engine) forgetVerdicts() {
	switch {
	case e.patterns.Len() == 0:
		// No pattern, nothing to cache: the table (2.5 MiB, which every
		// garbage collection scans) goes until a pattern comes.
		e.verdicts = nil
	case e.verdicts == nil:
		e.verdicts = newVerdictCache()
	default:
		e.verdicts.forget()
	}
}

// matchingPatternLocked returns the first pattern user matches (in sorted
// order), or "". The caller holds the lock (read or write).
func (e *Engine) matchingPatternLocked(user id.UserID) id.UserID {
	if e.verdicts == nil { // no pattern
		return ""
	}
	if match, ok := e.verdicts.get(user); ok {
		return match
	}
	p, _ := e.patterns.Match(string(user))
	e.verdicts.put(user, id.UserID(p))
	return id.UserID(p)
}

// verdictSlots is how many verdicts the cache holds: with user IDs of at
// most 255 bytes, at most about 20 MB, and about 6 MB with IDs of 40.
const verdictSlots = 1 << 16

// verdictShards is how many locks the verdict cache's slots share.
const verdictShards = 256

// verdictCache remembers which pattern, if any, a user matched, in a fixed
// table indexed by a hash of the user ID (a newer verdict replaces an older
// one in its slot): a lookup or a store costs one hash and allocates and
// grows nothing, so a user never seen before costs little more than the
// set's pass, and one asked about again costs less (BENCHMARKS.md). A
// pattern change starts a new generation (forget), which makes every
// verdict of the previous one stale at once.
type verdictCache struct {
	seed  maphash.Seed
	gen   atomic.Uint64
	locks [verdictShards]sync.Mutex
	slots []verdict
}

// verdict is one cached answer: user matched pattern ("" for none), in
// generation gen.
type verdict struct {
	user, pattern id.UserID
	gen           uint64
}

func newVerdictCache() *verdictCache {
	c := &verdictCache{seed: maphash.MakeSeed(), slots: make([]verdict, verdictSlots)}
	c.gen.Store(1)
	return c
}

// forget makes every cached verdict stale.
func (c *verdictCache) forget() { c.gen.Add(1) }

func (c *verdictCache) index(user id.UserID) uint64 {
	return maphash.String(c.seed, string(user)) & (verdictSlots - 1)
}

func (c *verdictCache) get(user id.UserID) (id.UserID, bool) {
	i := c.index(user)
	lock := &c.locks[i%verdictShards]
	lock.Lock()
	v := c.slots[i]
	lock.Unlock()
	return v.pattern, v.gen == c.gen.Load() && v.user == user
}

func (c *verdictCache) put(user, pattern id.UserID) {
	i := c.index(user)
	lock := &c.locks[i%verdictShards]
	lock.Lock()
	c.slots[i] = verdict{user, pattern, c.gen.Load()}
	lock.Unlock()
}

// RouteJSON is one route of a users_for_states answer: its recipients,
// already encoded, and the indices of the states they receive.
type RouteJSON struct {
	Users []byte
	// AllRecipients: Users are every always-send user (the single route
	// of the usual answer).
	AllRecipients bool
	// Group: a group's members, who need not be keys of the answer (they
	// are not answered ALL_USERS); Key names the route (groupRouteKey).
	Group   bool
	Key     string
	Indices []int
}

// usersForStatesJSON routes a batch of states for the routing API: it
// returns the version and fills the first n of routes, the caller's array
// (none when there are no always-send users, and then nothing is routed;
// the hot path allocates and copies nothing for them). Every always-send user is in one route, with no
// states when nothing is routed to them, because Synapse indexes the
// answer by each of them on their /sync. Usually there is one route; when
// remote states are routed and some always-send users are on other
// servers, those get a second route with the local states only
// (routeRemote).
//
// Groups add a route per group that a routed state's user is a member of
// (groupRoutes; nil when there are no groups).
func (e *Engine) usersForStatesJSON(states []State, routes *[2]RouteJSON) (version int64, n int, groupRoutes []RouteJSON) {
	e.lock.RLock()
	defer e.lock.RUnlock()
	if len(e.alwaysSend) == 0 && len(e.groups) == 0 {
		return e.version, 0, nil
	}
	indices := make([]int, 0, len(states))
	remoteRouted := false
	var groups groupRouter
	// The lookups first, in a loop of their own: their cache misses
	// overlap (a batch of up to 128 states, on the stack).
	var infoBuf [128]userRules
	var infos []userRules
	if len(e.exact) > 0 && len(states) <= len(infoBuf) {
		infos = infoBuf[:len(states)]
		for i, s := range states {
			infos[i] = e.exact[s.UserID]
		}
	}
	for i, s := range states {
		var info userRules
		if infos != nil {
			info = infos[i]
		} else {
			info = e.exact[s.UserID]
		}
		if !e.routedAsLocked(s.UserID, info) {
			continue
		}
		indices = append(indices, i)
		remoteRouted = remoteRouted || e.remoteAlwaysSendJSON != nil && !e.reachesRemote(s.UserID)
		if len(e.groupList) > 0 {
			groups.add(e, i, s.UserID, info, len(states))
		}
	}
	groupRoutes = groups.routes
	if len(e.alwaysSend) == 0 {
		return e.version, 0, groupRoutes
	}
	if !remoteRouted {
		routes[0] = RouteJSON{Users: e.alwaysSendJSON, AllRecipients: true, Indices: indices}
		return e.version, 1, groupRoutes
	}
	return e.version, e.routeRemote(states, indices, routes), groupRoutes
}

// routeRemote splits the routed states' indices between the local
// always-send users (all of them) and those on other servers (the local
// users' states only). The caller holds the lock.
func (e *Engine) routeRemote(states []State, indices []int, routes *[2]RouteJSON) int {
	local := make([]int, 0, len(indices))
	for _, i := range indices {
		if e.reachesRemote(states[i].UserID) {
			local = append(local, i)
		}
	}
	routes[0] = RouteJSON{Users: e.remoteAlwaysSendJSON, Indices: local}
	if string(e.localAlwaysSendJSON) == "[]" {
		return 1
	}
	routes[1] = RouteJSON{Users: e.localAlwaysSendJSON, Indices: indices}
	return 2
}

// InterestedUsers says whether user receives everyone's presence beyond
// shared rooms (an always-send user).
func (e *Engine) InterestedUsers(user id.UserID) (version int64, all bool) {
	version, all, _, _ = e.interestedJSON(user)
	return version, all
}

// interestedJSON is the interested_users answer: everyone's presence (an
// always-send user), or the users whose presence user receives through
// groups, encoded (nil for none); and, read under the same lock, whether
// user needs learning (NeedsLearning).
func (e *Engine) interestedJSON(user id.UserID) (version int64, all bool, users []byte, learn bool) {
	e.lock.RLock()
	defer e.lock.RUnlock()
	if len(e.groups) > 0 {
		learn = e.needsLearningLocked(user)
	}
	if _, all = e.alwaysSendSet[user]; all {
		return e.version, true, nil, learn
	}
	if len(e.groups) > 0 {
		users = e.groupInterestLocked(user)
	}
	return e.version, false, users, learn
}

// Rules returns the version and sorted copies of both lists.
func (e *Engine) Rules() (version int64, alwaysSend, blacklist []id.UserID) {
	e.lock.RLock()
	alwaysSend = e.alwaysSend
	version = e.version
	blacklist = make([]id.UserID, 0, e.blacklistLen)
	for u, r := range e.exact {
		if r.blacklisted {
			blacklist = append(blacklist, u)
		}
	}
	e.lock.RUnlock()
	slices.Sort(blacklist)
	return version, slices.Clone(alwaysSend), blacklist
}

// Patterns returns the blacklist's patterns, sorted: at most
// rules.MaxPatterns, whatever the number of exact entries.
func (e *Engine) Patterns() []string {
	e.lock.RLock()
	defer e.lock.RUnlock()
	return e.patterns.Patterns()
}

// AlwaysSend returns the always-send users, sorted. The slice is never
// changed (Apply replaces it); do not change it either.
func (e *Engine) AlwaysSend() []id.UserID {
	e.lock.RLock()
	defer e.lock.RUnlock()
	return e.alwaysSend
}

// Counts returns the size of each list, and how many of the blacklist's
// entries are patterns.
func (e *Engine) Counts() (alwaysSend, blacklist, patterns int) {
	e.lock.RLock()
	defer e.lock.RUnlock()
	return len(e.alwaysSend), e.blacklistLen, e.patterns.Len()
}

// Explain says where user's presence goes and what user receives.
func (e *Engine) Explain(user id.UserID) Explanation {
	e.lock.RLock()
	defer e.lock.RUnlock()
	ex := Explanation{Version: e.version, Remote: e.remote(user)}
	_, ex.AlwaysSend = e.alwaysSendSet[user]
	ex.Blacklisted = !e.routedLocked(user)
	if ex.Blacklisted && !e.exact[user].blacklisted {
		ex.Pattern = e.matchingPatternLocked(user)
	}
	if !ex.Blacklisted {
		ex.Recipients = slices.Clone(e.alwaysSend)
		if !e.reachesRemote(user) {
			ex.Recipients = slices.DeleteFunc(ex.Recipients, e.remote)
		}
	}
	_, known := e.known[user]
	e.groupsOfLocked(user, func(name rules.GroupName, g *group) {
		reach := GroupReach{Name: name}
		_, exact := g.exact[user]
		reach.Unknown = !exact && !known
		if !ex.Blacklisted && !reach.Unknown {
			recipients := g.members
			if ex.Remote {
				recipients = slices.DeleteFunc(slices.Clone(recipients), e.remote)
			}
			reach.Recipients = len(recipients)
			if slices.Contains(recipients, user) {
				reach.Recipients--
			}
		}
		ex.Groups = append(ex.Groups, reach)
	})
	return ex
}

// FeedAnswer is the change feed's answer: what changed after since.
type FeedAnswer struct {
	Version int64 `json:"version"`
	// PushTo: users who gained presence they did not get before, sorted.
	PushTo []id.UserID `json:"push_to"`
	// Reset: since is unknown or too old; drop every cached answer.
	Reset bool `json:"reset"`
	// Sources: users whose users_for_states answers changed (sorted), or
	// AllSources when they are too many to list.
	Sources    []id.UserID `json:"sources"`
	AllSources bool        `json:"all_sources"`
	// DestinationsAdded and DestinationsRemoved: users who now receive, or
	// no longer receive, the presence of every routed user (sorted; their
	// interested_users answers changed too).
	DestinationsAdded   []id.UserID `json:"destinations_added"`
	DestinationsRemoved []id.UserID `json:"destinations_removed"`
	// AllInterested: drop every cached interested_users answer (those of
	// group members changed).
	AllInterested bool `json:"all_interested"`
}

func emptyAnswer(version int64, reset bool) FeedAnswer {
	none := []id.UserID{}
	return FeedAnswer{Version: version, PushTo: none, Reset: reset, Sources: none, DestinationsAdded: none, DestinationsRemoved: none}
}

// Changes waits until the version is above since, or timeout passes, or ctx
// ends, and says what changed after since. It answers reset when since is
// nil, above the version, or older than the retained history.
func (e *Engine) Changes(ctx context.Context, since *int64, timeout time.Duration) FeedAnswer {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		e.lock.RLock()
		version, changed := e.version, e.changed
		switch {
		case since == nil || *since > version || e.tooOld(*since):
			e.lock.RUnlock()
			return emptyAnswer(version, true)
		case *since < version:
			answer := e.changesSince(*since)
			e.lock.RUnlock()
			return answer
		}
		e.lock.RUnlock()
		select {
		case <-changed:
		case <-timer.C:
			return emptyAnswer(version, false)
		case <-ctx.Done():
			return emptyAnswer(version, false)
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

// changesSince sums up the retained changes after since.
func (e *Engine) changesSince(since int64) FeedAnswer {
	start, _ := slices.BinarySearchFunc(e.feed, since+1, func(f FeedEntry, v int64) int {
		switch {
		case f.Version < v:
			return -1
		case f.Version > v:
			return 1
		}
		return 0
	})
	answer := emptyAnswer(e.version, false)
	pushTo := make(map[id.UserID]struct{})
	sources := make(map[id.UserID]struct{})
	// Net destination changes: the last change of each user wins.
	destinations := make(map[id.UserID]bool)
	for _, f := range e.feed[start:] {
		for _, u := range f.PushTo {
			pushTo[u] = struct{}{}
		}
		answer.AllSources = answer.AllSources || f.AllSources
		answer.AllInterested = answer.AllInterested || f.AllInterested
		if !answer.AllSources {
			for _, u := range f.Sources {
				sources[u] = struct{}{}
			}
			answer.AllSources = len(sources) > MaxFeedSources
		}
		for _, u := range f.DestinationsAdded {
			destinations[u] = true
		}
		for _, u := range f.DestinationsRemoved {
			destinations[u] = false
		}
	}
	answer.PushTo = sortedKeys(pushTo)
	if !answer.AllSources {
		answer.Sources = sortedKeys(sources)
	}
	for u, added := range destinations {
		if added {
			answer.DestinationsAdded = append(answer.DestinationsAdded, u)
		} else {
			answer.DestinationsRemoved = append(answer.DestinationsRemoved, u)
		}
	}
	slices.Sort(answer.DestinationsAdded)
	slices.Sort(answer.DestinationsRemoved)
	return answer
}

func sortedKeys(set map[id.UserID]struct{}) []id.UserID {
	out := make([]id.UserID, 0, len(set))
	for u := range set {
		out = append(out, u)
	}
	slices.Sort(out)
	return out
}
