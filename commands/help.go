package commands

import (
	"fmt"
	"strings"

	"github.com/presence-router/presence-router/rules"
)

// topicIntros introduce the help topics that are lists; %[1]s stands for
// the command prefix.
var topicIntros = map[string]string{
	rules.AlwaysSend.String(): "**always-send**: users on this list receive the presence of every user who is not blacklisted, local or remote, " +
		"whether or not they share a room (dashboards, support desks, reception bots). " +
		"Users may be given as user IDs, mentions (pills) or matrix.to links; one bad user rejects the whole command, and a reason after the users goes to the audit log.",
	rules.Blacklist.String(): "**blacklist**: the presence of users on this list is never routed to always-send users. " +
		"Users who share a room with them still see it (a router can only add recipients).",
	string(groupTopic): "**groups**: each member of a group receives the presence of every other member, whether or not they share a room, " +
		"without a room everyone must join. Members are user IDs and patterns (`@*:example.org` is the whole server); " +
		"a user a pattern matches counts once they sync. The blacklist wins: a blacklisted member's presence goes to nobody.",
}

// isHelpTopic reports whether topic is a command's or a list's help topic.
func isHelpTopic(topic string) bool {
	for _, c := range commands {
		if c.topic() == topic {
			return true
		}
	}
	return false
}

// helpLine renders one command for the help: usage, summary, example.
func helpLine(prefix string, c *commandSpec) string {
	line := fmt.Sprintf("* %s: %s", Code(c.Usage(prefix)), c.summary)
	if c.example != "" {
		line += ". Example: " + Code(prefix+" "+c.Words()+" "+c.example)
	}
	return line + "\n"
}

// HelpMarkdown returns the help overview (topic "") or one topic's details,
// both made from the command table.
func HelpMarkdown(prefix, topic string) string {
	var sb strings.Builder
	if topic != "" && isHelpTopic(topic) {
		if intro, ok := topicIntros[topic]; ok {
			sb.WriteString(intro + "\n\n")
		}
		for _, c := range commands {
			if c.topic() == topic {
				sb.WriteString(helpLine(prefix, c))
			}
		}
		return sb.String()
	}
	sb.WriteString("**presence-router** keeps Synapse's presence routing lists. `<required>`, `[optional]`. " +
		"Commands that change something take `--dry-run` (say what would change, change nothing) anywhere among their arguments.\n\n")
	for _, group := range []struct {
		title string
		match func(c *commandSpec) bool
	}{
		{"Lists", func(c *commandSpec) bool { return c.list != "" && c.list != groupTopic }},
		{"Groups", func(c *commandSpec) bool { return c.list == groupTopic }},
		{"In a direct chat with the bot (any local user)", func(c *commandSpec) bool { return c.directOnly }},
		{"Changes", func(c *commandSpec) bool { return c.changes }},
		{"Inspect", func(c *commandSpec) bool { return c.list == "" && !c.open && !c.changes && !c.directOnly }},
		{"Other", func(c *commandSpec) bool { return c.open }},
	} {
		sb.WriteString("**" + group.title + "**\n\n")
		for _, c := range commands {
			if group.match(c) {
				sb.WriteString(helpLine(prefix, c))
			}
		}
		sb.WriteString("\n")
	}
	return sb.String()
}

// CommandTable returns the README's command table rows, one per command:
// "| `usage` | summary |".
func CommandTable(prefix string) []string {
	rows := make([]string, len(commands))
	for i, c := range commands {
		rows[i] = fmt.Sprintf("| `%s` | %s |", c.Usage(prefix), c.summary)
	}
	return rows
}
