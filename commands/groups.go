package commands

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/router"
	"github.com/presence-router/presence-router/rules"
	"github.com/presence-router/presence-router/userid"
)

// groupTopic is the word of the group commands (`group add …`): it stands
// in their specs where a list would, and names their help topic. A
// command's own list is the named group's (Command.Group).
const groupTopic rules.List = "group"

// The verbs of groups besides add, remove and list.
const (
	VerbCreate Verb = "create"
	VerbDelete Verb = "delete"
)

// groupAliases are the ways the group word may be typed.
var groupAliases = map[string]bool{"group": true, "groups": true}

func groupSpecs() []*commandSpec {
	return []*commandSpec{
		{verb: VerbCreate, list: groupTopic, args: "<name> [reason]", parse: parseGroupName, run: (*Runner).groupChange,
			summary: "create a group: each member receives every other member's presence (names: a-z, 0-9, '.', '_' and '-', up to 64)", example: "support the support desk"},
		{verb: VerbDelete, list: groupTopic, args: "<name> [reason]", parse: parseGroupName, run: (*Runner).groupChange,
			summary: "delete a group and its members; its members stop receiving each other's presence at their next change", example: "support"},
		{verb: VerbAdd, list: groupTopic, args: "<name> <user-or-pattern>... [reason]", parse: parseGroupMembers, run: (*Runner).mutate,
			summary: "add members; a pattern such as `@*:example.org` (the whole server) covers every matching user once they sync; new members get the others' current presence at once", example: "support @alice:example.org @bob:example.org"},
		{verb: VerbRemove, list: groupTopic, args: "<name> <user-or-pattern>... [reason]", parse: parseGroupMembers, run: (*Runner).mutate,
			summary: "remove members (a user a pattern matches stays until the pattern goes, or the blacklist hides them)", example: "support @bob:example.org"},
		{verb: VerbList, list: groupTopic, args: "[name]", parse: parseGroupList, run: (*Runner).groupList,
			summary: "the groups, or one group's members"},
	}
}

// readGroupName reads the group name argument of a group command.
func readGroupName(cmd *Command, args []token) *ParseError {
	spec := specFor(cmd.Verb, groupTopic)
	if len(args) == 0 {
		return argError(fmt.Sprintf("Missing the group's name: `%s %s`", spec.Words(), spec.args))
	}
	name, err := rules.ParseGroupName(args[0].text)
	if err != nil {
		return argError("Invalid argument", ArgError{args[0].text, err.Error()})
	}
	cmd.Group = name
	return nil
}

// groupOptions takes the options out of a group command's arguments and
// reads the group's name, the first argument left.
func groupOptions(cmd *Command, rest string, args []token) (string, []token, *ParseError) {
	rest, args, opts, bad := takeOptions(rest, args)
	cmd.DryRun, cmd.Force = opts.DryRun, opts.Force
	if len(bad) > 0 {
		return "", nil, argError("Invalid argument", bad...)
	}
	return rest, args, readGroupName(cmd, args)
}

func parseGroupName(cmd *Command, rest string, args []token) *ParseError {
	rest, args, perr := groupOptions(cmd, rest, args)
	if perr != nil {
		return perr
	}
	if len(args) > 1 {
		cmd.Reason, cmd.ReasonCut = sanitizeCut(strings.TrimSpace(rest[args[1].start:]), MaxReasonRunes)
	}
	return nil
}

func parseGroupMembers(cmd *Command, rest string, args []token) *ParseError {
	rest, args, perr := groupOptions(cmd, rest, args)
	if perr != nil {
		return perr
	}
	return readUsers(cmd, rest, args[1:], blacklistPatterns, nil, "member")
}

func parseGroupList(cmd *Command, _ string, args []token) *ParseError {
	switch len(args) {
	case 0:
		return nil
	case 1:
		return readGroupName(cmd, args)
	}
	return argError("`group list` takes at most one group name")
}

// groupChange runs group create and group delete.
func (r *Runner) groupChange(ctx context.Context, origin Origin, cmd *Command) (*Reply, *rules.Change, error) {
	action := rules.Add
	if cmd.Verb == VerbDelete {
		action = rules.Remove
	}
	m := rules.Mutation{EventID: origin.EventID, Sender: origin.Sender, Command: r.Prefix + " " + cmd.Raw, Reason: cmd.Reason, DryRun: cmd.DryRun,
		Entries: []rules.Entry{rules.GroupEntry(cmd.Group, action)}}
	res, err := r.Store.Apply(ctx, m)
	if rep := r.groupRefusal(err, cmd.Group); rep != nil {
		return rep, nil, nil
	} else if err != nil {
		return nil, nil, err
	}
	if res.Change == nil {
		if action == rules.Add {
			return Failure(fmt.Sprintf("A group named %s already exists (%s shows it). Nothing was changed.", Code(cmd.Group), Code(r.Prefix+" group list "+string(cmd.Group))), ResultInvalid), nil, nil
		}
		return r.noSuchGroup(cmd.Group), nil, nil
	}
	var sb strings.Builder
	switch {
	case m.DryRun && action == rules.Add:
		fmt.Fprintf(&sb, "Dry run: would create the group %s.", Code(cmd.Group))
	case action == rules.Add:
		fmt.Fprintf(&sb, "Created the group %s. Add members with %s.", Code(cmd.Group), Code(r.Prefix+" group add "+string(cmd.Group)+" <user-or-pattern>..."))
	default:
		members := len(res.Change.Entries) - 1
		would := "Deleted"
		if m.DryRun {
			would = "Dry run: would delete"
		}
		fmt.Fprintf(&sb, "%s the group %s and its %d %s; they stop receiving each other's presence through it at their next presence change.",
			would, Code(cmd.Group), members, Plural(members, "member", "members"))
	}
	if cmd.Reason != "" {
		fmt.Fprintf(&sb, " Reason: %s.", literal(cmd.Reason, MaxReasonRunes))
	}
	if m.DryRun {
		sb.WriteString("\n\nNothing was changed.")
		return Success(sb.String()), nil, nil
	}
	fmt.Fprintf(&sb, " Version %d.", res.Change.Version)
	return Success(sb.String()), res.Change, nil
}

