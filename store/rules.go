package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/rules"
	"github.com/presence-router/presence-router/userid"
)

const (
	getVersionQuery   = `SELECT COALESCE(MAX(version), 0) FROM change`
	getRulesQuery     = `SELECT list, user_id FROM rule ORDER BY list, user_id`
	ruleExistsQuery   = `SELECT EXISTS(SELECT 1 FROM rule WHERE list=$1 AND user_id=$2)`
	insertRuleQuery   = `INSERT INTO rule (list, user_id, version, reason) VALUES ($1, $2, $3, $4)`
	exportQuery       = `SELECT list, user_id, reason FROM rule WHERE list IN ('always_send', 'blacklist') OR list LIKE 'group:%' ORDER BY list, user_id`
	groupMembersQuery = `SELECT user_id FROM rule WHERE list=$1 AND user_id <> '' ORDER BY user_id`
	countGroupsQuery  = `SELECT COUNT(*) FROM rule WHERE list LIKE 'group:%' AND user_id = ''`
	knownQuery        = `SELECT user_id FROM rule WHERE list='known'`
	ruleAddedByQuery  = `SELECT change.sender FROM rule JOIN change ON change.version = rule.version WHERE rule.list=$1 AND rule.user_id=$2`
	alwaysSendQuery   = `SELECT user_id FROM rule WHERE list='always_send'`
	groupRowsQuery    = `SELECT list, user_id FROM rule WHERE list LIKE 'group:%'`
	deleteRuleQuery   = `DELETE FROM rule WHERE list=$1 AND user_id=$2`
	insertEntryQuery  = `INSERT INTO change_entry (version, list, user_id, action) VALUES ($1, $2, $3, $4)`
	insertChangeQuery = `
		INSERT INTO change (event_id, sender, command, reason, created_at)
		VALUES ($1, $2, $3, $4, $5) RETURNING version`
	setPushToQuery = `UPDATE change SET push_to=$1 WHERE version=$2`
	// setPushToAll*: push_to becomes every always-send user, sorted.
	setPushToAllSQLite   = `UPDATE change SET push_to=(SELECT json_group_array(user_id ORDER BY user_id) FROM rule WHERE list='always_send') WHERE version=$1`
	setPushToAllPostgres = `UPDATE change SET push_to=(SELECT COALESCE(json_agg(user_id ORDER BY user_id), '[]')::text FROM rule WHERE list='always_send') WHERE version=$1`
	countAlwaysSendQuery = `SELECT COUNT(*) FROM rule WHERE list='always_send'`
	// countPatternsQuery's condition is rule_patterns_idx's (upgrade 04), so
	// that it reads the index of the few patterns, not every entry.
	countPatternsQuery = `SELECT COUNT(*) FROM rule WHERE (user_id LIKE '%*%' OR user_id LIKE '%?%') AND list='blacklist'`
	// countGroupPatternsQuery counts the patterns of every group together.
	countGroupPatternsQuery = `SELECT COUNT(*) FROM rule WHERE (user_id LIKE '%*%' OR user_id LIKE '%?%') AND list LIKE 'group:%'`
	recentChangesQuery      = `SELECT version, push_to FROM change ORDER BY version DESC LIMIT $1`
	// The entries of the changes from $1 on, but those of a change with more
	// than $2 entries.
	recentEntriesQuery = `
		SELECT version, list, user_id, action FROM change_entry
		WHERE version >= $1 AND version NOT IN (
			SELECT version FROM change_entry WHERE version >= $1 GROUP BY version HAVING COUNT(*) > $2)
		ORDER BY version`
	// historyQuery leaves out the changes that only learned users
	// (rules.LearnedCommand).
	historyQuery = `
		SELECT version, COALESCE(event_id, ''), sender, command, reason, created_at, push_to
		FROM change WHERE command <> '` + rules.LearnedCommand + `' ORDER BY version DESC LIMIT $1`
	entriesQuery = `SELECT list, user_id, action FROM change_entry WHERE version=$1 ORDER BY action, list, user_id`
	changeQuery  = `
		SELECT version, COALESCE(event_id, ''), sender, command, reason, created_at, push_to
		FROM change WHERE version=$1`
	laterTouchQuery = `SELECT COALESCE(MIN(version), 0) FROM change_entry WHERE version > $1 AND list = $2 AND user_id = $3`
	// laterGroupTouchQuery: a group's own entry is touched by any later
	// change of the group or its members.
	laterGroupTouchQuery = `SELECT COALESCE(MIN(version), 0) FROM change_entry WHERE version > $1 AND list = $2`
)

