package router

import (
	"encoding/json"
	"maps"
	"slices"

	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/rules"
	"github.com/presence-router/presence-router/userid"
)

// groupBits is a set of groups by slot (at most 128 >= rules.MaxGroups).
type groupBits [2]uint64

func (b *groupBits) set(slot int, on bool) {
	if on {
		b[slot/64] |= 1 << (slot % 64)
	} else {
		b[slot/64] &^= 1 << (slot % 64)
	}
}

func (b groupBits) has(slot int) bool { return b[slot/64]&(1<<(slot%64)) != 0 }

// userRules is what the lists say of one user named exactly.
type userRules struct {
	blacklisted bool
	groups      groupBits // the groups that list the user by ID
}

// setBlacklisted puts user (or a pattern) on the blacklist or takes them
// off. The caller holds the write lock.
func (e *Engine) setBlacklisted(user id.UserID, on bool) {
	r := e.exact[user]
	if r.blacklisted == on {
		return
	}
	r.blacklisted = on
	if on {
		e.blacklistLen++
	} else {
		e.blacklistLen--
	}
	e.setRules(user, r)
}

// setRules stores r for user, dropping a user the lists no longer name.
func (e *Engine) setRules(user id.UserID, r userRules) {
	if !r.blacklisted && r.groups == (groupBits{}) {
		delete(e.exact, user)
	} else {
		e.exact[user] = r
	}
}

// group is one group as the engine evaluates it: its members as listed,
// and resolved against the known users.
type group struct {
	slot     int                    // its bit in userRules.groups
	exact    map[id.UserID]struct{} // members listed by ID
	patterns *userid.Set            // members listed as patterns
	// members are the exact members and the known users a pattern
	// matches, sorted: who receives a member's presence.
	members []id.UserID
	// membersJSON encodes members, localJSON the local ones (who receive
	// the presence of a member on another server).
	membersJSON, localJSON []byte
	// routed are the members whose presence is routed (not blacklisted),
	// sorted, and routedJSON encodes them: what a member receives through
	// the group (their interested_users answer when in this group only).
	routed     []id.UserID
	routedJSON []byte
	// allLocal: every member is on this server (localJSON is membersJSON).
	allLocal bool
}

// newGroupLocked makes a group with the first free slot (the store allows
// at most rules.MaxGroups). The caller holds the write lock.
func (e *Engine) newGroupLocked() *group {
	var used groupBits
	for _, g := range e.groups {
		used.set(g.slot, true)
	}
	slot := 0
	for slot < 127 && used.has(slot) {
		slot++
	}
	return &group{slot: slot, exact: make(map[id.UserID]struct{}), patterns: userid.NewSet(nil)}
}

// has says whether user, of whom the lists say info, is a member, listed
// or matched by a pattern (known or not).
func (g *group) has(user id.UserID, info userRules) bool {
	if info.groups.has(g.slot) {
		return true
	}
	if g.patterns.Len() == 0 {
		return false
	}
	_, ok := g.patterns.Match(string(user))
	return ok
}

// applyGroupEntry applies one entry of a group's list. The caller holds the
// write lock and resolves the groups after.
func (e *Engine) applyGroupEntry(entry rules.Entry) {
	name, _ := entry.List.Group()
	g := e.groups[name]
	switch {
	case entry.UserID == "" && entry.Action == rules.Add:
		if g == nil {
			e.groups[name] = e.newGroupLocked()
		}
	case entry.UserID == "":
		if g != nil {
			for u := range g.exact {
				e.setMember(g, u, false)
			}
		}
		delete(e.groups, name)
	case g == nil:
		// A member of a group that does not exist: the store refuses it.
	case entry.Action == rules.Add && isPattern(entry.UserID):
		g.patterns.Add(string(entry.UserID))
	case entry.Action == rules.Add:
		e.setMember(g, entry.UserID, true)
	case isPattern(entry.UserID):
		g.patterns.Remove(string(entry.UserID))
	default:
		e.setMember(g, entry.UserID, false)
	}
}

// setMember lists user in g by ID, or not. The caller holds the write lock.
func (e *Engine) setMember(g *group, user id.UserID, on bool) {
	if on {
		g.exact[user] = struct{}{}
	} else {
		delete(g.exact, user)
	}
	r := e.exact[user]
	r.groups.set(g.slot, on)
	e.setRules(user, r)
}

// resolveGroupsLocked recomputes every group's members from its entries,
// the known users and the blacklist. The caller holds the write lock.
func (e *Engine) resolveGroupsLocked() {
	e.groupNames = slices.Sorted(maps.Keys(e.groups))
	e.groupList = make([]*group, len(e.groupNames))
	for i, name := range e.groupNames {
		e.groupList[i] = e.groups[name]
	}
	for _, g := range e.groups {
		members := make(map[id.UserID]struct{}, len(g.exact))
		maps.Copy(members, g.exact)
		if g.patterns.Len() > 0 {
			for u := range e.known {
				if _, ok := g.patterns.Match(string(u)); ok {
					members[u] = struct{}{}
				}
			}
		}
		g.members = slices.Sorted(maps.Keys(members))
		g.membersJSON = encodeUsers(g.members)
		g.localJSON = g.membersJSON
		g.allLocal = !slices.ContainsFunc(g.members, e.remote)
		if !g.allLocal {
			g.localJSON = encodeUsers(slices.DeleteFunc(slices.Clone(g.members), e.remote))
		}
		g.routed = slices.DeleteFunc(slices.Clone(g.members), func(u id.UserID) bool { return !e.routedLocked(u) })
		g.routedJSON = encodeUsers(g.routed)
	}
}

