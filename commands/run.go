package commands

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/router"
	"github.com/presence-router/presence-router/rules"
	"github.com/presence-router/presence-router/userid"
)

// Store is what commands read and change in the database (*store.Store).
type Store interface {
	// Apply commits a mutation and says what changed.
	Apply(ctx context.Context, m rules.Mutation) (rules.Result, error)
	// History returns up to limit changes with their entries, newest first.
	History(ctx context.Context, limit int) ([]rules.Change, error)
	// Backlog counts the inbox items not done yet.
	Backlog(ctx context.Context) (int, error)
	// Record commits an audited change that touches no rule.
	Record(ctx context.Context, m rules.Mutation) (*rules.Change, error)
	// Change returns the change of a version with its entries.
	Change(ctx context.Context, version int64) (rules.Change, bool, error)
	// TouchedAfter returns the first version after version that changed
	// one of entries' list entries (0 for none).
	TouchedAfter(ctx context.Context, version int64, entries []rules.Entry) (int64, error)
	// RuleAddedBy says who added user to list, and whether they are on it.
	RuleAddedBy(ctx context.Context, list rules.List, user id.UserID) (id.UserID, bool, error)
}

// Service is what status reports of the running service (the bot), and
// what identity accept changes in its encryption.
type Service interface {
	// ControlRoom returns the pinned control room, or "" while unresolved.
	ControlRoom() id.RoomID
	// Problems returns what an operator must know about, sorted.
	Problems() []string
	// AcceptIdentity trusts user's current cross-signing identity from now
	// on, in the caller's store transaction, and returns the master keys
	// first seen and now; a *Refusal says why there is nothing to do.
	AcceptIdentity(ctx context.Context, user id.UserID) (first, current string, err error)
	// UserExists asks the homeserver whether a local user is registered;
	// an error means it could not tell.
	UserExists(ctx context.Context, user id.UserID) (bool, error)
}

// Refusal is an error whose text is the reply: the command changes
// nothing, for a reason the admin can act on.
type Refusal struct{ Text string }

func (r *Refusal) Error() string { return r.Text }

// Runner runs permitted commands: it reads the rules from the router's
// engine, changes them through the store, and words the replies. It does
// no Matrix I/O; the transport checks permissions and sends the replies.
type Runner struct {
	Prefix  string // bot.command_prefix, for replies that name a command
	Domain  string // homeserver.domain, for replies about remote users
	Store   Store
	Engine  *router.Engine
	Service Service
	// LastContact returns when the adapter last called the routing API.
	LastContact func() time.Time
	// Started is when the service started, for status's uptime.
	Started time.Time
}

// Origin is the event a command came in and who sent it.
type Origin struct {
	EventID id.EventID
	Sender  id.UserID
}

// Run runs a permitted command inside the caller's store transaction (ctx
// carries it): the reply, and the change it committed (nil for none).
func (r *Runner) Run(ctx context.Context, origin Origin, cmd *Command) (*Reply, *rules.Change, error) {
	return specFor(cmd.Verb, cmd.List).run(r, ctx, origin, cmd)
}

func (r *Runner) mutate(ctx context.Context, origin Origin, cmd *Command) (*Reply, *rules.Change, error) {
	action := rules.Add
	if cmd.Verb == VerbRemove {
		action = rules.Remove
	}
	list := cmd.List
	if list == groupTopic {
		list = rules.GroupList(cmd.Group)
	}
	m := rules.Mutation{EventID: origin.EventID, Sender: origin.Sender, Command: r.Prefix + " " + cmd.Raw, Reason: cmd.Reason, DryRun: cmd.DryRun}
	for _, user := range cmd.Users {
		m.Entries = append(m.Entries, rules.Entry{List: list, UserID: user, Action: action})
	}
	warning := ""
	if action == rules.Add {
		if unknown := r.unknownLocalUsers(ctx, cmd.Users); len(unknown) > 0 {
			are := Plural(len(unknown), "is", "are")
			// Users who would be sent presence must exist: Synapse fails a
			// push to a user it does not know.
			if list != rules.Blacklist && !cmd.Force {
				return Failure(fmt.Sprintf("%s %s not registered on %s (a typo?): Synapse cannot send presence to a user it does not know. Nothing was changed; add %s to add anyway.",
					capitalize(userList(unknown, 20)), are, Code(r.Domain), Code(optionForce)), ResultInvalid), nil, nil
			}
			warning = fmt.Sprintf("\n\n⚠️ %s %s not registered on %s (a typo?).", capitalize(userList(unknown, 20)), are, Code(r.Domain))
		}
	}
	rep, change, err := r.apply(ctx, m, cmd)
	if rep != nil && rep.Result == ResultOK {
		if list != cmd.List && action == rules.Remove {
			rep.Markdown += r.stillInGroup(cmd.Group, cmd.Users)
		}
		rep.Markdown += warning
	}
	return rep, change, err
}