// LoadRules reads both lists and the current version in one snapshot.
func (s *Store) LoadRules(ctx context.Context) (*rules.Snapshot, error) {
	snap := &rules.Snapshot{}
	err := s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if err := s.db.QueryRow(ctx, getVersionQuery).Scan(&snap.Version); err != nil {
			return fmt.Errorf("failed to read version: %w", err)
		}
		rows, err := s.db.Query(ctx, getRulesQuery)
		if err != nil {
			return fmt.Errorf("failed to read rules: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var list rules.List
			var user id.UserID
			if err = rows.Scan(&list, &user); err != nil {
				return fmt.Errorf("failed to read rule: %w", err)
			}
			switch name, group := list.Group(); {
			case group:
				if snap.Groups == nil {
					snap.Groups = make(map[rules.GroupName][]id.UserID)
				}
				members := snap.Groups[name]
				if user != "" {
					members = append(members, user)
				}
				snap.Groups[name] = members
			case list == rules.AlwaysSend:
				snap.AlwaysSend = append(snap.AlwaysSend, user)
			case list == rules.Known:
				snap.Known = append(snap.Known, user)
			default:
				snap.Blacklist = append(snap.Blacklist, user)
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	return snap, nil
}

// Version returns the version of the latest committed change, 0 if none.
func (s *Store) Version(ctx context.Context) (int64, error) {
	var version int64
	if err := s.db.QueryRow(ctx, getVersionQuery).Scan(&version); err != nil {
		return 0, fmt.Errorf("failed to read version: %w", err)
	}
	return version, nil
}

// Apply commits a mutation: the rule rows, a change row with its entries
// and push_to, all in one transaction (the caller's, when ctx carries one).
// Entries that change nothing are reported in Result.Unchanged; when no
// entry changes anything, no change row is written and the version stays.
func (s *Store) Apply(ctx context.Context, m rules.Mutation) (rules.Result, error) {
	var res rules.Result
	err := s.InTxn(ctx, func(ctx context.Context) error {
		res = rules.Result{}
		var effective []rules.Entry
		seen := make(map[rules.Entry]bool, len(m.Entries))
		// groupNow: groups created (true) or deleted (false) by the entries
		// before, in this mutation.
		groupNow := make(map[rules.List]bool)
		exists := func(e rules.Entry) (bool, error) {
			if now, ok := groupNow[e.List]; ok && e.UserID == "" {
				return now, nil
			}
			var have bool
			if err := s.db.QueryRow(ctx, ruleExistsQuery, e.List, e.UserID).Scan(&have); err != nil {
				return false, fmt.Errorf("failed to read rule: %w", err)
			}
			return have, nil
		}
		for _, e := range m.Entries {
			group, isGroup := e.List.Group()
			switch {
			case isGroup:
				if name, err := rules.ParseGroupName(string(group)); err != nil || name != group {
					return fmt.Errorf("failed to apply: %q: %w", group, rules.ErrBadGroupName)
				}
			case e.List != rules.AlwaysSend && e.List != rules.Blacklist && e.List != rules.Known:
				return fmt.Errorf("failed to apply: unknown list %q", e.List)
			case e.UserID == "":
				return fmt.Errorf("failed to apply: an entry of %s without a user", e.List)
			}
			if seen[e] {
				continue
			}
			seen[e] = true
			if isGroup && e.UserID != "" {
				ok, err := exists(rules.GroupEntry(group, rules.Add))
				if err != nil {
					return err
				}
				if !ok {
					return fmt.Errorf("failed to apply: %w: %s", rules.ErrNoSuchGroup, group)
				}
			}
			have, err := exists(e)
			if err != nil {
				return err
			}
			if have == (e.Action == rules.Add) {
				res.Unchanged = append(res.Unchanged, e)
				continue
			}
			effective = append(effective, e)
			if isGroup && e.UserID == "" {
				groupNow[e.List] = e.Action == rules.Add
			}
			if isGroup && e.UserID == "" && e.Action == rules.Remove {
				// Deleting a group removes its members, each an entry, so
				// that undo can bring them back.
				members, err := s.groupMembers(ctx, e.List)
				if err != nil {
					return err
				}
				for _, user := range members {
					member := rules.Entry{List: e.List, UserID: user, Action: rules.Remove}
					if !seen[member] {
						seen[member] = true
						effective = append(effective, member)
					}
				}
			}
		}
		if len(effective) == 0 {
			return nil
		}
		if err := s.checkPatternCap(ctx, effective); err != nil {
			return err
		}
		if err := s.checkGroupCap(ctx, effective); err != nil {
			return err
		}
		if m.DryRun {
			preview, err := s.preview(ctx, effective)
			res.Change = preview
			return err
		}
		change := &rules.Change{
			EventID: m.EventID, Sender: m.Sender, Command: m.Command, Reason: m.Reason,
			CreatedAt: time.Now().UTC().Truncate(time.Millisecond), Entries: effective,
		}
		var eventID sql.NullString
		if m.EventID != "" {
			eventID = sql.NullString{String: string(m.EventID), Valid: true}
		}
		err := s.db.QueryRow(ctx, insertChangeQuery, eventID, m.Sender, m.Command, m.Reason, change.CreatedAt.UnixMilli()).
			Scan(&change.Version)
		if err != nil {
			return fmt.Errorf("failed to insert change: %w", err)
		}
		pushSet := make(map[id.UserID]struct{})
		unblacklisted := false
		for _, e := range effective {
			if e.Action == rules.Add {
				reason := m.Reason
				if r, ok := m.Reasons[e]; ok {
					reason = r
				}
				_, err = s.db.Exec(ctx, insertRuleQuery, e.List, e.UserID, change.Version, reason)
				if e.List == rules.AlwaysSend {
					pushSet[e.UserID] = struct{}{}
				}
			} else {
				_, err = s.db.Exec(ctx, deleteRuleQuery, e.List, e.UserID)
				if e.List == rules.Blacklist {
					unblacklisted = true
				}
			}
			if err != nil {
				return fmt.Errorf("failed to write rule: %w", err)
			}
			if _, err = s.db.Exec(ctx, insertEntryQuery, change.Version, e.List, e.UserID, e.Action); err != nil {
				return fmt.Errorf("failed to write change entry: %w", err)
			}
		}
		if err = s.notifyChange(ctx, change.Version); err != nil {
			return err
		}
		// Members of a group that gained members gain each other's
		// presence; with a user off the blacklist, every group's members
		// may gain theirs.
		groupPush, err := s.groupPush(ctx, effective, unblacklisted, nil)
		if err != nil {
			return err
		}
		if unblacklisted && len(groupPush) > 0 {
			// Written out in full, with the always-send users.
			alwaysSend, err := s.userColumn(ctx, alwaysSendQuery)
			if err != nil {
				return err
			}
			for _, u := range alwaysSend {
				groupPush[u] = struct{}{}
			}
			unblacklisted = false
		}
		if unblacklisted {
			// Everyone who always receives presence gains the presence of
			// the users who left the blacklist. SQLite writes that list
			// itself: reading 10,000 rows into Go and encoding them back
			// cost milliseconds.
			if _, err = s.db.Exec(ctx, s.pushToAllQuery, change.Version); err != nil {
				return fmt.Errorf("failed to write push_to: %w", err)
			}
			if err = s.db.QueryRow(ctx, countAlwaysSendQuery).Scan(&change.PushCount); err != nil {
				return fmt.Errorf("failed to count always-send users: %w", err)
			}
			change.PushToAll = true
			res.Change = change
			return nil
		}
		// Users added and removed again in one change gain nothing.
		for user := range pushSet {
			if _, ok := groupPush[user]; ok {
				continue
			}
			var present bool
			if err = s.db.QueryRow(ctx, ruleExistsQuery, rules.AlwaysSend, user).Scan(&present); err != nil {
				return fmt.Errorf("failed to read rule: %w", err)
			}
			if !present {
				delete(pushSet, user)
			}
		}
		for user := range groupPush {
			pushSet[user] = struct{}{}
		}
		change.PushTo = make([]id.UserID, 0, len(pushSet))
		for user := range pushSet {
			change.PushTo = append(change.PushTo, user)
		}
		slices.Sort(change.PushTo)
		change.PushCount = len(change.PushTo)
		pushJSON, err := json.Marshal(change.PushTo)
		if err != nil {
			return fmt.Errorf("failed to encode push_to: %w", err)
		}
		if _, err = s.db.Exec(ctx, setPushToQuery, string(pushJSON), change.Version); err != nil {
			return fmt.Errorf("failed to write push_to: %w", err)
		}
		res.Change = change
		return nil
	})
	if err != nil {
		return rules.Result{}, err
	}
	return res, nil
}

// preview is the change effective would make, for a dry run: its entries
// and who would gain presence, read without writing.
func (s *Store) preview(ctx context.Context, effective []rules.Entry) (*rules.Change, error) {
	change := &rules.Change{Entries: effective, PushTo: []id.UserID{}}
	unblacklisting := slices.ContainsFunc(effective, func(e rules.Entry) bool { return e.List == rules.Blacklist && e.Action == rules.Remove })
	groupPush, err := s.groupPush(ctx, effective, unblacklisting, effective)
	if err != nil {
		return nil, err
	}
	for user := range groupPush {
		change.PushTo = append(change.PushTo, user)
	}
	added, removed := 0, 0
	unblacklisted := false
	for _, e := range effective {
		switch {
		case e.List == rules.AlwaysSend && e.Action == rules.Add:
			added++
			change.PushTo = append(change.PushTo, e.UserID)
		case e.List == rules.AlwaysSend:
			removed++
		case e.Action == rules.Remove:
			unblacklisted = true
		}
	}
	if unblacklisted {
		var have int
		if err := s.db.QueryRow(ctx, countAlwaysSendQuery).Scan(&have); err != nil {
			return nil, fmt.Errorf("failed to count always-send users: %w", err)
		}
		change.PushTo, change.PushToAll, change.PushCount = []id.UserID{}, true, have+added-removed
		return change, nil
	}
	slices.Sort(change.PushTo)
	change.PushCount = len(change.PushTo)
	return change, nil
}

// RuleAddedBy says who added user to list (the sender of the change that
// added the entry), and whether user is on it.
func (s *Store) RuleAddedBy(ctx context.Context, list rules.List, user id.UserID) (id.UserID, bool, error) {
	var by id.UserID
	err := s.db.QueryRow(ctx, ruleAddedByQuery, list, user).Scan(&by)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	} else if err != nil {
		return "", false, fmt.Errorf("failed to read who added the rule: %w", err)
	}
	return by, true, nil
}

// Export returns every entry of always-send, the blacklist and the groups
// (each group's entry, with no user, before its members) with its reason,
// by list and user. The known users are learned, not exported.
func (s *Store) Export(ctx context.Context) ([]rules.ListEntry, error) {
	rows, err := s.db.Query(ctx, exportQuery)
	if err != nil {
		return nil, fmt.Errorf("failed to read the lists: %w", err)
	}
	var out []rules.ListEntry
	for rows.Next() {
		var e rules.ListEntry
		if err = rows.Scan(&e.List, &e.UserID, &e.Reason); err != nil {
			_ = rows.Close()
			return nil, fmt.Errorf("failed to read the lists: %w", err)
		}
		out = append(out, e)
	}
	if err = errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("failed to read the lists: %w", err)
	}
	return out, nil
}

// Record commits an audited change that touches no rule (the control
// room's move, an accepted identity): a change row with the next version,
// no entries and m's command and reason as its description, so that
// history shows it in order and every process moves to its version. It
// runs in the caller's transaction when ctx carries one.
func (s *Store) Record(ctx context.Context, m rules.Mutation) (*rules.Change, error) {
	change := &rules.Change{
		EventID: m.EventID, Sender: m.Sender, Command: m.Command, Reason: m.Reason,
		CreatedAt: time.Now().UTC().Truncate(time.Millisecond), PushTo: []id.UserID{},
	}
	err := s.InTxn(ctx, func(ctx context.Context) error {
		var eventID sql.NullString
		if m.EventID != "" {
			eventID = sql.NullString{String: string(m.EventID), Valid: true}
		}
		if err := s.db.QueryRow(ctx, insertChangeQuery, eventID, m.Sender, m.Command, m.Reason, change.CreatedAt.UnixMilli()).Scan(&change.Version); err != nil {
			return fmt.Errorf("failed to insert change: %w", err)
		}
		return s.notifyChange(ctx, change.Version)
	})
	if err != nil {
		return nil, err
	}
	return change, nil
}

// groupMembers returns the members (users and patterns) of a group's list.
func (s *Store) groupMembers(ctx context.Context, list rules.List) ([]id.UserID, error) {
	return s.userColumn(ctx, groupMembersQuery, list)
}

// userColumn runs a query whose rows are one user ID each.
func (s *Store) userColumn(ctx context.Context, query string, args ...any) ([]id.UserID, error) {
	rows, err := s.db.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("failed to read users: %w", err)
	}
	defer rows.Close()
	var users []id.UserID
	for rows.Next() {
		var u id.UserID
		if err = rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("failed to read user: %w", err)
		}
		users = append(users, u)
	}
	if err = rows.Err(); err != nil {
		return nil, fmt.Errorf("failed to read users: %w", err)
	}
	return users, nil
}

