// Package rules holds presence-router's rule model: the lists and their
// entries, a mutation a command asks for, a committed change, and the
// update that the router applies. It talks to no database and no network:
// store persists these types, router evaluates them, and the command layer
// produces them.
package rules

import (
	"errors"
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

// String renders a list name the way users type it.
func (l List) String() string { return strings.ReplaceAll(string(l), "_", "-") }

// MaxPatterns is how many patterns the blacklist may hold. Routing matches
// a user against all of them in one pass (userid.Set), and the cap bounds
// that pass's cost for any set of patterns (BENCHMARKS.md).
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

// Snapshot is the content of both lists at one version.
type Snapshot struct {
	Version    int64
	AlwaysSend []id.UserID
	Blacklist  []id.UserID
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
}

// Update turns a committed change into the router's update: the one
// conversion between the two.
func (c *Change) Update() Update {
	u := Update{Version: c.Version, PushTo: c.PushTo, PushToAllAlwaysSend: c.PushToAll, EntriesOmitted: c.EntriesOmitted}
	for _, e := range c.Entries {
		switch {
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
