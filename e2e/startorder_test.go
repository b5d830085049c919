//go:build e2e

package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/presence-router/presence-router/e2e/harness"
)

// TestStartOrder starts Synapse and presence-router in both orders, with a
// gap between them, and checks that the stack converges with no manual
// step: the bot joins when invited, commands are answered, and routed
// presence arrives.
func TestStartOrder(t *testing.T) {
	t.Run("presence-router first, Synapse 3 s later", func(t *testing.T) {
		e := newEnv(t, false)
		if err := e.stack.StartRouter(e.ctx); err != nil {
			t.Fatalf("presence-router must start while the homeserver is down: %v", err)
		}
		// The routing API answers while the homeserver is unreachable.
		if code := e.routingStatus(t); code != http.StatusOK {
			t.Fatalf("routing API answered %d while Synapse was down, want 200", code)
		}
		time.Sleep(3 * time.Second)
		if err := e.stack.StartSynapse(e.ctx); err != nil {
			t.Fatal(err)
		}
		e.populate()
		e.checkConverged()
	})

	t.Run("Synapse first, presence-router 5 s later", func(t *testing.T) {
		e := newEnv(t, false)
		if err := e.stack.StartSynapse(e.ctx); err != nil {
			t.Fatal(err)
		}
		// Synapse works while presence-router is down: a user syncs and
		// sets presence, so the adapter is consulted and fails open.
		probe, err := e.stack.User(e.ctx, "probe", "password-probe")
		if err != nil {
			t.Fatal(err)
		}
		syncer, err := harness.NewSyncer(e.ctx, probe)
		if err != nil {
			t.Fatal(err)
		}
		e.syncs["probe"] = syncer
		e.users["probe"] = probe
		e.setPresence("probe", "online", "probe while presence-router is down")
		time.Sleep(5 * time.Second)
		if n := syncer.SyncErrors(); n != 0 {
			t.Fatalf("%d /sync requests failed while presence-router was down", n)
		}
		if err = e.stack.StartRouter(e.ctx); err != nil {
			t.Fatal(err)
		}
		e.populate()
		e.checkConverged()
	})
}

// routingStatus asks the routing API for the rules and returns the status.
func (e *env) routingStatus(t *testing.T) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(e.ctx, http.MethodGet, e.stack.RouterURL+"/_presence_router/v1/rules", nil)
	req.Header.Set("Authorization", "Bearer "+e.stack.RouterToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("routing API: %v", err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// checkConverged shows the whole path works: a command is applied and
// answered, and alice's presence reaches dash, who shares no room with her.
func (e *env) checkConverged() {
	t := e.t
	t.Helper()
	if reply := e.command("admin", "!presence always-send add @dash:localhost"); reply.Reaction != "✅" {
		t.Fatalf("command after start: %+v", reply)
	}
	e.setPresence("alice", "online", "alice after start")
	if _, ok := e.syncs["dash"].WaitPresence(uid("alice"), "alice after start", 10*time.Second); !ok {
		t.Fatalf("dash did not get alice's presence within 10 s; got %+v", e.syncs["dash"].Presence())
	}
	for name, s := range e.syncs {
		if n := s.SyncErrors(); n != 0 {
			t.Errorf("%s: %d /sync requests failed", name, n)
		}
	}
}
