package bot

import (
	"context"
	"fmt"
	"strings"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/rules"
	"github.com/presence-router/presence-router/userid"
)

// isListedAdmin reports whether user is in bot.admins.
func (b *Bot) isListedAdmin(user id.UserID) bool {
	_, ok := b.admins[user]
	return ok
}

// mayCommand decides whether sender may run cmd: help is open to everyone
// in the control room; everything else needs bot.admins, or a power level of
// at least bot.admin_power_level in the control room. The power levels are
// read from the homeserver for every such check, so a demotion or a
// promotion counts from the next command on. It returns the reason for a
// refusal.
func (b *Bot) mayCommand(ctx context.Context, sender id.UserID, cmd *Command) (bool, string) {
	if cmd == nil || specFor(cmd.Verb, cmd.List).open || b.isListedAdmin(sender) {
		return true, ""
	}
	need := b.cfg.Bot.AdminPowerLevel
	if need == nil {
		return false, fmt.Sprintf("%s is not a presence-router admin: only users in bot.admins may use this command.", codeUser(sender))
	}
	plCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pl, err := b.readPowerLevels(plCtx, b.ControlRoom())
	if err != nil {
		b.log.WithError(err).Warn("Failed to read the control room's power levels")
		return false, "Could not read this room's power levels to check your permission; try again later."
	}
	b.checkPowerLevelFloor(pl)
	if level := pl.GetUserLevel(sender); level < *need {
		return false, fmt.Sprintf("%s is not a presence-router admin: only users in bot.admins or with power level %d or more in this room may use this command (yours is %d).", codeUser(sender), *need, level)
	}
	return true, ""
}

// readPowerLevels reads a room's power levels from the homeserver. It does
// not use mautrix's state store, which would keep the first answer.
func (b *Bot) readPowerLevels(ctx context.Context, room id.RoomID) (*event.PowerLevelsEventContent, error) {
	var pl event.PowerLevelsEventContent
	if err := b.intent().StateEvent(ctx, room, event.StatePowerLevels, "", &pl); err != nil {
		return nil, fmt.Errorf("failed to read the power levels of %s: %w", room, err)
	}
	return &pl, nil
}

// checkPowerLevelFloor warns when bot.admin_power_level lets every member
// of the control room command: it is at or below the room's users_default.
func (b *Bot) checkPowerLevelFloor(pl *event.PowerLevelsEventContent) {
	need := b.cfg.Bot.AdminPowerLevel
	if need == nil || *need > pl.UsersDefault {
		b.setProblem(problemPowerLevel, "")
		return
	}
	msg := fmt.Sprintf("bot.admin_power_level (%d) is at or below the control room's default power level (users_default %d): every member of the room may change the lists. Raise bot.admin_power_level or the room's users_default.", *need, pl.UsersDefault)
	b.lock.RLock()
	known := b.problems[problemPowerLevel] == msg
	b.lock.RUnlock()
	if !known {
		b.log.Warn(msg)
		b.setProblem(problemPowerLevel, msg)
	}
}

// execute runs a permitted command inside the caller's store transaction.
func (b *Bot) execute(ctx context.Context, evt *event.Event, cmd *Command) (*reply, *rules.Change, error) {
	return specFor(cmd.Verb, cmd.List).run(b, ctx, evt, cmd)
}

func (b *Bot) mutate(ctx context.Context, evt *event.Event, cmd *Command) (*reply, *rules.Change, error) {
	list := cmd.List
	action := rules.Add
	if cmd.Verb == VerbRemove {
		action = rules.Remove
	}
	m := rules.Mutation{EventID: evt.ID, Sender: evt.Sender, Command: b.cfg.Bot.CommandPrefix + " " + cmd.Raw, Reason: cmd.Reason}
	for _, user := range cmd.Users {
		m.Entries = append(m.Entries, rules.Entry{List: list, UserID: user, Action: action})
	}
	res, err := b.store.Apply(ctx, m)
	if err != nil {
		return nil, nil, err
	}
	var sb strings.Builder
	verb, prep := "Added", "to"
	already := "already on"
	if action == rules.Remove {
		verb, prep, already = "Removed", "from", "not on"
	}
	if res.Change != nil {
		fmt.Fprintf(&sb, "%s %s %s %s", verb, userList(entryUsers(res.Change.Entries), 20), prep, listPhrase(cmd.List))
		if cmd.Reason != "" {
			cut := ""
			if cmd.ReasonCut {
				cut = fmt.Sprintf(", cut to its first %d characters", MaxReasonRunes)
			}
			fmt.Fprintf(&sb, " (reason%s: %s)", cut, literal(cmd.Reason, MaxReasonRunes))
		}
		fmt.Fprintf(&sb, ". Version %d.", res.Change.Version)
		switch {
		case res.Change.PushToAll && res.Change.PushCount > 0:
			fmt.Fprintf(&sb, " Sending current presence to every always-send user (%d).", res.Change.PushCount)
		case len(res.Change.PushTo) > 0:
			fmt.Fprintf(&sb, " Sending current presence to %s.", userList(res.Change.PushTo, 10))
		}
		if list == rules.Blacklist && action == rules.Add {
			sb.WriteString(b.patternReach(res.Change.Entries))
		}
	}
	if len(res.Unchanged) > 0 {
		if sb.Len() > 0 {
			sb.WriteString("\n\n")
		}
		fmt.Fprintf(&sb, "%s %s %s: nothing to do.", capitalize(userList(entryUsers(res.Unchanged), 20)), plural(len(res.Unchanged), "is", "are")+" "+already, listPhrase(cmd.List))
	}
	return success(sb.String()), res.Change, nil
}