// groupRefusal words the reply to a group mutation the store refused (nil
// for another error, or none).
func (r *Runner) groupRefusal(err error, name rules.GroupName) *Reply {
	switch {
	case errors.Is(err, rules.ErrNoSuchGroup):
		return r.noSuchGroup(name)
	case errors.Is(err, rules.ErrTooManyGroups), errors.Is(err, rules.ErrTooManyPatterns):
		return Failure(capitalize(err.Error())+". Nothing was changed.", ResultInvalid)
	}
	return nil
}

func (r *Runner) noSuchGroup(name rules.GroupName) *Reply {
	var names []string
	for _, g := range r.Engine.Groups() {
		names = append(names, Code(g.Name))
	}
	have := "There are no groups yet"
	if len(names) > 0 {
		have = "The groups are " + strings.Join(names, ", ")
	}
	return Failure(fmt.Sprintf("There is no group %s. %s; %s makes one. Nothing was changed.", Code(name), have, Code(r.Prefix+" group create <name>")), ResultInvalid)
}

// stillInGroup says, for users a group remove names exactly, which stay
// members through a pattern of the group that remains.
func (r *Runner) stillInGroup(name rules.GroupName, users []id.UserID) string {
	var patterns []string
	for _, g := range r.Engine.Groups() {
		if g.Name != name {
			continue
		}
		for _, p := range g.Patterns {
			if !slices.Contains(users, p) {
				patterns = append(patterns, string(p))
			}
		}
	}
	if len(patterns) == 0 {
		return ""
	}
	set := userid.NewSet(patterns)
	var sb strings.Builder
	for _, u := range users {
		if userid.IsPattern(string(u)) {
			continue
		}
		if p, ok := set.Match(string(u)); ok {
			fmt.Fprintf(&sb, " %s stays in the group: the pattern %s matches them (remove the pattern, or blacklist them to hide their presence).", CodeUser(u), CodeUser(id.UserID(p)))
		}
	}
	return sb.String()
}

// groupList runs group list: every group with its size, or one group's
// members.
func (r *Runner) groupList(_ context.Context, _ Origin, cmd *Command) (*Reply, *rules.Change, error) {
	groups := r.Engine.Groups()
	version := r.Engine.Version()
	if cmd.Group == "" {
		if len(groups) == 0 {
			return Success(fmt.Sprintf("There are no groups (version %d). %s makes one.", version, Code(r.Prefix+" group create <name>"))), nil, nil
		}
		var sb strings.Builder
		fmt.Fprintf(&sb, "%d %s (version %d); each member receives every other member's presence:\n\n", len(groups), Plural(len(groups), "group", "groups"), version)
		for _, g := range groups {
			fmt.Fprintf(&sb, "* %s: %s\n", Code(g.Name), groupSize(g))
		}
		return Success(strings.TrimRight(sb.String(), "\n")), nil, nil
	}
	for _, g := range groups {
		if g.Name != cmd.Group {
			continue
		}
		var sb strings.Builder
		fmt.Fprintf(&sb, "The group %s: %s (version %d).\n\n", Code(g.Name), groupSize(g), version)
		shown, total := 0, len(g.Patterns)+len(g.Users)
		for i, members := range [][]id.UserID{g.Patterns, g.Users} {
			if len(members) == 0 {
				continue
			}
			sb.WriteString([]string{"**Patterns**\n\n", "**Users**\n\n"}[i])
			for _, m := range members {
				line := "* " + CodeUser(m) + "\n"
				if sb.Len()+len(line) > listBudget || shown == listMaxLines {
					break
				}
				sb.WriteString(line)
				shown++
			}
			sb.WriteString("\n")
		}
		if shown < total {
			fmt.Fprintf(&sb, "…and %d more, not shown to keep this message under Matrix's size limit. The full list: `GET /_presence_router/v1/rules`.", total-shown)
		}
		return Success(strings.TrimRight(sb.String(), "\n")), nil, nil
	}
	return r.noSuchGroup(cmd.Group), nil, nil
}

// groupSize says how a group is made up.
func groupSize(g router.GroupInfo) string {
	users, patterns, members := len(g.Users), len(g.Patterns), g.Members
	s := fmt.Sprintf("%d %s", users, Plural(users, "user", "users"))
	if patterns > 0 {
		s += fmt.Sprintf(" and %d %s, %d %s in all (users a pattern matches count once they sync)", patterns, Plural(patterns, "pattern", "patterns"), members, Plural(members, "member", "members"))
	}
	return s
}