// unknownLocalUsers returns the users of this server (not patterns, not
// remote users, who are not checked) that the homeserver says are not
// registered. A user it cannot tell about counts as registered: the guard
// must not refuse a real user because the homeserver was slow.
func (r *Runner) unknownLocalUsers(ctx context.Context, users []id.UserID) []id.UserID {
	var unknown []id.UserID
	for _, u := range users {
		if userid.IsPattern(string(u)) || u.Homeserver() != r.Domain {
			continue
		}
		if exists, err := r.Service.UserExists(ctx, u); err == nil && !exists {
			unknown = append(unknown, u)
		}
	}
	return unknown
}

// apply commits m (or, with cmd.DryRun, says what it would change) and
// words the reply: what changed, who is sent current presence, what a
// pattern matches, who stays hidden, and what needed nothing.
func (r *Runner) apply(ctx context.Context, m rules.Mutation, cmd *Command) (*Reply, *rules.Change, error) {
	res, err := r.Store.Apply(ctx, m)
	if rep := r.groupRefusal(err, cmd.Group); rep != nil {
		return rep, nil, nil
	} else if err != nil {
		return nil, nil, err
	}
	var sb strings.Builder
	if m.DryRun {
		sb.WriteString("Dry run: ")
	}
	if c := res.Change; c != nil {
		sb.WriteString(capitalize(strings.Join(changePhrases(c.Entries, m.DryRun, 20, listPhrase), "; ")))
		if cmd.Reason != "" {
			cut := ""
			if cmd.ReasonCut {
				cut = fmt.Sprintf(", cut to its first %d characters", MaxReasonRunes)
			}
			fmt.Fprintf(&sb, " (reason%s: %s)", cut, literal(cmd.Reason, MaxReasonRunes))
		}
		sb.WriteString(".")
		if !m.DryRun {
			fmt.Fprintf(&sb, " Version %d.", c.Version)
		}
		sending := "Sending"
		if m.DryRun {
			sending = "Would send"
		}
		switch {
		case c.PushToAll && c.PushCount > 0:
			fmt.Fprintf(&sb, " %s current presence to every always-send user (%d).", sending, c.PushCount)
		case len(c.PushTo) > 0:
			fmt.Fprintf(&sb, " %s current presence to %s.", sending, userList(c.PushTo, 10))
		}
		sb.WriteString(r.patternReach(c.Entries))
		sb.WriteString(r.stillHidden(c.Entries))
	}
	if len(res.Unchanged) > 0 {
		if res.Change != nil {
			sb.WriteString("\n\n")
		}
		for i, group := range groupEntries(res.Unchanged) {
			already := "already on"
			if group.action == rules.Remove {
				already = "not on"
			}
			if i > 0 {
				sb.WriteString(" ")
			}
			fmt.Fprintf(&sb, "%s %s %s: nothing to do.", capitalize(userList(group.users, 20)), Plural(len(group.users), "is", "are")+" "+already, listPhrase(group.list))
		}
	}
	if m.DryRun {
		sb.WriteString("\n\nNothing was changed.")
		return Success(sb.String()), nil, nil
	}
	return Success(sb.String()), res.Change, nil
}

// changePhrases says what entries do, one phrase per action and list:
// "added @a and @b to the blacklist", "created the group support" (up to
// limit users named in each; list names the list).
func changePhrases(entries []rules.Entry, dryRun bool, limit int, list func(rules.List) string) []string {
	var parts []string
	for _, g := range groupEntries(entries) {
		verb, would, prep := "added", "would add", "to"
		if g.action == rules.Remove {
			verb, would, prep = "removed", "would remove", "from"
		}
		if dryRun {
			verb = would
		}
		if name, ok := g.list.Group(); ok && slices.Contains(g.users, "") {
			made := map[rules.Action]string{rules.Add: "created", rules.Remove: "deleted"}[g.action]
			if dryRun {
				made = map[rules.Action]string{rules.Add: "would create", rules.Remove: "would delete"}[g.action]
			}
			parts = append(parts, made+" the group "+Code(name))
			if g.users = slices.DeleteFunc(g.users, func(u id.UserID) bool { return u == "" }); len(g.users) == 0 {
				continue
			}
		}
		parts = append(parts, fmt.Sprintf("%s %s %s %s", verb, userList(g.users, limit), prep, list(g.list)))
	}
	return parts
}

