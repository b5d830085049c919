package commands

import "testing"

// TestRunner_GroupCommandsSayWhatTheyDid runs the group commands in order
// against a real store and checks each reply names what it did, and that a
// refused one changes nothing.
func TestRunner_GroupCommandsSayWhatTheyDid(t *testing.T) {
	tr := newTestRunner(t)
	steps := []struct {
		cmd, result string
		want        []string
		version     int64 // after the command
	}{
		{"!presence group add support @a:test", ResultInvalid, []string{"There is no group `support`", "There are no groups yet"}, 0},
		{"!presence group create support the desk", ResultOK, []string{"Created the group `support`", "Version 1."}, 1},
		{"!presence group create Support", ResultInvalid, []string{"already exists"}, 1},
		{"!presence group add support @a:test @b:test @b*:test", ResultOK, []string{"Added `@a:test`, `@b:test` and `@b*:test` to the group `support`", "Sending current presence to `@a:test` and `@b:test`"}, 2},
		{"!presence group remove support @b:test", ResultOK, []string{"Removed `@b:test` from the group `support`", "`@b:test` stays in the group: the pattern `@b*:test` matches them"}, 3},
		{"!presence group list", ResultOK, []string{"`support`: 1 user and 1 pattern"}, 3},
		{"!presence group list support", ResultOK, []string{"**Patterns**", "`@b*:test`", "**Users**", "`@a:test`"}, 3},
		{"!presence explain @a:test", ResultOK, []string{"**Group `support`**: a member; their presence goes to its 0 other members"}, 3},
		{"!presence status", ResultOK, []string{"groups: 1 (1 member in all; 0 users known"}, 3},
		{"!presence group delete support --dry-run", ResultOK, []string{"Dry run: would delete the group `support` and its 2 members", "Nothing was changed"}, 3},
		{"!presence group delete support", ResultOK, []string{"Deleted the group `support` and its 2 members", "Version 4."}, 4},
		{"!presence history 2", ResultOK, []string{"deleted the group `support`; removed `@a:test` and `@b*:test` from group support", "removed `@b:test` from group support"}, 4},
		{"!presence group delete support", ResultInvalid, []string{"There is no group `support`"}, 4},
		{"!presence undo 4", ResultOK, []string{"Created the group `support`; added `@a:test` and `@b*:test` to the group `support`", "Version 5."}, 5},
	}
	for _, s := range steps {
		checkReply(t, s.cmd, tr.run(t, s.cmd), s.result, s.want)
		if t.Failed() {
			t.FailNow() // the later steps build on this one
		}
		if v := tr.Engine.Version(); v != s.version {
			t.Fatalf("%q: version %d, want %d", s.cmd, v, s.version)
		}
	}
}
