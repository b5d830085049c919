package commands

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/presence-router/presence-router/rules"
)

// commandSpec declares one command. The parser, permissions, dispatch, the
// help and the README's command table (checked by docs_test.go) all come
// from the table below. Replies go through the inbox (they are committed
// with the command's effect and sent after), which is why mautrix's
// commands.Processor, which sends replies itself, is not used.
type commandSpec struct {
	verb Verb
	list rules.List // "" for commands that are not about a list
	// args is the usage of the arguments, e.g. "<user>... [reason]".
	args string
	// summary says what it does: the README's table and the help overview.
	summary string
	// example holds the arguments of an example ("" for none).
	example string
	// open: any member of the control room may run it; others are admin-only.
	open bool
	// changes: a command about changes rather than a list (help groups it).
	changes bool
	// direct: it may be sent in a direct chat with the bot; directOnly:
	// only there (a user's own presence, open to every local user).
	direct, directOnly bool
	// parse reads the arguments into cmd; rest is the text after the
	// command's words, args its tokens.
	parse func(cmd *Command, rest string, args []token) *ParseError
	// run executes a permitted command inside the caller's store transaction.
	run func(r *Runner, ctx context.Context, origin Origin, cmd *Command) (*Reply, *rules.Change, error)
}

// Words returns what is typed after the prefix, e.g. "always-send add".
func (c *commandSpec) Words() string {
	if c.list == "" {
		return string(c.verb)
	}
	return c.list.String() + " " + string(c.verb)
}

// Usage returns the command as typed, with its arguments, after prefix.
func (c *commandSpec) Usage(prefix string) string {
	return strings.TrimSpace(prefix + " " + c.Words() + " " + c.args)
}

// topic is the help topic the command belongs to.
func (c *commandSpec) topic() string {
	if c.list != "" {
		return c.list.String()
	}
	return string(c.verb)
}

var commands []*commandSpec

func init() {
	commands = []*commandSpec{
		{verb: VerbHelp, args: "[command]", summary: "the overview, or one command's details (open to every member)", example: "blacklist", open: true,
			parse: parseHelp, run: func(r *Runner, _ context.Context, _ Origin, cmd *Command) (*Reply, *rules.Change, error) {
				return Success(HelpMarkdown(r.Prefix, cmd.Topic)), nil, nil
			}},
		listChange(rules.AlwaysSend, VerbAdd, "these users receive every non-blacklisted user's presence; they get everyone's current presence at once", "@dash:example.org Support dashboard"),
		listChange(rules.AlwaysSend, VerbRemove, "these users no longer receive everyone's presence", "@dash:example.org"),
		listShow(rules.AlwaysSend),
		listChange(rules.Blacklist, VerbAdd, "these users' presence is never routed (people who share a room with them still see it); a pattern with * or ? (case-insensitive) covers many users, such as a bridge's puppets", "@whatsapp_*:example.org WhatsApp puppets"),
		listChange(rules.Blacklist, VerbRemove, "these users' (or patterns') presence is routed again; the always-send users get it at once", "@ceo:example.org"),
		listShow(rules.Blacklist),
	}
	commands = append(commands, groupSpecs()...)
	commands = append(commands, directSpecs()...)
	commands = append(commands, []*commandSpec{
		{verb: VerbExplain, args: "[user]", direct: true, summary: "where the user's presence goes (always-send users, groups), and what they receive; without a user, the sender's", example: "@alice:example.org",
			parse: parseExplain, run: func(r *Runner, _ context.Context, origin Origin, cmd *Command) (*Reply, *rules.Change, error) {
				user := origin.Sender
				if len(cmd.Users) > 0 {
					user = cmd.Users[0]
				}
				return r.explain(user), nil, nil
			}},
		{verb: VerbHistory, args: "[count]", summary: fmt.Sprintf("the last changes (default %d, at most %d), newest first: who, when, what, why", defaultHistory, maxHistory), example: "5",
			parse: parseHistory, run: func(r *Runner, ctx context.Context, _ Origin, cmd *Command) (*Reply, *rules.Change, error) {
				rep, err := r.history(ctx, cmd.Count)
				return rep, nil, err
			}},
		{verb: VerbUndo, changes: true, args: "<version> [reason]", summary: "apply the inverse of that change as a new change (refused when a later change touched the same entries, unless --force)", example: "12 added by mistake",
			parse: parseUndo, run: (*Runner).undo},
		{verb: VerbIdentity, changes: true, args: "accept <user> [reason]", summary: "in an encrypted control room, trust the user's new cross-signing identity (after they reset it in their client): their devices' commands count again", example: "accept @alice:example.org reset her identity on a new phone",
			parse: parseIdentity, run: (*Runner).acceptIdentity},
		{verb: VerbStatus, summary: "version, list sizes, when the adapter last asked, uptime, the pinned control room and any problem",
			parse: noArguments, run: func(r *Runner, ctx context.Context, _ Origin, _ *Command) (*Reply, *rules.Change, error) {
				rep, err := r.status(ctx)
				return rep, nil, err
			}},
	}...)
}

func listChange(list rules.List, verb Verb, summary, example string) *commandSpec {
	args := "<user>... [reason]"
	if list == rules.Blacklist {
		args = "<user-or-pattern>... [reason]"
	}
	return &commandSpec{verb: verb, list: list, args: args, summary: summary, example: example,
		parse: parseUserChange, run: (*Runner).mutate}
}