// entryGroup is the users of entries with one action on one list.
type entryGroup struct {
	action rules.Action
	list   rules.List
	users  []id.UserID
}

// groupEntries groups entries by action and list, in the order met.
func groupEntries(entries []rules.Entry) []entryGroup {
	var groups []entryGroup
	for _, e := range entries {
		i := slices.IndexFunc(groups, func(g entryGroup) bool { return g.action == e.Action && g.list == e.List })
		if i < 0 {
			groups = append(groups, entryGroup{action: e.Action, list: e.List})
			i = len(groups) - 1
		}
		groups[i].users = append(groups[i].users, e.UserID)
	}
	return groups
}

// stillHidden says, for users entries take off the blacklist by name, which
// stay hidden by a pattern that remains after the change. It reads only the
// patterns (Engine.Patterns), never the exact entries.
func (r *Runner) stillHidden(entries []rules.Entry) string {
	var freed []id.UserID
	changed := map[string]bool{} // patterns this change adds (true) or removes
	for _, e := range entries {
		switch {
		case e.List != rules.Blacklist:
		case userid.IsPattern(string(e.UserID)):
			changed[string(e.UserID)] = e.Action == rules.Add
		case e.Action == rules.Remove:
			freed = append(freed, e.UserID)
		}
	}
	if len(freed) == 0 {
		return ""
	}
	set := userid.NewSet(r.Engine.Patterns())
	for p, added := range changed {
		if added {
			set.Add(p)
		} else {
			set.Remove(p)
		}
	}
	var sb strings.Builder
	hidden := 0
	for _, u := range freed {
		if p, ok := set.Match(string(u)); ok {
			if hidden++; hidden <= maxHiddenNamed {
				fmt.Fprintf(&sb, " %s stays hidden: the pattern %s still matches them.", CodeUser(u), CodeUser(id.UserID(p)))
			}
		}
	}
	if hidden > maxHiddenNamed {
		fmt.Fprintf(&sb, " %d more stay hidden by a pattern (%s tells for one).", hidden-maxHiddenNamed, Code(r.Prefix+" explain <user>"))
	}
	return sb.String()
}

// maxHiddenNamed bounds the users a reply names as still hidden.
const maxHiddenNamed = 10

// undoPrefix begins the command text of an undo, in history.
const undoPrefix = "undo of version "

// undo applies the inverse of a change as a new change: what it added is
// removed and what it removed is added, refused when a later change touched
// the same entries (unless --force).
func (r *Runner) undo(ctx context.Context, origin Origin, cmd *Command) (*Reply, *rules.Change, error) {
	c, ok, err := r.Store.Change(ctx, cmd.Version)
	switch {
	case err != nil:
		return nil, nil, err
	case !ok:
		return Failure(fmt.Sprintf("There is no version %d (the latest is %d; see %s). Nothing was changed.", cmd.Version, r.Engine.Version(), Code(r.Prefix+" history")), ResultInvalid), nil, nil
	case c.Command == rules.LearnedCommand:
		return Failure(fmt.Sprintf("Version %d recorded users seen syncing whom a group's pattern matches, not a command: there is nothing to undo. Nothing was changed.", cmd.Version), ResultInvalid), nil, nil
	case len(c.Entries) == 0:
		return Failure(fmt.Sprintf("Version %d changed no list (%s): there is nothing to undo. Nothing was changed.", cmd.Version, literal(c.Command, MaxReasonRunes)), ResultInvalid), nil, nil
	case c.EventID == "":
		return Failure(fmt.Sprintf("Version %d was an import of %d entries, not a command: undo it by importing the lists as they were before (`presence-router export` writes them). Nothing was changed.", cmd.Version, len(c.Entries)), ResultInvalid), nil, nil
	}
	later, err := r.Store.TouchedAfter(ctx, cmd.Version, c.Entries)
	if err != nil {
		return nil, nil, err
	}
	if later > 0 && !cmd.Force {
		return Failure(fmt.Sprintf("Version %d changed some of the same entries after version %d (see %s): undoing %d now could undo that too. Nothing was changed; add %s to undo it anyway.",
			later, cmd.Version, Code(fmt.Sprintf("%s history", r.Prefix)), cmd.Version, Code(optionForce)), ResultInvalid), nil, nil
	}
	m := rules.Mutation{EventID: origin.EventID, Sender: origin.Sender, Command: fmt.Sprintf("%s%d", undoPrefix, cmd.Version), Reason: cmd.Reason, DryRun: cmd.DryRun}
	for _, e := range c.Entries {
		inverse := rules.Remove
		if e.Action == rules.Remove {
			inverse = rules.Add
		}
		m.Entries = append(m.Entries, rules.Entry{List: e.List, UserID: e.UserID, Action: inverse})
	}
	return r.apply(ctx, m, cmd)
}

