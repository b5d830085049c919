package bot

import (
	"fmt"
	"strings"
)

// helpTopics holds the detailed help of each topic, with %[1]s standing
// for the command prefix.
var helpTopics = map[string]string{
	"help": "**`%[1]s help [command]`**: the command overview, or the details of one command.\n\nExample: `%[1]s help always-send`",
	"always-send": "**always-send**: users on this list receive the presence of every user who is not blacklisted, local or remote, " +
		"whether or not they share a room (dashboards, support desks, reception bots).\n\n" +
		"* `%[1]s always-send add <user>... [reason]`: add users; a reason after the users goes to the audit log. " +
		"Users get everyone's current presence at once. Example: `%[1]s always-send add @dash:example.org @desk:example.org Support dashboards`\n" +
		"* `%[1]s always-send remove <user>... [reason]`: remove users. Example: `%[1]s always-send remove @dash:example.org`\n" +
		"* `%[1]s always-send list`: show the list.\n\n" +
		"Users may be given as user IDs, mentions (pills) or matrix.to links. One bad user rejects the whole command.",
	"blacklist": "**blacklist**: the presence of users on this list is never routed to always-send users. " +
		"Users who share a room with them still see it (a router can only add recipients).\n\n" +
		"* `%[1]s blacklist add <user>... [reason]`: example: `%[1]s blacklist add @ceo:example.org Privacy request`\n" +
		"* `%[1]s blacklist remove <user>... [reason]`: example: `%[1]s blacklist remove @ceo:example.org`\n" +
		"* `%[1]s blacklist list`: show the list.",
	"explain": "**`%[1]s explain <user>`**: where the user's presence goes (which always-send users receive it, or that it is blacklisted), " +
		"and what the user receives.\n\nExample: `%[1]s explain @alice:example.org`",
	"history": "**`%[1]s history [count]`**: the last changes (default 10, at most 100), newest first: who changed what, when, and why.\n\nExample: `%[1]s history 20`",
	"status":  "**`%[1]s status`**: the current version, the size of each list, when the Synapse adapter last asked, and uptime.\n\nExample: `%[1]s status`",
}

// HelpMarkdown returns the help overview (topic "") or one topic's details.
func HelpMarkdown(prefix, topic string) string {
	if text, ok := helpTopics[topic]; ok && topic != "" {
		return fmt.Sprintf(text, prefix)
	}
	var sb strings.Builder
	p := prefix
	sb.WriteString("**presence-router** keeps Synapse's presence routing lists. `<required>`, `[optional]`.\n\n")
	sb.WriteString("**Lists**\n\n")
	fmt.Fprintf(&sb, "* `%s always-send add|remove <user>... [reason]`: users who receive everyone's presence. Example: `%s always-send add @dash:example.org Support dashboard`\n", p, p)
	fmt.Fprintf(&sb, "* `%s always-send list`\n", p)
	fmt.Fprintf(&sb, "* `%s blacklist add|remove <user>... [reason]`: users whose presence is never routed. Example: `%s blacklist add @ceo:example.org Privacy request`\n", p, p)
	fmt.Fprintf(&sb, "* `%s blacklist list`\n\n", p)
	sb.WriteString("**Inspect**\n\n")
	fmt.Fprintf(&sb, "* `%s explain <user>`: where their presence goes, what they receive. Example: `%s explain @alice:example.org`\n", p, p)
	fmt.Fprintf(&sb, "* `%s history [count]`: recent changes, newest first. Example: `%s history 5`\n", p, p)
	fmt.Fprintf(&sb, "* `%s status`: version, list sizes, adapter contact, uptime\n\n", p)
	sb.WriteString("**Other**\n\n")
	fmt.Fprintf(&sb, "* `%s help [command]`: details of one command. Example: `%s help blacklist`\n", p, p)
	return sb.String()
}