// groupPush returns who may gain presence through groups by effective: the
// members of each group that gains members (the newcomers gain the others'
// presence, the others the newcomers'), and with everyGroup (a user left
// the blacklist) the members of every group. Members are the users listed
// and the known users a pattern matches. pending are entries not written
// yet (a dry run), counted as written.
func (s *Store) groupPush(ctx context.Context, effective []rules.Entry, everyGroup bool, pending []rules.Entry) (map[id.UserID]struct{}, error) {
	lists := make(map[rules.List]bool)
	for _, e := range effective {
		if _, group := e.List.Group(); group && e.Action == rules.Add && e.UserID != "" {
			lists[e.List] = true
		}
	}
	push := make(map[id.UserID]struct{})
	if len(lists) == 0 && !everyGroup {
		return push, nil
	}
	rows, err := s.db.Query(ctx, groupRowsQuery)
	if err != nil {
		return nil, fmt.Errorf("failed to read groups: %w", err)
	}
	members := make(map[id.UserID]bool) // user or pattern -> still there
	for rows.Next() {
		var e rules.Entry
		if err = rows.Scan(&e.List, &e.UserID); err != nil {
			_ = rows.Close()
			return nil, fmt.Errorf("failed to read groups: %w", err)
		}
		if (everyGroup || lists[e.List]) && e.UserID != "" {
			members[e.UserID] = true
		}
	}
	if err = errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("failed to read groups: %w", err)
	}
	for _, e := range pending {
		if _, group := e.List.Group(); group && e.UserID != "" && (everyGroup || lists[e.List]) {
			members[e.UserID] = e.Action == rules.Add
		}
	}
	var patterns []string
	for u, there := range members {
		switch {
		case !there:
		case userid.IsPattern(string(u)):
			patterns = append(patterns, string(u))
		default:
			push[u] = struct{}{}
		}
	}
	if len(patterns) == 0 {
		return push, nil
	}
	known, err := s.userColumn(ctx, knownQuery)
	if err != nil {
		return nil, err
	}
	set := userid.NewSet(patterns)
	for _, u := range known {
		if _, ok := set.Match(string(u)); ok {
			push[u] = struct{}{}
		}
	}
	return push, nil
}