// acceptIdentity runs identity accept: the user's new cross-signing
// identity is trusted, and the acceptance is recorded in history.
func (r *Runner) acceptIdentity(ctx context.Context, origin Origin, cmd *Command) (*Reply, *rules.Change, error) {
	user := cmd.Users[0]
	first, current, err := r.Service.AcceptIdentity(ctx, user)
	var refusal *Refusal
	if errors.As(err, &refusal) {
		return Failure(refusal.Text, ResultInvalid), nil, nil
	} else if err != nil {
		return nil, nil, err
	}
	change, err := r.Store.Record(ctx, rules.Mutation{EventID: origin.EventID, Sender: origin.Sender, Reason: cmd.Reason,
		Command: fmt.Sprintf("accepted the new identity of %s (cross-signing master key %s, first seen %s)", user, current, first)})
	if err != nil {
		return nil, nil, err
	}
	return Success(fmt.Sprintf("Accepted %s's new identity (cross-signing master key %s; first seen was %s): commands from devices it signs count again. Version %d.",
		CodeUser(user), Code(current), Code(first), change.Version)), change, nil
}

// maxReachCount bounds the always-send users patternReach checks: past it
// the reply gives no count, so that a command's cost stays bounded.
const maxReachCount = 100_000

// patternReach says, for the patterns among entries, how many of the users
// the router knows by name (the always-send users) they match; which other
// users they hide shows as those users' presence changes. The patterns are
// compiled into one set (userid.Set), so the count costs one pass per
// always-send user, whatever the number of patterns.
func (r *Runner) patternReach(entries []rules.Entry) string {
	var patterns []string
	for _, e := range entries {
		if e.List == rules.Blacklist && e.Action == rules.Add && userid.IsPattern(string(e.UserID)) {
			patterns = append(patterns, string(e.UserID))
		}
	}
	if len(patterns) == 0 {
		return ""
	}
	alwaysSend := r.Engine.AlwaysSend()
	subject := Plural(len(patterns), "pattern matches", "patterns match")
	if len(alwaysSend) > maxReachCount {
		return fmt.Sprintf(" The %s some of the %d always-send users (not counted: more than %d). `%s explain <user>` tells for one.", subject, len(alwaysSend), maxReachCount, r.Prefix)
	}
	set := userid.NewSet(patterns)
	matched := 0
	for _, u := range alwaysSend {
		if _, ok := set.Match(string(u)); ok {
			matched++
		}
	}
	return fmt.Sprintf(" The %s %d of the %d always-send %s (their own presence is no longer routed; they still receive everyone's). Other users it hides are not listed anywhere: `%s explain <user>` tells for one.",
		subject, matched, len(alwaysSend), Plural(len(alwaysSend), "user", "users"), r.Prefix)
}

