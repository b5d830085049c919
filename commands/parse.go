package commands

import (
	"errors"
	"fmt"
	"strings"
	"unicode"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/rules"
	"github.com/presence-router/presence-router/userid"
)

// Verb names what a command does.
type Verb string

// The verbs.
const (
	VerbHelp    Verb = "help"
	VerbAdd     Verb = "add"
	VerbRemove  Verb = "remove"
	VerbList    Verb = "list"
	VerbExplain Verb = "explain"
	VerbHistory Verb = "history"
	VerbStatus  Verb = "status"
	// VerbIdentity is identity accept.
	VerbIdentity Verb = "identity"
	VerbUndo     Verb = "undo"
)

// Limits on what one command may carry.
const (
	maxCommandBytes = 64 << 10
	maxUsers        = 1000
	defaultHistory  = 10
	maxHistory      = 100
	// maxArgErrors bounds the bad arguments an error lists one by one.
	maxArgErrors = 10
)

// Command is a parsed, validated chat command.
type Command struct {
	Verb      Verb
	List      rules.List      // add, remove, list
	Users     []id.UserID     // add, remove (deduplicated, in order); explain (one)
	Reason    string          // add, remove (optional free text, sanitized and cut to MaxReasonRunes)
	ReasonCut bool            // the reason was longer and was cut
	Count     int             // history
	Topic     string          // help: "" for the overview
	Raw       string          // the text after the prefix, for the audit log
	DryRun    bool            // --dry-run: say what would change, change nothing
	Force     bool            // --force: past a guard (a too broad pattern, an unknown user, a later change)
	Version   int64           // undo
	Group     rules.GroupName // group commands (List is then groupTopic)
}

// ArgError names one bad argument and why it is bad.
type ArgError struct {
	Arg    string
	Reason string
}

// ParseError says why a message addressed to the bot is not a valid command.
type ParseError struct {
	Msg       string
	Args      []ArgError
	HelpTopic string
	prefix    string
}

func (e *ParseError) Error() string {
	var sb strings.Builder
	sb.WriteString(e.Msg)
	if len(e.Args) > 0 {
		sb.WriteString(":")
		for i, a := range e.Args {
			if i == maxArgErrors {
				fmt.Fprintf(&sb, "\n* and %d more", len(e.Args)-maxArgErrors)
				break
			}
			fmt.Fprintf(&sb, "\n* %s: %s", Code(a.Arg), literal(a.Reason, maxEchoRunes))
		}
		sb.WriteString("\n\nNothing was changed.")
	}
	topic := e.HelpTopic
	if topic != "" {
		topic = " " + topic
	}
	fmt.Fprintf(&sb, "\n\nUse `%s help%s`.", e.prefix, topic)
	return sb.String()
}

// listAliases are the ways a list may be typed.
var listAliases = map[string]rules.List{
	"always-send": rules.AlwaysSend, "always_send": rules.AlwaysSend, "alwayssend": rules.AlwaysSend,
	"blacklist": rules.Blacklist, "black-list": rules.Blacklist,
}

// token is a word of the command with its offset in the text.
type token struct {
	text  string
	start int
}

func tokenize(s string) []token {
	var toks []token
	start := -1
	for i, r := range s {
		if unicode.IsSpace(r) {
			if start >= 0 {
				toks = append(toks, token{s[start:i], start})
				start = -1
			}
		} else if start < 0 {
			start = i
		}
	}
	if start >= 0 {
		toks = append(toks, token{s[start:], start})
	}
	return toks
}

// cutPrefix is the one test of whether text is addressed to the bot: it
// starts with prefix (in any case), followed by white space or the end. It
// returns the rest.
func cutPrefix(text, prefix string) (rest string, ok bool) {
	if len(text) < len(prefix) || !strings.EqualFold(text[:len(prefix)], prefix) {
		return "", false
	}
	rest = text[len(prefix):]
	if rest != "" && !unicode.IsSpace(rune(rest[0])) {
		return "", false
	}
	return rest, true
}

// Addressed reports whether a message body is addressed to the bot (starts
// with the prefix once a reply fallback is removed), before it is parsed.
func Addressed(body, prefix string) bool {
	_, ok := cutPrefix(strings.TrimSpace(event.TrimReplyFallbackText(body)), prefix)
	return ok
}