// checkGroupCap fails with an error wrapping rules.ErrTooManyGroups when
// effective creates groups past rules.MaxGroups, and with one wrapping
// rules.ErrTooManyPatterns when it takes the groups' patterns past
// rules.MaxPatterns.
func (s *Store) checkGroupCap(ctx context.Context, effective []rules.Entry) error {
	groups, patterns := 0, 0
	for _, e := range effective {
		if _, group := e.List.Group(); !group {
			continue
		}
		delta := 1
		if e.Action == rules.Remove {
			delta = -1
		}
		switch {
		case e.UserID == "":
			groups += delta
		case userid.IsPattern(string(e.UserID)):
			patterns += delta
		}
	}
	for _, c := range []struct {
		delta int
		query string
		err   error
		what  string
		limit int
	}{
		{groups, countGroupsQuery, rules.ErrTooManyGroups, "groups", rules.MaxGroups},
		{patterns, countGroupPatternsQuery, rules.ErrTooManyPatterns, "patterns in groups", rules.MaxPatterns},
	} {
		if c.delta <= 0 {
			continue
		}
		var have int
		if err := s.db.QueryRow(ctx, c.query).Scan(&have); err != nil {
			return fmt.Errorf("failed to count %s: %w", c.what, err)
		}
		if have+c.delta > c.limit {
			return fmt.Errorf("%w: there are %d %s and this adds %d; at most %d are allowed", c.err, have, c.what, c.delta, c.limit)
		}
	}
	return nil
}

