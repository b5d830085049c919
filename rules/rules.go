// Package rules holds presence-router's rule model: the lists and their
// entries, a mutation a command asks for, a committed change, and the
// update that the router applies. It talks to no database and no network:
// store persists these types, router evaluates them, and the command layer
// produces them.
package rules

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"
)

// List names one of the two rule lists.
type List string

// The two lists, with the stock example router's meaning.
const (
	// AlwaysSend users receive every non-blacklisted user's presence.
	AlwaysSend List = "always_send"
	// Blacklist users' presence is never routed.
	Blacklist List = "blacklist"
)

// Known is the list of local users the service has seen syncing who
// match a group's pattern: a pattern member of a group receives and sends
// presence through it once known (Synapse gives no list of its users).
// Nobody types it; the service adds to it.
const Known List = "known"

// groupListPrefix begins the list of a group's members.
const groupListPrefix = "group:"

// GroupName names a group: 1 to 64 of a-z, 0-9, '.', '_' and '-'.
type GroupName string

var groupNameRE = regexp.MustCompile(`^[a-z0-9._-]{1,64}$`)

// ErrBadGroupName is wrapped by ParseGroupName's error.
var ErrBadGroupName = errors.New("a group name is 1 to 64 of a-z, 0-9, '.', '_' and '-'")

// ParseGroupName reads a group name as typed, folded to lower case.
func ParseGroupName(s string) (GroupName, error) {
	name := strings.ToLower(s)
	if !groupNameRE.MatchString(name) {
		return "", fmt.Errorf("%w", ErrBadGroupName)
	}
	return GroupName(name), nil
}

// GroupList is the list that holds a group's members. The group itself is
// its entry with no user (GroupEntry): it exists, with or without members,
// while that entry is on the list.
func GroupList(name GroupName) List { return List(groupListPrefix + string(name)) }

// Group says which group's list l is.
func (l List) Group() (GroupName, bool) {
	name, ok := strings.CutPrefix(string(l), groupListPrefix)
	return GroupName(name), ok
}

// GroupEntry is the entry that creates (Add) or deletes (Remove) a group.
func GroupEntry(name GroupName, action Action) Entry {
	return Entry{List: GroupList(name), Action: action}
}

// MaxGroups is how many groups may exist: routing checks a user against
// each group.
const MaxGroups = 100

// Errors a mutation of groups may fail with (wrapped).
var (
	ErrNoSuchGroup   = errors.New("no such group")
	ErrTooManyGroups = errors.New("too many groups")
)

// LearnedCommand is the command text of a change that adds users to the
// Known list: history leaves those changes out.
const LearnedCommand = "(users seen syncing)"

// String renders a list name the way users type it: "always-send",
// "blacklist", "group support".
func (l List) String() string {
	if name, ok := l.Group(); ok {
		return "group " + string(name)
	}
	return strings.ReplaceAll(string(l), "_", "-")
}

// MaxPatterns is how many patterns the blacklist may hold, and how many the
// groups may hold together. Routing matches a user against all of the
// blacklist's in one pass (userid.Set), and the cap bounds that pass's cost
// for any set of patterns (BENCHMARKS.md).
const MaxPatterns = 1000

// ErrTooManyPatterns is wrapped by the error of a change that would take
// the blacklist past MaxPatterns patterns.
var ErrTooManyPatterns = errors.New("too many patterns on the blacklist")

// Action says whether an entry joins or leaves a list.
type Action string

// The two actions.
const (
	Add    Action = "add"
	Remove Action = "remove"
)

// Entry is one user (or blacklist pattern) joining or leaving one list.
type Entry struct {
	List   List      `json:"list"`
	UserID id.UserID `json:"user_id"`
	Action Action    `json:"action"`
}

// ListEntry is an entry of a list with the reason it was added with: what
// export writes and import reads.
type ListEntry struct {
	List   List
	UserID id.UserID
	Reason string
}

// Mutation is what a command asks for.
type Mutation struct {
	EventID id.EventID // the command event; empty for imports
	Sender  id.UserID
	Command string
	Reason  string
	Entries []Entry
	// DryRun asks what the mutation would change, changing nothing: the
	// result's Change has Version 0, its entries and who would be pushed.
	DryRun bool
	// Reasons are the reasons of some entries added (an import), in place
	// of Reason, keyed by the entry.
	Reasons map[Entry]string
}

// Change is one committed change: the audit record and the router's update.
type Change struct {
	Version   int64
	EventID   id.EventID
	Sender    id.UserID
	Command   string
	Reason    string
	CreatedAt time.Time
	Entries   []Entry     // only what really changed
	PushTo    []id.UserID // users who gained presence they did not get before
	// PushToAll is set only on a change that the store returns when a user
	// left the blacklist: everyone on always-send after the change gains
	// presence. The store writes that list into the change row itself, and
	// PushTo stays empty; the caller takes the list from its own copy of
	// the rules rather than having it read back. Changes read from the
	// database always carry the full PushTo.
	PushToAll bool
	// PushCount is how many users gain presence (len(PushTo), or the
	// always-send list's size with PushToAll).
	PushCount int
	// EntriesOmitted is set on a change read back without its entries
	// (one with more entries than the reader asked to load).
	EntriesOmitted bool
}

// Result says what applying a mutation did.
type Result struct {
	// Change is nil when nothing changed (every entry was already so).
	Change *Change
	// Unchanged lists the entries that were already so: adding a present
	// user or removing an absent one.
	Unchanged []Entry
}

// Snapshot is the content of every list at one version.
type Snapshot struct {
	Version    int64
	AlwaysSend []id.UserID
	Blacklist  []id.UserID
	// Groups holds every group with its members (users and patterns).
	Groups map[GroupName][]id.UserID
	Known  []id.UserID
}

// Update is one committed change as the router applies it.
type Update struct {
	Version                         int64
	AddAlwaysSend, RemoveAlwaysSend []id.UserID
	AddBlacklist, RemoveBlacklist   []id.UserID
	PushTo                          []id.UserID // users who gained presence
	// PushToAllAlwaysSend: every always-send user after this update gained
	// presence (a user left the blacklist); PushTo is then ignored.
	PushToAllAlwaysSend bool
	// EntriesOmitted: the lists above are not known (a large change read
	// back from the store); the feed then says every source changed.
	EntriesOmitted bool
	// Groups are the entries on groups' lists, in order: a group created
	// or deleted (no user), a member added or removed.
	Groups   []Entry
	AddKnown []id.UserID
}

// Update turns a committed change into the router's update: the one
// conversion between the two.
func (c *Change) Update() Update {
	u := Update{Version: c.Version, PushTo: c.PushTo, PushToAllAlwaysSend: c.PushToAll, EntriesOmitted: c.EntriesOmitted}
	for _, e := range c.Entries {
		if _, ok := e.List.Group(); ok {
			u.Groups = append(u.Groups, e)
			continue
		}
		switch {
		case e.List == Known:
			if e.Action == Add {
				u.AddKnown = append(u.AddKnown, e.UserID)
			}
		case e.List == AlwaysSend && e.Action == Add:
			u.AddAlwaysSend = append(u.AddAlwaysSend, e.UserID)
		case e.List == AlwaysSend:
			u.RemoveAlwaysSend = append(u.RemoveAlwaysSend, e.UserID)
		case e.Action == Add:
			u.AddBlacklist = append(u.AddBlacklist, e.UserID)
		default:
			u.RemoveBlacklist = append(u.RemoveBlacklist, e.UserID)
		}
	}
	return u
}
