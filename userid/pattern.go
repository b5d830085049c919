package userid

import (
	"errors"
	"fmt"
	"strings"

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
