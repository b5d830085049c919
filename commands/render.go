package commands

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"
)

// Limits on member text echoed in a reply.
const (
	// maxEchoRunes bounds a fragment of a command quoted back in an error.
	maxEchoRunes = 200
	// MaxReasonRunes bounds a change's reason; a longer one is cut.
	MaxReasonRunes = 500
	// maxUserIDBytes is the spec's limit on a user ID.
	maxUserIDBytes = 255
)

// Nothing a member types is ever rendered as Markdown: replies are Markdown
// templates of ours, and every piece of member text goes into them through
// one of these functions.

// Code renders a fragment of member text as a code span that no backtick
// inside it can break, cut to maxEchoRunes.
func Code[T ~string](s T) string {
	return format.SafeMarkdownCode(sanitize(string(s), maxEchoRunes))
}

// CodeUser renders a user ID (at most 255 bytes, so never cut) as a code
// span.
func CodeUser(user id.UserID) string {
	return format.SafeMarkdownCode(sanitize(string(user), maxUserIDBytes))
}

// literal renders member text as plain text: newlines folded, control and
// bidirectional formatting characters removed, at most maxRunes kept (with
// "…" when cut), and every ASCII punctuation character escaped, so that
// the Markdown renderer sees no syntax in it at all.
func literal(s string, maxRunes int) string {
	return escapeMarkdown(sanitize(s, maxRunes))
}

// sanitize folds every run of white space that holds a line break (or any
// white space other than a plain space) into one space, drops control and
// bidirectional formatting characters (such as U+202E, which reverses the
// text after it) and cuts the text to maxRunes, marking the cut with "…".
func sanitize(s string, maxRunes int) string {
	s, _ = sanitizeCut(s, maxRunes)
	return s
}

// sanitizeCut is sanitize that also reports whether the text was cut.
func sanitizeCut(s string, maxRunes int) (string, bool) {
	var sb strings.Builder
	sb.Grow(min(len(s), maxRunes*utf8.UTFMax))
	runes := 0
	spaces, folded := 0, false // the white space run before the next rune
	for _, r := range s {
		switch {
		case r == ' ':
			spaces++
			continue
		case unicode.IsSpace(r):
			folded = true
			continue
		case unicode.Is(unicode.Bidi_Control, r) || unicode.IsControl(r) || r == utf8.RuneError ||
			r == '\u200b' || r == '\u2060' || r == '\ufeff':
			continue
		}
		if folded {
			spaces = 1
		}
		if runes == 0 {
			spaces = 0
		}
		if runes+spaces+1 > maxRunes {
			return strings.TrimRight(sb.String(), " ") + "…", true
		}
		for ; spaces > 0; spaces-- {
			sb.WriteByte(' ')
			runes++
		}
		folded = false
		sb.WriteRune(r)
		runes++
	}
	return sb.String(), false
}

// asciiPunctuation is CommonMark's set of escapable characters.
const asciiPunctuation = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"

// escapeMarkdown backslash-escapes every ASCII punctuation character
// (CommonMark lets any of them be escaped, and an escaped one is always
// literal), so no emphasis, link, image, code, heading, list, table,
// entity or HTML can start in the text.
func escapeMarkdown(s string) string {
	var sb strings.Builder
	sb.Grow(len(s) + len(s)/4)
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(asciiPunctuation, s[i]) >= 0 {
			sb.WriteByte('\\')
		}
		sb.WriteByte(s[i])
	}
	return sb.String()
}