func (r *Runner) list(name rules.List) (*Reply, error) {
	version, alwaysSend, blacklist := r.Engine.Rules()
	users := alwaysSend
	meaning := "They receive the presence of every user who is not blacklisted."
	if name == rules.Blacklist {
		users = blacklist
		meaning = "Their presence is never routed (users who share a room with them still see it)."
	}
	if len(users) == 0 {
		return Success(fmt.Sprintf("%s is empty (version %d).", capitalize(listPhrase(name)), version)), nil
	}
	// Patterns first, apart from the users they are not.
	var patterns, exact []id.UserID
	for _, u := range users {
		if userid.IsPattern(string(u)) {
			patterns = append(patterns, u)
		} else {
			exact = append(exact, u)
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s has %d %s", capitalize(listPhrase(name)), len(exact), Plural(len(exact), "user", "users"))
	if len(patterns) > 0 {
		fmt.Fprintf(&sb, " and %d %s (matched case-insensitively)", len(patterns), Plural(len(patterns), "pattern", "patterns"))
	}
	fmt.Fprintf(&sb, " (version %d). %s\n\n", version, meaning)
	shown := 0
	for i, group := range [][]id.UserID{patterns, exact} {
		if len(group) == 0 {
			continue
		}
		if len(patterns) > 0 {
			sb.WriteString([]string{"**Patterns**\n\n", "**Users**\n\n"}[i])
		}
		for _, user := range group {
			line := "* " + CodeUser(user) + "\n"
			if sb.Len()+len(line) > listBudget || shown == listMaxLines {
				break
			}
			sb.WriteString(line)
			shown++
		}
		sb.WriteString("\n")
	}
	if shown < len(users) {
		fmt.Fprintf(&sb, "…and %d more, not shown to keep this message under Matrix's size limit. The full list: `GET /_presence_router/v1/rules`; one user: `%s explain <user>`.", len(users)-shown, r.Prefix)
	}
	return Success(strings.TrimRight(sb.String(), "\n")), nil
}

func (r *Runner) explain(user id.UserID) *Reply {
	ex := r.Engine.Explain(user)
	var sb strings.Builder
	fmt.Fprintf(&sb, "**%s** (version %d)\n\n", CodeUser(user), ex.Version)
	switch {
	case ex.Blacklisted && ex.Pattern != "":
		fmt.Fprintf(&sb, "* **Their presence**: blacklisted by the pattern %s, so it is not routed to anyone. Users who share a room with them still see it.\n", CodeUser(ex.Pattern))
	case ex.Blacklisted:
		sb.WriteString("* **Their presence**: blacklisted, so it is not routed to anyone. Users who share a room with them still see it.\n")
	case len(ex.Recipients) == 0 && len(ex.Groups) > 0:
		sb.WriteString("* **Their presence**: goes to users who share a room with them and to their groups' members (below); no always-send user receives it.\n")
	case len(ex.Recipients) == 0:
		sb.WriteString("* **Their presence**: goes to users who share a room with them; no always-send user receives it extra.\n")
	default:
		fmt.Fprintf(&sb, "* **Their presence**: routed to %d always-send %s: %s, besides users who share a room with them.\n", len(ex.Recipients), Plural(len(ex.Recipients), "user", "users"), userList(ex.Recipients, 20))
	}
	if ex.Remote && !ex.Blacklisted {
		fmt.Fprintf(&sb, "* **On another server**: their presence reaches this server only for users who share a room with them, and it is routed on to local always-send users only.\n")
	}
	for _, g := range ex.Groups {
		switch {
		case ex.Blacklisted:
			fmt.Fprintf(&sb, "* **Group %s**: a member, but blacklisted, so no member receives their presence; they receive the other members'.\n", Code(g.Name))
		case g.Unknown:
			fmt.Fprintf(&sb, "* **Group %s**: a pattern makes them a member, but they have not synced since it was added: they receive the members' presence from their next /sync on, and the members receive theirs once they have.\n", Code(g.Name))
		default:
			fmt.Fprintf(&sb, "* **Group %s**: a member; their presence goes to its %d other %s, and they receive the other members'.\n", Code(g.Name), g.Recipients, Plural(g.Recipients, "member", "members"))
		}
	}
	switch {
	case ex.AlwaysSend && ex.Remote:
		fmt.Fprintf(&sb, "* **They receive**: the presence of every user of %s who is not blacklisted (always-send), sent to their server, which shows it to them only if it routes presence to them too (or they share a room).\n", Code(r.Domain))
	case ex.AlwaysSend:
		sb.WriteString("* **They receive**: the presence of every user who is not blacklisted (always-send).\n")
	case len(ex.Groups) > 0:
		sb.WriteString("* **They receive**: the presence of their groups' members who are not blacklisted, and of users who share a room with them.\n")
	default:
		sb.WriteString("* **They receive**: only the presence of users who share a room with them.\n")
	}
	return Success(sb.String())
}

func (r *Runner) history(ctx context.Context, count int) (*Reply, error) {
	changes, err := r.Store.History(ctx, count)
	if err != nil {
		return nil, err
	}
	if len(changes) == 0 {
		return Success("No changes yet."), nil
	}
	var lines strings.Builder
	shown := 0
	for _, c := range changes {
		line := fmt.Sprintf("* **v%d** %s, %s: %s", c.Version, c.CreatedAt.Format("2006-01-02 15:04:05 UTC"), CodeUser(c.Sender), describeChange(c))
		if strings.HasPrefix(c.Command, undoPrefix) {
			line += " (" + c.Command + ")"
		}
		if strings.HasSuffix(c.Command, selfService) {
			line += selfService
		}
		if c.Reason != "" {
			line += " — reason: " + literal(c.Reason, MaxReasonRunes)
		}
		line += "\n"
		if shown > 0 && lines.Len()+len(line) > listBudget {
			break
		}
		lines.WriteString(line)
		shown++
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "The last %d %s, newest first:\n\n%s", shown, Plural(shown, "change", "changes"), lines.String())
	if shown < len(changes) {
		fmt.Fprintf(&sb, "\n%d older %s not shown to keep this message under Matrix's size limit; ask for fewer with `%s history <count>`.\n", len(changes)-shown, Plural(len(changes)-shown, "change is", "changes are"), r.Prefix)
	}
	return Success(sb.String()), nil
}

func (r *Runner) status(ctx context.Context) (*Reply, error) {
	version := r.Engine.Version()
	alwaysSend, blacklist, patterns := r.Engine.Counts()
	backlog, err := r.Store.Backlog(ctx)
	if err != nil {
		return nil, err
	}
	contact := "never (is the adapter installed in Synapse?)"
	if last := r.LastContact(); !last.IsZero() {
		contact = fmt.Sprintf("%s ago", time.Since(last).Round(time.Second))
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "**presence-router status**\n\n")
	fmt.Fprintf(&sb, "* Version: %d\n", version)
	fmt.Fprintf(&sb, "* always-send: %d %s\n", alwaysSend, Plural(alwaysSend, "user", "users"))
	users := blacklist - patterns
	fmt.Fprintf(&sb, "* blacklist: %d %s", users, Plural(users, "user", "users"))
	if patterns > 0 {
		fmt.Fprintf(&sb, " and %d %s", patterns, Plural(patterns, "pattern", "patterns"))
	}
	sb.WriteString("\n")
	groups := r.Engine.Groups()
	members := 0
	for _, g := range groups {
		members += g.Members
	}
	fmt.Fprintf(&sb, "* groups: %d (%d %s in all; %d %s known to match a group's pattern)\n", len(groups), members, Plural(members, "member", "members"),
		r.Engine.KnownCount(), Plural(r.Engine.KnownCount(), "user", "users"))
	fmt.Fprintf(&sb, "* Last adapter contact: %s\n", contact)
	fmt.Fprintf(&sb, "* Commands waiting: %d\n", max(backlog-1, 0))
	fmt.Fprintf(&sb, "* Uptime: %s\n", time.Since(r.Started).Round(time.Second))
	fmt.Fprintf(&sb, "* Control room: %s (pinned)\n", Code(r.Service.ControlRoom()))
	for _, problem := range r.Service.Problems() {
		fmt.Fprintf(&sb, "* ⚠️ %s\n", literal(problem, 1000))
	}
	return Success(sb.String()), nil
}

// listPhrase names a list in a sentence: "the always-send list", "the
// blacklist", "the group `support`".
func listPhrase(name rules.List) string {
	if group, ok := name.Group(); ok {
		return "the group " + Code(group)
	}
	if name == rules.Blacklist {
		return "the blacklist"
	}
	return "the " + name.String() + " list"
}

// describeChange says what a change did: its entries, or for a change with
// none (the control room's move after a room upgrade) its command text.
func describeChange(c rules.Change) string {
	if len(c.Entries) == 0 {
		return literal(c.Command, MaxReasonRunes)
	}
	return describeEntries(c.Entries)
}

func describeEntries(entries []rules.Entry) string {
	return strings.Join(changePhrases(entries, false, 5, rules.List.String), "; ")
}

// userList renders up to limit user IDs as code spans, then a count.
func userList(users []id.UserID, limit int) string {
	parts := make([]string, 0, min(len(users), limit)+1)
	for i, user := range users {
		if i == limit {
			parts = append(parts, fmt.Sprintf("%d more", len(users)-limit))
			break
		}
		parts = append(parts, CodeUser(user))
	}
	switch len(parts) {
	case 1:
		return parts[0]
	case 2:
		return parts[0] + " and " + parts[1]
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1]
}

// Plural picks the word for n things: one or many.
func Plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func capitalize(s string) string {
	if s == "" || s[0] == '`' {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