// patternReach says, for the patterns among entries, how many of the users
// the router knows by name (the always-send users) they match; which other
// users they hide shows as those users' presence changes.
func (b *Bot) patternReach(entries []rules.Entry) string {
	alwaysSend := b.engine.AlwaysSend()
	patterns, matched := 0, 0
	for _, e := range entries {
		if !userid.IsPattern(string(e.UserID)) {
			continue
		}
		patterns++
		m := userid.Compile(string(e.UserID))
		for _, u := range alwaysSend {
			if m != nil && m.Match(string(u)) {
				matched++
			}
		}
	}
	if patterns == 0 {
		return ""
	}
	return fmt.Sprintf(" The %s %d of the %d always-send %s (their own presence is no longer routed; they still receive everyone's). Other users it hides are not listed anywhere: `%s explain <user>` tells for one.",
		plural(patterns, "pattern matches", "patterns match"), matched, len(alwaysSend), plural(len(alwaysSend), "user", "users"), b.cfg.Bot.CommandPrefix)
}

func (b *Bot) list(name rules.List) (*reply, error) {
	version, alwaysSend, blacklist := b.engine.Rules()
	users := alwaysSend
	meaning := "They receive the presence of every user who is not blacklisted."
	if name == rules.Blacklist {
		users = blacklist
		meaning = "Their presence is never routed (users who share a room with them still see it)."
	}
	if len(users) == 0 {
		return success(fmt.Sprintf("%s is empty (version %d).", capitalize(listPhrase(name)), version)), nil
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
	fmt.Fprintf(&sb, "%s has %d %s", capitalize(listPhrase(name)), len(exact), plural(len(exact), "user", "users"))
	if len(patterns) > 0 {
		fmt.Fprintf(&sb, " and %d %s (matched case-insensitively)", len(patterns), plural(len(patterns), "pattern", "patterns"))
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
			line := "* " + codeUser(user) + "\n"
			if sb.Len()+len(line) > listBudget || shown == listMaxLines {
				break
			}
			sb.WriteString(line)
			shown++
		}
		sb.WriteString("\n")
	}
	if shown < len(users) {
		fmt.Fprintf(&sb, "…and %d more, not shown to keep this message under Matrix's size limit. The full list: `GET /_presence_router/v1/rules`; one user: `%s explain <user>`.", len(users)-shown, b.cfg.Bot.CommandPrefix)
	}
	return success(strings.TrimRight(sb.String(), "\n")), nil
}

func (b *Bot) explain(user id.UserID) *reply {
	ex := b.engine.Explain(user)
	var sb strings.Builder
	fmt.Fprintf(&sb, "**%s** (version %d)\n\n", codeUser(user), ex.Version)
	switch {
	case ex.Blacklisted && ex.Pattern != "":
		fmt.Fprintf(&sb, "* **Their presence**: blacklisted by the pattern %s, so it is not routed to anyone. Users who share a room with them still see it.\n", codeUser(ex.Pattern))
	case ex.Blacklisted:
		sb.WriteString("* **Their presence**: blacklisted, so it is not routed to anyone. Users who share a room with them still see it.\n")
	case len(ex.Recipients) == 0:
		sb.WriteString("* **Their presence**: goes to users who share a room with them; no always-send user receives it extra.\n")
	default:
		fmt.Fprintf(&sb, "* **Their presence**: routed to %d always-send %s: %s, besides users who share a room with them.\n", len(ex.Recipients), plural(len(ex.Recipients), "user", "users"), userList(ex.Recipients, 20))
	}
	if ex.Remote && !ex.Blacklisted {
		fmt.Fprintf(&sb, "* **On another server**: their presence reaches this server only for users who share a room with them, and it is routed on to local always-send users only.\n")
	}
	switch {
	case ex.AlwaysSend && ex.Remote:
		fmt.Fprintf(&sb, "* **They receive**: the presence of every user of %s who is not blacklisted (always-send), sent to their server, which shows it to them only if it routes presence to them too (or they share a room).\n", code(b.cfg.Homeserver.Domain))
	case ex.AlwaysSend:
		sb.WriteString("* **They receive**: the presence of every user who is not blacklisted (always-send).\n")
	default:
		sb.WriteString("* **They receive**: only the presence of users who share a room with them.\n")
	}
	return success(sb.String())
}