// groupsOfLocked calls f with each group user is a member of, by name.
// The caller holds the lock.
func (e *Engine) groupsOfLocked(user id.UserID, f func(name rules.GroupName, g *group)) {
	info := e.exact[user]
	for i, g := range e.groupList {
		if g.has(user, info) {
			f(e.groupNames[i], g)
		}
	}
}

// groupRouter builds the group part of a users_for_states answer: for
// each group that a routed state's user is a member of, a route to its
// members (the local ones, for a user on another server) with the indices
// of those states.
type groupRouter struct {
	routes []RouteJSON
}

// add routes the state at index i, of user, of whom the lists say info,
// through the user's groups (n states in all). The caller holds the lock.
func (r *groupRouter) add(e *Engine, i int, user id.UserID, info userRules, n int) {
	for gi, g := range e.groupList {
		if !g.has(user, info) {
			continue
		}
		// A group of local members routes every member's presence alike.
		users, remote := g.membersJSON, !g.allLocal && e.remote(user)
		if remote {
			users = g.localJSON
		}
		if len(users) <= len("[]") {
			continue
		}
		key := groupRouteKey(e.groupNames[gi], remote)
		k := len(r.routes) - 1
		for k >= 0 && r.routes[k].Key != key {
			k--
		}
		if k < 0 {
			r.routes = append(r.routes, RouteJSON{Users: users, Group: true, Key: key, Indices: make([]int, 0, n)})
			k = len(r.routes) - 1
		}
		r.routes[k].Indices = append(r.routes[k].Indices, i)
	}
}

// groupRouteKey names a group's route in users_for_states answers: the
// group's name, with "/local" for its local members only (the recipients
// of a remote member's presence). A client that holds a route's users at
// a version names it in known_groups, and is not sent them again.
func groupRouteKey(name rules.GroupName, localOnly bool) string {
	if localOnly {
		return string(name) + "/local"
	}
	return string(name)
}

// groupInterestLocked is what user receives through groups, encoded: nil
// for nothing, one group's routed members when user is in one group, and
// their union when in several. The caller holds the lock.
func (e *Engine) groupInterestLocked(user id.UserID) []byte {
	var in []*group
	e.groupsOfLocked(user, func(_ rules.GroupName, g *group) { in = append(in, g) })
	switch len(in) {
	case 0:
		return nil
	case 1:
		return in[0].routedJSON
	}
	union := make(map[id.UserID]struct{})
	for _, g := range in {
		for _, u := range g.routed {
			union[u] = struct{}{}
		}
	}
	return encodeUsers(slices.Sorted(maps.Keys(union)))
}

// encodeUsers encodes users as a JSON array ("[]" for none, never null).
func encodeUsers(users []id.UserID) []byte {
	if len(users) == 0 {
		return []byte("[]")
	}
	out, _ := json.Marshal(users)
	return out
}

// NeedsLearning says whether user is a local user whom a group's pattern
// matches but who is not known yet: learning them makes them receive and
// send presence through that group.
func (e *Engine) NeedsLearning(user id.UserID) bool {
	e.lock.RLock()
	defer e.lock.RUnlock()
	return e.needsLearningLocked(user)
}

// needsLearningLocked is NeedsLearning; the caller holds the lock.
func (e *Engine) needsLearningLocked(user id.UserID) bool {
	if e.remote(user) || len(e.groups) == 0 {
		return false
	}
	if _, ok := e.known[user]; ok {
		return false
	}
	for _, g := range e.groups {
		if g.patterns.Len() > 0 {
			if _, ok := g.patterns.Match(string(user)); ok {
				return true
			}
		}
	}
	return false
}

// GroupInfo describes one group for its listing.
type GroupInfo struct {
	Name     rules.GroupName
	Users    []id.UserID // members listed by ID, sorted
	Patterns []id.UserID // members listed as patterns, sorted
	// Members counts the members it routes between: the users listed and
	// the known users a pattern matches.
	Members int
}

// Groups describes every group, by name.
func (e *Engine) Groups() []GroupInfo {
	e.lock.RLock()
	defer e.lock.RUnlock()
	out := make([]GroupInfo, 0, len(e.groupNames))
	for _, name := range e.groupNames {
		g := e.groups[name]
		patterns := g.patterns.Patterns()
		info := GroupInfo{Name: name, Users: slices.Sorted(maps.Keys(g.exact)), Patterns: make([]id.UserID, len(patterns)), Members: len(g.members)}
		for i, p := range patterns {
			info.Patterns[i] = id.UserID(p)
		}
		out = append(out, info)
	}
	return out
}

// KnownCount is how many users are known to match a group's pattern.
func (e *Engine) KnownCount() int {
	e.lock.RLock()
	defer e.lock.RUnlock()
	return len(e.known)
}

// GroupReach is one group of a user in an Explanation.
type GroupReach struct {
	Name rules.GroupName
	// Recipients counts the other members who receive the user's presence
	// through it (0 when it is not routed).
	Recipients int
	// Unknown: a pattern matches the user, who is not known yet (they have
	// not synced since), so the other members do not receive their
	// presence through it yet.
	Unknown bool
}
