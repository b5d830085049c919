// Package patternref is the reference reading of a user-ID pattern, for
// tests only: production code matches with userid.Set, and tests check
// that the two agree.
package patternref

// Match reads pattern the plain way: `*` any run of characters, `?` exactly
// one, everything else itself, over the whole user ID, with ASCII letters
// matching regardless of case and every other character only itself (the
// rule userid.Set documents).
func Match(pattern, user string) bool {
	p, u := []rune(pattern), []rune(user)
	// Classic two-pointer glob matching with backtracking to the last star.
	pi, ui, star, mark := 0, 0, -1, 0
	for ui < len(u) {
		switch {
		case pi < len(p) && p[pi] == '*': // before the literal case: a * in the user ID is no star
			star, mark = pi, ui
			pi++
		case pi < len(p) && (p[pi] == '?' || foldASCII(p[pi]) == foldASCII(u[ui])):
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

func foldASCII(r rune) rune {
	if r >= 'A' && r <= 'Z' {
		return r + 'a' - 'A'
	}
	return r
}