func listShow(list rules.List) *commandSpec {
	return &commandSpec{verb: VerbList, list: list, summary: "show the list", parse: noArguments,
		run: func(r *Runner, _ context.Context, _ Origin, cmd *Command) (*Reply, *rules.Change, error) {
			rep, err := r.list(cmd.List)
			return rep, nil, err
		}}
}

// specFor finds the command with the given verb and list.
func specFor(verb Verb, list rules.List) *commandSpec {
	for _, c := range commands {
		if c.verb == verb && c.list == list {
			return c
		}
	}
	return nil
}

func argError(msg string, args ...ArgError) *ParseError {
	return &ParseError{Msg: msg, Args: args}
}

func noArguments(cmd *Command, _ string, args []token) *ParseError {
	if len(args) > 0 {
		return argError(fmt.Sprintf("`%s` takes no arguments", specFor(cmd.Verb, cmd.List).Words()))
	}
	return nil
}

func parseHelp(cmd *Command, _ string, args []token) *ParseError {
	if len(args) == 0 {
		return nil
	}
	topic := strings.ToLower(args[0].text)
	if list, ok := listAliases[topic]; ok {
		topic = list.String()
	}
	if !isHelpTopic(topic) {
		return argError(fmt.Sprintf("No help topic %s", Code(args[0].text)))
	}
	cmd.Topic = topic
	return nil
}

func parseUserChange(cmd *Command, rest string, args []token) *ParseError {
	patterns := noPatterns
	if cmd.List == rules.Blacklist {
		patterns = blacklistPatterns
	}
	rest, args, opts, bad := takeOptions(rest, args)
	cmd.DryRun, cmd.Force = opts.DryRun, opts.Force
	return readUsers(cmd, rest, args, patterns, bad, "user")
}

// readUsers reads the users (or patterns) of args, then the reason, into
// cmd, after the bad arguments found before; what names the arguments in
// the error when there are none.
func readUsers(cmd *Command, rest string, args []token, patterns patternUse, bad []ArgError, what string) *ParseError {
	users, reason, badUsers := parseUsers(rest, args, patterns, cmd.Force)
	bad = append(bad, badUsers...)
	if len(bad) > 0 {
		return argError(fmt.Sprintf("Invalid %s", Plural(len(bad), "argument", "arguments")), bad...)
	}
	if len(users) == 0 {
		spec := specFor(cmd.Verb, cmd.List)
		return argError(fmt.Sprintf("Missing %s: `%s %s`", what, spec.Words(), spec.args))
	}
	if len(users) > maxUsers {
		return argError(fmt.Sprintf("Too many users (%d); at most %d per command", len(users), maxUsers))
	}
	cmd.Users = users
	cmd.Reason, cmd.ReasonCut = sanitizeCut(reason, MaxReasonRunes)
	return nil
}

func parseExplain(cmd *Command, rest string, args []token) *ParseError {
	if len(args) == 0 {
		return nil // the sender
	}
	if len(args) != 1 {
		return argError("`explain` takes one user, or none for yourself")
	}
	users, _, bad := parseUsers(rest, args, noPatterns, false)
	if len(bad) > 0 {
		return argError("Invalid argument", bad...)
	}
	if len(users) != 1 {
		return argError("`explain` takes exactly one user", ArgError{args[0].text, "not a user ID"})
	}
	cmd.Users = users
	return nil
}

func parseIdentity(cmd *Command, rest string, args []token) *ParseError {
	if len(args) == 0 || !strings.EqualFold(args[0].text, "accept") {
		return argError("`identity` takes `accept <user> [reason]`")
	}
	args = args[1:]
	if len(args) == 0 {
		return argError("`identity accept` takes the user whose new identity to trust")
	}
	users, reason, bad := parseUsers(rest, args, noPatterns, false)
	if len(bad) > 0 {
		return argError("Invalid argument", bad...)
	}
	if len(users) != 1 {
		return argError("`identity accept` takes exactly one user", ArgError{args[0].text, "one user ID, then the reason"})
	}
	cmd.Users = users
	cmd.Reason, cmd.ReasonCut = sanitizeCut(reason, MaxReasonRunes)
	return nil
}

func parseUndo(cmd *Command, rest string, args []token) *ParseError {
	rest, args, opts, bad := takeOptions(rest, args)
	cmd.DryRun, cmd.Force = opts.DryRun, opts.Force
	if len(bad) > 0 {
		return argError("Invalid argument", bad...)
	}
	if len(args) == 0 {
		return argError("`undo` takes the version to undo (see `history`)")
	}
	v, err := strconv.ParseInt(strings.TrimPrefix(strings.ToLower(args[0].text), "v"), 10, 64)
	if err != nil || v < 1 {
		return argError("Invalid argument", ArgError{args[0].text, "a version is a whole number from 1 (history shows them)"})
	}
	cmd.Version = v
	if len(args) > 1 {
		cmd.Reason, cmd.ReasonCut = sanitizeCut(strings.TrimSpace(rest[args[1].start:]), MaxReasonRunes)
	}
	return nil
}

func parseHistory(cmd *Command, _ string, args []token) *ParseError {
	cmd.Count = defaultHistory
	if len(args) > 1 {
		return argError("`history` takes at most one number")
	}
	if len(args) == 1 {
		n, err := strconv.Atoi(args[0].text)
		if err != nil || n < 1 || n > maxHistory {
			return argError("Invalid argument", ArgError{args[0].text, fmt.Sprintf("the count must be a whole number from 1 to %d", maxHistory)})
		}
		cmd.Count = n
	}
	return nil
}

// Open reports whether any member of the control room may run cmd (help);
// every other command is admin-only.
func (c *Command) Open() bool {
	return specFor(c.Verb, c.List).open
}