// checkPatternCap fails with an error wrapping rules.ErrTooManyPatterns when
// applying effective would leave more than rules.MaxPatterns patterns on
// the blacklist.
func (s *Store) checkPatternCap(ctx context.Context, effective []rules.Entry) error {
	delta := 0
	for _, e := range effective {
		if e.List != rules.Blacklist || !userid.IsPattern(string(e.UserID)) {
			continue
		}
		if e.Action == rules.Add {
			delta++
		} else {
			delta--
		}
	}
	if delta <= 0 {
		return nil
	}
	var have int
	if err := s.db.QueryRow(ctx, countPatternsQuery).Scan(&have); err != nil {
		return fmt.Errorf("failed to count patterns: %w", err)
	}
	if have+delta > rules.MaxPatterns {
		return fmt.Errorf("%w: the blacklist holds %d and this adds %d; at most %d are allowed (remove some, or name users exactly)", rules.ErrTooManyPatterns, have, delta, rules.MaxPatterns)
	}
	return nil
}

// RecentChanges returns up to limit of the newest changes, oldest first,
// for the router's change feed: each with its version, PushTo and entries.
// A change of more than maxEntries entries (an import) comes without them,
// with EntriesOmitted set.
func (s *Store) RecentChanges(ctx context.Context, limit, maxEntries int) ([]rules.Change, error) {
	rows, err := s.db.Query(ctx, recentChangesQuery, limit)
	if err != nil {
		return nil, fmt.Errorf("failed to read changes: %w", err)
	}
	var changes []rules.Change
	for rows.Next() {
		var c rules.Change
		var pushJSON string
		if err = rows.Scan(&c.Version, &pushJSON); err != nil {
			_ = rows.Close()
			return nil, fmt.Errorf("failed to read change: %w", err)
		}
		if err = json.Unmarshal([]byte(pushJSON), &c.PushTo); err != nil {
			_ = rows.Close()
			return nil, fmt.Errorf("failed to decode push_to of change %d: %w", c.Version, err)
		}
		c.EntriesOmitted = true
		changes = append(changes, c)
	}
	if err = errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("failed to read changes: %w", err)
	}
	if len(changes) == 0 {
		return nil, nil
	}
	slices.Reverse(changes)
	byVersion := make(map[int64]*rules.Change, len(changes))
	for i := range changes {
		byVersion[changes[i].Version] = &changes[i]
	}
	rows, err = s.db.Query(ctx, recentEntriesQuery, changes[0].Version, maxEntries)
	if err != nil {
		return nil, fmt.Errorf("failed to read change entries: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var version int64
		var e rules.Entry
		if err = rows.Scan(&version, &e.List, &e.UserID, &e.Action); err != nil {
			return nil, fmt.Errorf("failed to read change entry: %w", err)
		}
		if c := byVersion[version]; c != nil {
			c.Entries = append(c.Entries, e)
			c.EntriesOmitted = false
		}
	}
	if err = rows.Err(); err != nil {
		return nil, fmt.Errorf("failed to read change entries: %w", err)
	}
	return changes, nil
}

