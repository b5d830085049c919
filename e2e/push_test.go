//go:build e2e

package e2e

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestPushReachesEveryValidRecipient: a user Synapse does not know on the
// always-send list (a typo, @dahs for @dash) made Synapse fail the whole
// push of current presence (its table has a foreign key to its users), so
// nobody got it. Now every valid recipient does, and Synapse's log names
// the user that failed.
func TestPushReachesEveryValidRecipient(t *testing.T) {
	e := startStack(t, false)
	e.setPresence("alice", "online", "alice before the push")
	time.Sleep(time.Second) // alice's state is current before dash gains it
	if reply := e.command("admin", "!presence always-send add @dahs:localhost @dash:localhost --force"); reply.Reaction != "✅" {
		t.Fatalf("reply = %+v", reply)
	}
	// alice does not change: dash sees her presence only through the push.
	if _, ok := e.syncs["dash"].WaitPresence(uid("alice"), "alice before the push", 15*time.Second); !ok {
		t.Fatalf("dash did not get alice's current presence: the push failed for every recipient; got %+v", e.syncs["dash"].Presence())
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		log, _ := os.ReadFile(e.stack.Path("synapse.log"))
		if strings.Contains(string(log), "Failed to send current presence to @dahs:localhost") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Synapse's log does not name the user the push failed for")
		}
		time.Sleep(200 * time.Millisecond)
	}
}
