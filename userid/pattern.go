package userid

import (
	"errors"
	"fmt"
	"strings"

	"go.mau.fi/util/glob"
	"maunium.net/go/mautrix/id"
)

// IsPattern reports whether s is meant as a pattern: it holds a glob
// character, `*` (any run of characters) or `?` (exactly one). A user ID
// that contains one of them (possible among historical localparts) can only
// be named by a pattern.
func IsPattern(s string) bool {
	return strings.ContainsAny(s, "*?")
}

// ErrTooBroad is wrapped by ParsePattern's error for a pattern that matches
// every user, such as @*:*.
var ErrTooBroad = errors.New("the pattern matches every user")

// ParsePattern checks a blacklist pattern: it must look like
// @<localpart-pattern>:<server-pattern>, where the localpart pattern may
// use the localpart's characters and the server pattern the server name's,
// and both may use * and ?. A pattern that matches everyone (no literal
// character on either side, however the * and ? are arranged) fails with
// an error wrapping ErrTooBroad; the caller may allow it on purpose. The
// pattern is returned in lower case (matching folds ASCII letters).
func ParsePattern(s string) (id.UserID, error) {
	localpart, server, err := split(s, "patterns look like @bridge_*:example.org", "pattern")
	if err != nil {
		return "", err
	}
	if server == "" {
		return "", invalid("%q is missing the :server part (patterns look like @bridge_*:example.org)", s)
	}
	for _, r := range server {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-.:[]*?", r)) {
			return "", invalid("server part of %q contains the character %q, which no server name has", s, r)
		}
	}
	// However it is spelled (@*:*, @?*:*, @*:*?), a pattern with no
	// literal character beyond the @ and the first : matches (nearly)
	// every user.
	wild := func(r rune) bool { return r == '*' || r == '?' }
	if strings.IndexFunc(localpart, func(r rune) bool { return !wild(r) }) < 0 && strings.IndexFunc(server, func(r rune) bool { return !wild(r) }) < 0 {
		return "", fmt.Errorf("%w: %q %w", ErrInvalid, s, ErrTooBroad)
	}
	// Matching folds ASCII letters, so a pattern is kept in lower case:
	// one entry per pattern, whatever case it was typed in.
	return id.UserID(strings.ToLower(s)), nil
}

// Matcher is a compiled pattern: the one matcher production code uses.
// Its case rule, everywhere in presence-router: ASCII letters match
// regardless of case (A-Z and a-z), and every other character matches only
// itself. User IDs are ASCII by the specification's grammar; a non-ASCII
// character in one never matches an ASCII letter of a pattern (Unicode
// folding would let the Kelvin sign match k and the long s match s).
type Matcher struct {
	glob glob.Glob
}

// Compile compiles a pattern into the cheapest matcher (exact, prefix,
// suffix, contains, or an anchored regular expression). It returns nil for
// a pattern that cannot be compiled; ParsePattern accepts none of those.
func Compile(pattern string) *Matcher {
	g := glob.Compile(pattern)
	if g == nil {
		return nil
	}
	return &Matcher{glob: g}
}

// Match reports whether the whole of user matches the pattern.
func (m *Matcher) Match(user string) bool {
	return m.glob.Match(neutralizeFolds(user))
}

// asciiFolds are the only non-ASCII characters that Unicode simple case
// folding (which the compiled globs use) equates with ASCII letters: the
// long s (ſ, s) and the Kelvin sign (K, k).
var asciiFolds = strings.NewReplacer("\u017f", "\ufffd", "\u212a", "\ufffd")

// neutralizeFolds replaces the characters of asciiFolds with U+FFFD, which
// no pattern's literal matches, so that only ASCII letters fold. An ASCII
// user ID, the usual case, is returned as it is, without allocating.
func neutralizeFolds(user string) string {
	for i := 0; i < len(user); i++ {
		if user[i] >= 0x80 {
			return asciiFolds.Replace(user)
		}
	}
	return user
}
