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
// and both may use * and ?. A pattern that matches everyone (both sides
// nothing but *) fails with an error wrapping ErrTooBroad; the caller may
// allow it on purpose.
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
	if strings.Trim(localpart, "*") == "" && strings.Trim(server, "*") == "" {
		return "", fmt.Errorf("%w: %q %w", ErrInvalid, s, ErrTooBroad)
	}
	return id.UserID(s), nil
}

// Match is the reference reading of a pattern: `*` any run of characters,
// `?` exactly one, everything else itself, case-insensitively (as Synapse's
// push rules and Meowlnir read globs), over the whole user ID. The router
// compiles patterns into cheaper matchers; tests check that they agree with
// this one.
func Match(pattern, user string) bool {
	p, u := []rune(strings.ToLower(pattern)), []rune(strings.ToLower(user))
	// Classic two-pointer glob matching with backtracking to the last star.
	pi, ui, star, mark := 0, 0, -1, 0
	for ui < len(u) {
		switch {
		case pi < len(p) && p[pi] == '*': // before the literal case: a * in the user ID is no star
			star, mark = pi, ui
			pi++
		case pi < len(p) && (p[pi] == '?' || p[pi] == u[ui]):
			pi++
			ui++
		case star >= 0:
			pi = star + 1
			mark++
			ui = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
