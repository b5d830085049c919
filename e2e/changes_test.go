//go:build e2e

package e2e

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestChangesAnOperatorCanTrust on a real Synapse: --dry-run of an
// always-send add changes nothing and pushes nothing; the same command
// without it applies and pushes; undo of that version removes the user
// again and history shows both; a second undo of it is refused (a later
// change touched the same entry); an unregistered local user is refused on
// always-send and accepted with --force.
func TestChangesAnOperatorCanTrust(t *testing.T) {
	e := startStack(t, false)
	e.setPresence("alice", "online", "alice before the dry run")
	time.Sleep(time.Second)

	dry := e.command("admin", "!presence always-send add @dash:localhost --dry-run")
	if dry.Reaction != "✅" || !strings.HasPrefix(dry.Body, "Dry run:") || !strings.Contains(dry.Body, "Nothing was changed.") {
		t.Fatalf("dry run: %+v", dry)
	}
	if always, _ := e.rules(); len(always) != 0 {
		t.Fatalf("the dry run changed the list: %v", always)
	}
	if _, ok := e.syncs["dash"].WaitPresence(uid("alice"), "alice before the dry run", 3*time.Second); ok {
		t.Fatal("the dry run pushed alice's presence to dash")
	}

	added := e.command("admin", "!presence always-send add @dash:localhost")
	m := regexp.MustCompile(`Version (\d+)\.`).FindStringSubmatch(added.Body)
	if added.Reaction != "✅" || m == nil {
		t.Fatalf("add: %+v", added)
	}
	version := m[1]
	if _, ok := e.syncs["dash"].WaitPresence(uid("alice"), "alice before the dry run", 10*time.Second); !ok {
		t.Fatal("the add did not push alice's current presence to dash")
	}

	undo := e.command("admin", "!presence undo "+version+" by mistake")
	if undo.Reaction != "✅" || !strings.Contains(undo.Body, "Removed `@dash:localhost` from the always-send list") {
		t.Fatalf("undo: %+v", undo)
	}
	if always, _ := e.rules(); len(always) != 0 {
		t.Fatalf("after the undo, always-send is %v", always)
	}
	history := e.command("admin", "!presence history 2")
	if !strings.Contains(history.Body, "(undo of version "+version+")") || !strings.Contains(history.Body, "**v"+version+"**") {
		t.Errorf("history does not show the change and its undo: %q", history.Body)
	}
	again := e.command("admin", "!presence undo "+version)
	if again.Reaction != "❌" || !strings.Contains(again.Body, "changed some of the same entries") {
		t.Errorf("a second undo of version %s: %+v", version, again)
	}

	typo := e.command("admin", "!presence always-send add @dahs:localhost")
	if typo.Reaction != "❌" || !strings.Contains(typo.Body, "not registered") {
		t.Fatalf("an unregistered user: %+v", typo)
	}
	forced := e.command("admin", "!presence always-send add @dahs:localhost --force")
	if forced.Reaction != "✅" {
		t.Fatalf("the unregistered user with --force: %+v", forced)
	}
	if always, _ := e.rules(); len(always) != 1 || always[0] != "@dahs:localhost" {
		t.Errorf("always-send %v, want the forced user", always)
	}
}