// History returns up to limit changes with their entries, newest first.
func (s *Store) History(ctx context.Context, limit int) ([]rules.Change, error) {
	return s.queryChanges(ctx, historyQuery, limit)
}

// Change returns the change of version with its entries (ok false when
// there is none).
func (s *Store) Change(ctx context.Context, version int64) (c rules.Change, ok bool, err error) {
	changes, err := s.queryChanges(ctx, changeQuery, version)
	if err != nil || len(changes) == 0 {
		return rules.Change{}, false, err
	}
	return changes[0], true, nil
}

// TouchedAfter returns the first version after version that changed one of
// entries' list entries (0 for none).
func (s *Store) TouchedAfter(ctx context.Context, version int64, entries []rules.Entry) (int64, error) {
	first := int64(0)
	for _, e := range entries {
		var v int64
		query, args := laterTouchQuery, []any{version, e.List, e.UserID}
		if _, group := e.List.Group(); group && e.UserID == "" {
			query, args = laterGroupTouchQuery, args[:2]
		}
		if err := s.db.QueryRow(ctx, query, args...).Scan(&v); err != nil {
			return 0, fmt.Errorf("failed to read later changes: %w", err)
		}
		if v > 0 && (first == 0 || v < first) {
			first = v
		}
	}
	return first, nil
}

// queryChanges runs a query over the change table (the columns of
// historyQuery) and loads each change's entries.
func (s *Store) queryChanges(ctx context.Context, query string, args ...any) ([]rules.Change, error) {
	rows, err := s.db.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("failed to read changes: %w", err)
	}
	var changes []rules.Change
	for rows.Next() {
		var c rules.Change
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
	if err = errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("failed to read changes: %w", err)
	}
	// Entries are read after the rows are closed: the pool may have one
	// connection inside a transaction.
	for i := range changes {
		if changes[i].Entries, err = s.entries(ctx, changes[i].Version); err != nil {
			return nil, err
		}
	}
	return changes, nil
}

func (s *Store) entries(ctx context.Context, version int64) ([]rules.Entry, error) {
	rows, err := s.db.Query(ctx, entriesQuery, version)
	if err != nil {
		return nil, fmt.Errorf("failed to read change entries: %w", err)
	}
	defer rows.Close()
	var entries []rules.Entry
	for rows.Next() {
		var e rules.Entry
		if err = rows.Scan(&e.List, &e.UserID, &e.Action); err != nil {
			return nil, fmt.Errorf("failed to read change entry: %w", err)
		}
		entries = append(entries, e)
	}
	return entries, rows.Err()
}
