//go:build e2e

package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestBlacklistPatterns keeps a bridge's puppets out of routed presence with
// one pattern, against a real Synapse. The pattern is typed in upper case:
// matching is case-insensitive (Synapse only registers lower-case users).
func TestBlacklistPatterns(t *testing.T) {
	e := startStack(t, false)
	for _, name := range []string{"puppet_1", "puppet_2"} {
		cli, err := e.stack.User(e.ctx, name, "password-"+name)
		if err != nil {
			t.Fatal(err)
		}
		e.users[name] = cli
	}
	dash := e.syncs["dash"]
	if r := e.command("admin", "!presence always-send add @dash:localhost"); r.Reaction != "✅" {
		t.Fatalf("always-send add: %q", r.Body)
	}
	r := e.command("admin", "!presence blacklist add @PUPPET_*:localhost bridge puppets")
	if r.Reaction != "✅" || !strings.Contains(r.Body, "@puppet_*:localhost") { // kept in lower case
		t.Fatalf("blacklist add of a pattern: %s %q", r.Reaction, r.Body)
	}
	time.Sleep(time.Second)

	t.Run("the puppets' presence no longer reaches dash; alice's does", func(t *testing.T) {
		e.setPresence("puppet_1", "online", "puppet 1 hidden")
		e.setPresence("puppet_2", "online", "puppet 2 hidden")
		e.setPresence("alice", "online", "alice visible")
		if _, ok := dash.WaitPresence(uid("alice"), "alice visible", 10*time.Second); !ok {
			t.Fatal("dash did not get alice's presence: the negative below would prove nothing")
		}
		time.Sleep(2 * time.Second)
		for _, name := range []string{"puppet_1", "puppet_2"} {
			if dash.SawPresence(uid(name), strings.ReplaceAll(name, "_", " ")+" hidden") {
				t.Errorf("dash received %s's presence through the pattern", name)
			}
		}
		if r := e.command("admin", "!presence explain @puppet_1:localhost"); !strings.Contains(r.Body, "@puppet_*:localhost") {
			t.Errorf("explain does not name the pattern: %q", r.Body)
		}
	})

	t.Run("removing the pattern routes the next change and pushes current presence", func(t *testing.T) {
		if r := e.command("admin", "!presence blacklist remove @PUPPET_*:localhost"); r.Reaction != "✅" {
			t.Fatalf("blacklist remove of the pattern: %q", r.Body)
		}
		// Push: puppet_2 changed nothing since, and dash gets its presence.
		if _, ok := dash.WaitPresence(uid("puppet_2"), "puppet 2 hidden", 10*time.Second); !ok {
			t.Error("after the pattern was removed, dash did not get puppet_2's current presence (push)")
		}
		e.setPresence("puppet_1", "unavailable", "puppet 1 routed again")
		if _, ok := dash.WaitPresence(uid("puppet_1"), "puppet 1 routed again", 10*time.Second); !ok {
			t.Error("after the pattern was removed, puppet_1's next change did not reach dash")
		}
	})
}