// ParseCommand parses a message. prefix is e.g. "!presence", matched
// case-insensitively and followed by whitespace or the end. formattedBody is
// the HTML body ("" if none); when present, pills in it count as user IDs.
// A reply's fallback (the quoted lines of the plain body, the <mx-reply> of
// the HTML one) is not part of the command.
// It returns (nil, nil) when the message is not for the bot, and a
// *ParseError when it is for the bot but invalid. The bare prefix is help.
func ParseCommand(prefix, body, formattedBody string) (*Command, error) {
	text := event.TrimReplyFallbackText(body)
	if formattedBody != "" {
		text = htmlToText(formattedBody)
	}
	text = strings.TrimSpace(text)
	rest, ok := cutPrefix(text, prefix)
	if !ok {
		return nil, nil
	}
	fail := func(msg, topic string, args ...ArgError) (*Command, error) {
		return nil, &ParseError{Msg: msg, Args: args, HelpTopic: topic, prefix: prefix}
	}
	if len(text) > maxCommandBytes {
		return fail(fmt.Sprintf("The command is %d bytes; the limit is %d", len(text), maxCommandBytes), "")
	}
	rest = strings.TrimSpace(rest)
	toks := tokenize(rest)
	cmd := &Command{Raw: rest}
	if len(toks) == 0 {
		cmd.Verb = VerbHelp
		return cmd, nil
	}
	word := strings.ToLower(toks[0].text)
	args := toks[1:]
	var spec *commandSpec
	if list, ok := listAliases[word]; ok {
		if len(args) == 0 {
			return fail(fmt.Sprintf("Missing what to do with the %s list: add, remove or list", list), list.String())
		}
		sub := strings.ToLower(args[0].text)
		args = args[1:]
		if spec = specFor(Verb(sub), list); spec == nil {
			return fail(fmt.Sprintf("Unknown %s action %s: use add, remove or list", list, Code(sub)), list.String())
		}
	} else if groupAliases[word] {
		if len(args) == 0 {
			return fail("Missing what to do with groups: create, delete, add, remove or list", string(groupTopic))
		}
		sub := strings.ToLower(args[0].text)
		args = args[1:]
		if spec = specFor(Verb(sub), groupTopic); spec == nil {
			return fail(fmt.Sprintf("Unknown group action %s: use create, delete, add, remove or list", Code(sub)), string(groupTopic))
		}
	} else if spec = specFor(Verb(word), ""); spec == nil {
		return fail(fmt.Sprintf("Unknown command %s", Code(toks[0].text)), "")
	}
	cmd.Verb, cmd.List = spec.verb, spec.list
	if perr := spec.parse(cmd, rest, args); perr != nil {
		perr.HelpTopic, perr.prefix = spec.topic(), prefix
		return nil, perr
	}
	return cmd, nil
}

// looksLikeUser says whether a token is meant as a user argument: it starts
// with @, is a matrix.to or matrix: link, or looks like an ID without its
// sigil (name:server).
func looksLikeUser(tok string) bool {
	if strings.HasPrefix(tok, "@") {
		return true
	}
	if _, ok := userFromLink(tok); ok || strings.HasPrefix(tok, "https://matrix.to/") || strings.HasPrefix(tok, "matrix:") {
		return true
	}
	local, server, ok := strings.Cut(tok, ":")
	return ok && local != "" && server != "" && !strings.Contains(tok, "/") && strings.Contains(server, ".")
}

// patternUse says whether a command takes blacklist patterns.
type patternUse int

const (
	noPatterns patternUse = iota
	blacklistPatterns
)

// The options a changing command takes, anywhere among its arguments.
const (
	optionDryRun = "--dry-run"
	optionForce  = "--force"
)

// takeOptions removes --dry-run and --force from args, wherever they are,
// and blanks them out of text (positions stay valid, so a reason never
// holds them); another --word is a bad argument. A word is read as the
// reason would show it (sanitized), so "--dr\u200by-run", which reads
// --dry-run, is the option and not text that claims a dry run.
func takeOptions(text string, args []token) (string, []token, *Command, []ArgError) {
	opts := &Command{}
	kept := args[:0:0]
	var bad []ArgError
	for _, tok := range args {
		reads := sanitize(tok.text, len(tok.text))
		switch {
		case strings.EqualFold(reads, optionDryRun):
			opts.DryRun = true
		case strings.EqualFold(reads, optionForce):
			opts.Force = true
		case strings.HasPrefix(tok.text, "--"):
			bad = append(bad, ArgError{tok.text, fmt.Sprintf("unknown option; the options are %s and %s", optionDryRun, optionForce)})
		default:
			kept = append(kept, tok)
			continue
		}
		text = text[:tok.start] + strings.Repeat(" ", len(tok.text)) + text[tok.start+len(tok.text):]
	}
	return text, kept, opts, bad
}

// parseUsers reads user arguments from args until the first token that is
// not user-like; the rest of text from there is the reason. Every invalid
// user argument is reported. With blacklistPatterns, an argument with * or
// ? is a pattern (see userid.ParsePattern), and force (--force) allows one
// that matches every user.
func parseUsers(text string, args []token, patterns patternUse, force bool) (users []id.UserID, reason string, bad []ArgError) {
	seen := make(map[id.UserID]bool)
	for i, tok := range args {
		if !looksLikeUser(tok.text) {
			reason = strings.TrimSpace(text[args[i].start:])
			break
		}
		raw := tok.text
		if user, ok := userFromLink(raw); ok {
			raw = user
		} else if strings.HasPrefix(raw, "https://matrix.to/") || strings.HasPrefix(raw, "matrix:") {
			bad = append(bad, ArgError{tok.text, "this link does not point to a user"})
			continue
		}
		raw = strings.TrimRight(raw, ",;")
		var user id.UserID
		var err error
		switch {
		case !userid.IsPattern(raw):
			user, err = userid.Parse(raw)
		case patterns == noPatterns:
			bad = append(bad, ArgError{tok.text, "patterns (with * or ?) are for the blacklist only: Synapse routes presence to concrete users"})
			continue
		default:
			user, err = userid.ParsePattern(raw)
			if errors.Is(err, userid.ErrTooBroad) {
				if !force {
					bad = append(bad, ArgError{tok.text, "this pattern matches every user; add --force if that is what you mean"})
					continue
				}
				user, err = id.UserID(strings.ToLower(raw)), nil
			}
		}
		if err != nil {
			bad = append(bad, ArgError{tok.text, strings.TrimPrefix(err.Error(), userid.ErrInvalid.Error()+": ")})
			continue
		}
		if !seen[user] {
			seen[user] = true
			users = append(users, user)
		}
	}
	return users, reason, bad
}
