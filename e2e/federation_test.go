//go:build e2e

package e2e

import (
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/e2e/harness"
)

// TestFederation runs two real Synapses on loopback that federate over TLS:
// hs1 with presence-router and the adapter, hs2 plain (later with a router
// of its own, to show what a remote user's server must do to show routed
// presence). Every negative has a positive control beside it.
func TestFederation(t *testing.T) {
	began := time.Now()
	e := newEnvWith(t, harness.Options{Admins: []string{"admin"}, Federation: true})
	hs2, err := harness.Prepare(harness.Options{Dir: t.TempDir(), Python: e.stack.Opts.Python, Binary: e.stack.Opts.Binary, Plain: true, Federation: true})
	if err != nil {
		t.Fatal(err)
	}
	var remote []*harness.Syncer
	t.Cleanup(func() {
		for _, s := range remote {
			s.Stop()
		}
		hs2.Stop()
		checkStoppedStack(t, hs2)
		t.Logf("the two-server test took %s", time.Since(began).Round(time.Second))
	})
	started := make(chan error, 1)
	go func() { started <- hs2.StartSynapse(e.ctx) }()
	if err = e.stack.StartSynapse(e.ctx); err != nil {
		t.Fatal(err)
	}
	if err = <-started; err != nil {
		t.Fatal(err)
	}
	if err = e.stack.StartRouter(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.populate()
	hs1 := e.stack
	t.Logf("hs1 is %s (presence-router), hs2 is %s (plain); up after %s", hs1.ServerName(), hs2.ServerName(), time.Since(began).Round(time.Millisecond))

	if e.users["bea"], err = hs1.User(e.ctx, "bea", "password-bea"); err != nil {
		t.Fatal(err)
	}
	if e.syncs["bea"], err = harness.NewSyncer(e.ctx, e.users["bea"]); err != nil {
		t.Fatal(err)
	}
	users2 := map[string]*mautrix.Client{}
	syncs2 := map[string]*harness.Syncer{}
	for _, name := range []string{"dash", "carol", "rob"} {
		if users2[name], err = hs2.User(e.ctx, name, "password-"+name); err != nil {
			t.Fatal(err)
		}
		if syncs2[name], err = harness.NewSyncer(e.ctx, users2[name]); err != nil {
			t.Fatal(err)
		}
		remote = append(remote, syncs2[name])
	}
	setPresence2 := func(name, status string) {
		t.Helper()
		if err := users2[name].SetPresence(e.ctx, mautrix.ReqPresence{Presence: "online", StatusMsg: status}); err != nil {
			t.Fatal(err)
		}
	}
	ok := func(reply harness.Reply) {
		t.Helper()
		if reply.Reaction != "✅" {
			t.Fatalf("reply = %+v", reply)
		}
	}
	rob, bea, localDash := hs2.UserID("rob"), hs1.UserID("bea"), hs1.UserID("dash")
	remoteDash, carol := hs2.UserID("dash"), hs2.UserID("carol")

	// rob (hs2) and bea (hs1) share a room, so hs2 sends rob's presence to
	// hs1; local dash shares no room with rob.
	t.Run("remote presence reaches a local always-send user", func(t *testing.T) {
		room, err := users2["rob"].CreateRoom(e.ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bea}})
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err = e.users["bea"].JoinRoom(e.ctx, string(room.RoomID), &mautrix.ReqJoinRoom{Via: []string{hs2.ServerName()}})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("bea could not join rob's room on hs2 over federation: %v", err)
			}
			time.Sleep(500 * time.Millisecond)
		}
		ok(e.command("admin", "!presence always-send add "+string(localDash)))
		setPresence2("rob", "rob for bea and dash")
		if _, seen := e.syncs["bea"].WaitPresence(rob, "rob for bea and dash", 10*time.Second); !seen {
			t.Fatalf("bea (shared room) did not get rob's presence over federation; got %+v", e.syncs["bea"].Presence())
		}
		if _, seen := e.syncs["dash"].WaitPresence(rob, "rob for bea and dash", 10*time.Second); !seen {
			t.Fatalf("local dash (always-send) did not get remote rob's presence; got %+v", e.syncs["dash"].Presence())
		}
	})

	t.Run("a blacklisted remote user's change does not reach dash while bea still gets it", func(t *testing.T) {
		ok(e.command("admin", "!presence blacklist add "+string(rob)))
		setPresence2("rob", "rob is hidden")
		if _, seen := e.syncs["bea"].WaitPresence(rob, "rob is hidden", 10*time.Second); !seen {
			t.Fatal("bea (shared room) did not get rob's change: the negative below would prove nothing")
		}
		time.Sleep(2 * time.Second)
		if e.syncs["dash"].SawPresence(rob, "rob is hidden") {
			t.Fatal("local dash received blacklisted rob's presence")
		}
		// Positive control for dash: a local user's change still reaches him.
		e.setPresence("alice", "online", "alice after rob's blacklisting")
		if _, seen := e.syncs["dash"].WaitPresence(hs1.UserID("alice"), "alice after rob's blacklisting", 10*time.Second); !seen {
			t.Fatal("dash does not receive routed presence at all")
		}
		ok(e.command("admin", "!presence blacklist remove "+string(rob)))
		ok(e.command("admin", "!presence always-send remove "+string(localDash)))
	})

	t.Run("remote user IDs of every federation shape are accepted listed explained and imported intact", func(t *testing.T) {
		// Loopback only: presence-router's Synapse sends to these servers.
		shapes := []string{"@port:localhost:8448", "@ipv4:127.0.0.1:8481", "@ipv6:[::1]:8448"}
		reply := e.command("admin", "!presence always-send add "+strings.Join(shapes, " ")+" shapes of server names")
		ok(reply)
		list := e.command("admin", "!presence always-send list")
		for _, shape := range shapes {
			for what, text := range map[string]string{"add reply": reply.Body, "add reply HTML": reply.HTML, "list": list.Body, "list HTML": list.HTML} {
				if !strings.Contains(text, shape) {
					t.Errorf("%s does not show %s intact: %q", what, shape, text)
				}
			}
			if explain := e.command("admin", "!presence explain "+shape); !strings.Contains(explain.Body, shape) || !strings.Contains(explain.Body, "always-send") {
				t.Errorf("explain %s = %q", shape, explain.Body)
			}
		}
		ok(e.command("admin", "!presence always-send remove "+strings.Join(shapes, " ")))

		stock := hs1.Path("remote-homeserver.yaml")
		content := "presence:\n  presence_router:\n    module: my_module.ExamplePresenceRouter\n    config:\n" +
			"      always_send_to_users: [\"@imported:127.0.0.1:8482\"]\n" +
			"      blacklisted_users: [\"@x:[::1]:8448\", \"@y:localhost:8448\", \"@z:127.0.0.1:8483\"]\n"
		if err := os.WriteFile(stock, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(hs1.Opts.Binary, "-c", hs1.Path("config.yaml"), "--import-synapse-config", stock).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "1 always-send and 3 blacklisted") {
			t.Fatalf("import: %v %s", err, out)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			black := e.command("admin", "!presence blacklist list")
			always := e.command("admin", "!presence always-send list")
			if strings.Contains(black.Body, "@x:[::1]:8448") && strings.Contains(black.Body, "@y:localhost:8448") &&
				strings.Contains(black.Body, "@z:127.0.0.1:8483") && strings.Contains(always.Body, "@imported:127.0.0.1:8482") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("imported remote users not listed: %q / %q", always.Body, black.Body)
			}
			time.Sleep(time.Second)
		}
		ok(e.command("admin", "!presence always-send remove @imported:127.0.0.1:8482"))
		ok(e.command("admin", "!presence blacklist remove @x:[::1]:8448 @y:localhost:8448 @z:127.0.0.1:8483"))
	})

	// hs2 is plain: it receives what hs1 routes to its users, but its /sync
	// shows a user only the presence of users they share a room with.
	t.Run("routed presence reaches a plain remote server which does not show it", func(t *testing.T) {
		// bob is online before anyone on hs2 is routed his presence, and
		// hs1 holds rob's (remote) presence: a push to carol must carry
		// local presence only, or Synapse refuses it.
		e.setPresence("bob", "online", "bob online first")
		time.Sleep(time.Second)
		ok(e.command("admin", "!presence always-send add "+string(carol)))
		ok(e.command("admin", "!presence always-send add "+string(remoteDash)))
		e.setPresence("alice", "online", "alice for remote dash")
		time.Sleep(3 * time.Second)
		if syncs2["dash"].SawPresence(hs1.UserID("alice"), "alice for remote dash") {
			t.Error("plain hs2 showed dash alice's presence: Synapse's /sync filter changed; update the README's remote-users section")
		}
		// Stopping hs2 persists its presence: what hs1 sent is there.
		hs2.Stop()
		for user, status := range map[id.UserID]string{hs1.UserID("alice"): "alice for remote dash", hs1.UserID("bob"): "bob online first"} {
			if got := storedStatus(t, hs2.Path("homeserver.db"), user); got != status {
				t.Errorf("hs2 holds %s's status %q, want %q: hs1 did not route it over federation", user, got, status)
			}
		}
	})

	// hs2 now routes too, with its own presence-router: dash and carol are
	// on its always-send list, so its /sync shows them what hs1 sends.
	if t.Failed() {
		return
	}
	opts := hs2.Opts
	opts.Plain, opts.Admins = false, []string{"admin"}
	routing, err := harness.Prepare(opts)
	if err != nil {
		t.Fatal(err)
	}
	hs2 = routing
	stock := hs2.Path("stock-homeserver.yaml")
	if err = os.WriteFile(stock, []byte(fmt.Sprintf("modules:\n  - module: my_module.ExamplePresenceRouter\n    config:\n      always_send_to_users: [%q, %q]\n", remoteDash, carol)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(hs2.Opts.Binary, "-c", hs2.Path("config.yaml"), "--import-synapse-config", stock).CombinedOutput(); err != nil {
		t.Fatalf("import on hs2: %v %s", err, out)
	}
	if err = hs2.StartSynapse(e.ctx); err != nil {
		t.Fatal(err)
	}
	if err = hs2.StartRouter(e.ctx); err != nil {
		t.Fatal(err)
	}

	t.Run("push: carol on hs2 gets bob's presence without a change from him", func(t *testing.T) {
		ok(e.command("admin", "!presence always-send remove "+string(remoteDash)+" "+string(carol)))
		e.setPresence("bob", "online", "bob before carol")
		time.Sleep(3 * time.Second)
		if syncs2["carol"].SawPresence(hs1.UserID("bob"), "bob before carol") {
			t.Fatal("carol saw bob's presence before hs1 routed it to her")
		}
		ok(e.command("admin", "!presence always-send add "+string(carol)))
		if _, seen := syncs2["carol"].WaitPresence(hs1.UserID("bob"), "bob before carol", 10*time.Second); !seen {
			t.Fatalf("carol on hs2 did not get bob's presence within 10 s; got %+v", syncs2["carol"].Presence())
		}
	})

	t.Run("local presence reaches a remote always-send user", func(t *testing.T) {
		ok(e.command("admin", "!presence always-send add "+string(remoteDash)))
		start := time.Now()
		e.setPresence("alice", "online", "alice for dash on hs2")
		p, seen := syncs2["dash"].WaitPresence(hs1.UserID("alice"), "alice for dash on hs2", 10*time.Second)
		if !seen {
			t.Fatalf("dash on hs2 did not receive alice's presence within 10 s; got %+v", syncs2["dash"].Presence())
		}
		t.Logf("alice's change reached dash on hs2 after %s", p.At.Sub(start).Round(time.Millisecond))
	})
}

// storedStatus reads a user's presence status message from a stopped
// Synapse's SQLite database.
func storedStatus(t *testing.T, path string, user id.UserID) string {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var status sql.NullString
	err = db.QueryRow("SELECT status_msg FROM presence_stream WHERE user_id = ?", string(user)).Scan(&status)
	if err != nil && err != sql.ErrNoRows {
		t.Fatal(err)
	}
	return status.String
}