func (b *Bot) history(ctx context.Context, count int) (*reply, error) {
	changes, err := b.store.History(ctx, count)
	if err != nil {
		return nil, err
	}
	if len(changes) == 0 {
		return success("No changes yet."), nil
	}
	var lines strings.Builder
	shown := 0
	for _, c := range changes {
		line := fmt.Sprintf("* **v%d** %s, %s: %s", c.Version, c.CreatedAt.Format("2006-01-02 15:04:05 UTC"), codeUser(c.Sender), describeEntries(c.Entries))
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
	fmt.Fprintf(&sb, "The last %d %s, newest first:\n\n%s", shown, plural(shown, "change", "changes"), lines.String())
	if shown < len(changes) {
		fmt.Fprintf(&sb, "\n%d older %s not shown to keep this message under Matrix's size limit; ask for fewer with `%s history <count>`.\n", len(changes)-shown, plural(len(changes)-shown, "change is", "changes are"), b.cfg.Bot.CommandPrefix)
	}
	return success(sb.String()), nil
}

func (b *Bot) status(ctx context.Context) (*reply, error) {
	version, _, _ := b.engine.Rules()
	alwaysSend, blacklist := b.engine.Counts()
	backlog, err := b.store.Backlog(ctx)
	if err != nil {
		return nil, err
	}
	contact := "never (is the adapter installed in Synapse?)"
	if last := b.lastContact(); !last.IsZero() {
		contact = fmt.Sprintf("%s ago", time.Since(last).Round(time.Second))
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "**presence-router status**\n\n")
	fmt.Fprintf(&sb, "* Version: %d\n", version)
	fmt.Fprintf(&sb, "* always-send: %d %s\n", alwaysSend, plural(alwaysSend, "user", "users"))
	fmt.Fprintf(&sb, "* blacklist: %d %s\n", blacklist, plural(blacklist, "user", "users"))
	fmt.Fprintf(&sb, "* Last adapter contact: %s\n", contact)
	fmt.Fprintf(&sb, "* Commands waiting: %d\n", max(backlog-1, 0))
	fmt.Fprintf(&sb, "* Uptime: %s\n", time.Since(b.started).Round(time.Second))
	fmt.Fprintf(&sb, "* Control room: %s (pinned)\n", code(b.ControlRoom()))
	for _, problem := range b.Problems() {
		fmt.Fprintf(&sb, "* ⚠️ %s\n", literal(problem, 1000))
	}
	return success(sb.String()), nil
}

// listPhrase names a list in a sentence: "the always-send list", "the blacklist".
func listPhrase(name rules.List) string {
	if name == rules.Blacklist {
		return "the blacklist"
	}
	return "the " + name.String() + " list"
}

func entryUsers(entries []rules.Entry) []id.UserID {
	users := make([]id.UserID, len(entries))
	for i, e := range entries {
		users[i] = e.UserID
	}
	return users
}

func describeEntries(entries []rules.Entry) string {
	type key struct {
		action rules.Action
		list   rules.List
	}
	groups := map[key][]id.UserID{}
	var order []key
	for _, e := range entries {
		k := key{e.Action, e.List}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], e.UserID)
	}
	parts := make([]string, 0, len(order))
	for _, k := range order {
		verb, prep := "added", "to"
		if k.action == rules.Remove {
			verb, prep = "removed", "from"
		}
		parts = append(parts, fmt.Sprintf("%s %s %s %s", verb, userList(groups[k], 5), prep, k.list))
	}
	return strings.Join(parts, "; ")
}

// userList renders up to limit user IDs as code spans, then a count.
func userList(users []id.UserID, limit int) string {
	parts := make([]string, 0, min(len(users), limit)+1)
	for i, user := range users {
		if i == limit {
			parts = append(parts, fmt.Sprintf("%d more", len(users)-limit))
			break
		}
		parts = append(parts, codeUser(user))
	}
	switch len(parts) {
	case 1:
		return parts[0]
	case 2:
		return parts[0] + " and " + parts[1]
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1]
}

func plural(n int, one, many string) string {
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
