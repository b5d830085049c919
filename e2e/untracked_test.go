//go:build e2e

package e2e

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestUntrackedPresenceDoesNotRepeatSnapshots runs Synapse with
// presence.enabled: untracked (after a tracked run left alice online). A
// push through send_local_online_presence_to would make Synapse repeat the
// full presence snapshot in every /sync of its recipient (its stream bump
// does nothing untracked), so the adapter (push: auto) does not push there
// and says so in Synapse's log: after an always-send add, dash's
// incremental syncs carry no repeated presence.
func TestUntrackedPresenceDoesNotRepeatSnapshots(t *testing.T) {
	e := startStack(t, false)
	e.setPresence("alice", "online", "alice before untracked")
	time.Sleep(time.Second)
	e.stack.StopSynapse()
	path := e.stack.Path("homeserver.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	untracked := strings.Replace(string(data), "presence:\n  enabled: true\n", "presence:\n  enabled: untracked\n", 1)
	if untracked == string(data) {
		t.Fatal("homeserver.yaml has no presence.enabled: true to change")
	}
	if err = os.WriteFile(path, []byte(untracked), 0o600); err != nil {
		t.Fatal(err)
	}
	if err = e.stack.StartSynapse(e.ctx); err != nil {
		t.Fatal(err)
	}
	dash := e.users["dash"]
	resp, err := dash.SyncRequest(e.ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	since := resp.NextBatch
	if r := e.command("admin", "!presence always-send add @dash:localhost"); r.Reaction != "✅" {
		t.Fatalf("always-send add: %+v", r)
	}
	time.Sleep(2 * time.Second) // the adapter's change feed has the change
	withPresence := 0
	for range 4 {
		resp, err = dash.SyncRequest(e.ctx, 0, since, "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Presence.Events) > 0 {
			withPresence++
		}
		since = resp.NextBatch
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("%d of 4 incremental syncs of dash after the add carried presence", withPresence)
	if withPresence > 1 {
		t.Errorf("%d of 4 incremental syncs of dash repeated the presence snapshot", withPresence)
	}
	if !strings.Contains(e.stack.Tail(e.stack.Processes[0].Log, 5000), "presence is untracked") {
		t.Error("the adapter did not say in Synapse's log that it does not push with untracked presence")
	}
}
