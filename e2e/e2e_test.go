//go:build e2e

// End-to-end tests against a real Synapse with the adapter loaded and a real
// presence-router process. Run through `make test` (it builds the binary and
// the Python venv and sets PR_PYTHON and PR_BINARY).
package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/e2e/harness"
)

type env struct {
	t     *testing.T
	stack *harness.Stack
	ctx   context.Context
	users map[string]*mautrix.Client
	syncs map[string]*harness.Syncer
	room  id.RoomID
	// beforeInvite, when set, runs in populate once the control room
	// exists, before the bot is invited.
	beforeInvite func()
}

func uid(localpart string) id.UserID { return id.NewUserID(localpart, harness.ServerName) }

// startStack brings up Synapse and presence-router; everything is stopped
// when the test ends, with the logs' tails printed if it failed.
func startStack(t *testing.T, legacy bool) *env {
	return startStackWith(t, harness.Options{Legacy: legacy, Admins: []string{"admin"}})
}

// startStackWith is startStack with more options.
func startStackWith(t *testing.T, opts harness.Options) *env {
	e := newEnvWith(t, opts)
	start := time.Now()
	if err := e.stack.StartSynapse(e.ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("Synapse is up after %s", time.Since(start).Round(time.Millisecond))
	if err := e.stack.StartRouter(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.populate()
	return e
}

// startPostgres starts a PostgreSQL server for the test, stopped when it
// ends (after the stacks that use it, which stop in their own cleanups).
func startPostgres(t *testing.T) *harness.Postgres {
	t.Helper()
	pg, err := harness.StartPostgres(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Stop)
	return pg
}

// newEnv prepares the configs of a stack without starting anything; the
// stack is stopped when the test ends, with the logs' tails printed if it
// failed.
func newEnv(t *testing.T, legacy bool) *env {
	return newEnvWith(t, harness.Options{Legacy: legacy, Admins: []string{"admin"}})
}

// newEnvWith is newEnv with more options; Dir, Python and Binary are set
// here.
func newEnvWith(t *testing.T, opts harness.Options) *env {
	legacy := opts.Legacy
	python, binary := os.Getenv("PR_PYTHON"), os.Getenv("PR_BINARY")
	if python == "" || binary == "" {
		t.Skip("PR_PYTHON and PR_BINARY are not set: run the e2e tests through `make test`, which builds the venv with Synapse and the binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	opts.Dir, opts.Python, opts.Binary = t.TempDir(), python, binary
	stack, err := harness.Prepare(opts)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, stack: stack, ctx: ctx, users: map[string]*mautrix.Client{}, syncs: map[string]*harness.Syncer{}}
	t.Cleanup(func() {
		for _, s := range e.syncs {
			s.Stop()
		}
		stack.Stop()
		checkStoppedStack(t, stack)
	})
	if out, err := exec.Command(python, "-c", "import synapse; print(synapse.__version__)").Output(); err == nil {
		t.Logf("Real Synapse %s from %s (adapter style: %s)", strings.TrimSpace(string(out)), python, map[bool]string{true: "legacy presence.presence_router", false: "modules"}[legacy])
	}
	return e
}

// checkStoppedStack fails the test when Synapse's log says a logging
// context was lost or leaked (a good Synapse module loses none), and prints
// the logs' tails when the test failed.
func checkStoppedStack(t *testing.T, stack *harness.Stack) {
	for _, p := range stack.Processes {
		warnings, synapseOwn, err := stack.LogContextWarnings(p.Log)
		if synapseOwn > 0 {
			t.Logf("Synapse's %s process logged %d logging-context warnings of its own appservice sender (not the adapter's; see harness.synapseOwnContexts)", p.Name, synapseOwn)
		}
		if err == nil && len(warnings) > 0 {
			t.Errorf("Synapse's %s process (%s) logged %d logging-context warnings, e.g.:\n%s", p.Name, stack.ServerName(), len(warnings), strings.Join(warnings[:min(len(warnings), 10)], "\n"))
		}
	}
	if t.Failed() {
		if keep := os.Getenv("PR_E2E_KEEP"); keep != "" {
			// Everything the stack wrote, for a look after the test.
			dest := filepath.Join(keep, strings.ReplaceAll(t.Name(), "/", "_")+"-"+filepath.Base(stack.Opts.Dir))
			if out, err := exec.Command("cp", "-r", stack.Opts.Dir, dest).CombinedOutput(); err != nil {
				t.Logf("PR_E2E_KEEP: %v %s", err, out)
			} else {
				t.Logf("PR_E2E_KEEP: the stack's files are in %s", dest)
			}
		}
		for _, p := range stack.Processes {
			t.Log(stack.Tail(p.Log, 60))
		}
		if !stack.Opts.Plain {
			t.Log(stack.Tail("presence-router.log", 60))
		}
	}
}

// populate registers the users, creates the control room (admin, the bot,
// and eve, a member who is no admin) and a room alice and bob share (dash
// shares none with them), starts the syncers and waits for the bot to join.
func (e *env) populate() {
	t, ctx := e.t, e.ctx
	t.Helper()
	for _, name := range []string{"admin", "alice", "bob", "dash", "eve"} {
		cli, err := e.stack.User(ctx, name, "password-"+name)
		if err != nil {
			t.Fatal(err)
		}
		e.users[name] = cli
	}
	admin := e.users["admin"]
	resp, err := admin.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomAliasName: "control", Name: "presence-router control"})
	if err != nil {
		t.Fatal(err)
	}
	e.room = resp.RoomID
	if e.beforeInvite != nil {
		e.beforeInvite()
	}
	e.invite(admin, e.room, e.stack.BotID())
	e.invite(admin, e.room, e.stack.UserID("eve"))
	if _, err = e.users["eve"].JoinRoom(ctx, string(e.room), nil); err != nil {
		t.Fatal(err)
	}
	chat, err := e.users["alice"].CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{e.stack.UserID("bob")}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = e.users["bob"].JoinRoom(ctx, string(chat.RoomID), nil); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"admin", "alice", "dash", "eve"} {
		if e.syncs[name], err = harness.NewSyncer(ctx, e.users[name]); err != nil {
			t.Fatal(err)
		}
	}
	e.waitBotJoined()
}

func (e *env) invite(inviter *mautrix.Client, room id.RoomID, user id.UserID) {
	e.t.Helper()
	var err error
	for range 50 {
		if _, err = inviter.InviteUser(e.ctx, room, &mautrix.ReqInviteUser{UserID: user}); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	e.t.Fatalf("failed to invite %s: %v", user, err)
}

func (e *env) waitBotJoined() {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		members, err := e.users["admin"].JoinedMembers(e.ctx, e.room)
		if err == nil {
			if _, ok := members.Joined[e.stack.BotID()]; ok {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	e.t.Fatal("the bot did not join the control room")
}

// command sends a command as user and returns the bot's reply.
func (e *env) command(user, text string) harness.Reply {
	e.t.Helper()
	resp, err := e.users[user].SendText(e.ctx, e.room, text)
	if err != nil {
		e.t.Fatal(err)
	}
	watcher := e.syncs[user]
	if watcher == nil {
		watcher = e.syncs["admin"]
	}
	reply, err := watcher.WaitReply(resp.EventID, 20*time.Second)
	if err != nil {
		e.t.Fatalf("%q: %v", text, err)
	}
	if reply.MsgType != "m.notice" {
		e.t.Errorf("reply to %q is %s, want m.notice", text, reply.MsgType)
	}
	return reply
}

func (e *env) setPresence(user, state, status string) {
	e.t.Helper()
	err := e.users[user].SetPresence(e.ctx, mautrix.ReqPresence{Presence: event.Presence(state), StatusMsg: status})
	if err != nil {
		e.t.Fatal(err)
	}
}

func TestPresenceRouting(t *testing.T) {
	for _, style := range []struct {
		name   string
		legacy bool
	}{{"modules", false}, {"legacy presence_router block", true}} {
		t.Run(style.name, func(t *testing.T) { presenceRoutingScenario(t, style.legacy) })
	}
}

// presenceRoutingScenario is the main scenario: commands in the control room
// change who receives presence in a real Synapse.
func presenceRoutingScenario(t *testing.T, legacy bool) {
	e := startStack(t, legacy)
	dash := e.syncs["dash"]

	t.Run("always-send add routes alice's presence to dash", func(t *testing.T) {
		reply := e.command("admin", "!presence always-send add @dash:localhost Support dashboard")
		if reply.Reaction != "✅" || !strings.Contains(reply.Body, "Added") {
			t.Fatalf("reply = %+v", reply)
		}
		e.setPresence("alice", "online", "alice is in")
		if _, ok := dash.WaitPresence(uid("alice"), "alice is in", 10*time.Second); !ok {
			t.Fatalf("dash did not receive alice's presence within 10 s; got %+v", dash.Presence())
		}
	})

	t.Run("blacklisted alice's change does not reach dash, bob's does", func(t *testing.T) {
		if reply := e.command("admin", "!presence blacklist add @alice:localhost"); reply.Reaction != "✅" {
			t.Fatalf("reply = %+v", reply)
		}
		e.setPresence("alice", "unavailable", "alice is hidden")
		e.setPresence("bob", "online", "bob is visible")
		if _, ok := dash.WaitPresence(uid("bob"), "bob is visible", 10*time.Second); !ok {
			t.Fatalf("dash did not receive bob's presence; got %+v", dash.Presence())
		}
		time.Sleep(2 * time.Second)
		if dash.SawPresence(uid("alice"), "alice is hidden") {
			t.Fatal("dash received blacklisted alice's presence")
		}
	})

	t.Run("always-send remove stops routing to dash", func(t *testing.T) {
		if reply := e.command("admin", "!presence always-send remove @dash:localhost"); reply.Reaction != "✅" {
			t.Fatalf("reply = %+v", reply)
		}
		e.setPresence("bob", "online", "bob after removal")
		// Positive control: alice shares a room with bob and sees the change.
		if _, ok := e.syncs["alice"].WaitPresence(uid("bob"), "bob after removal", 10*time.Second); !ok {
			t.Fatal("alice (shared room) did not see bob's change: the negative below would prove nothing")
		}
		time.Sleep(3 * time.Second)
		if dash.SawPresence(uid("bob"), "bob after removal") {
			t.Fatal("dash still receives bob's presence after removal")
		}
	})

	t.Run("a non-admin is refused and nothing changes", func(t *testing.T) {
		reply := e.command("eve", "!presence always-send add @dash:localhost")
		if reply.Reaction != "❌" || !strings.Contains(reply.Body, "not a presence-router admin") {
			t.Fatalf("reply = %+v", reply)
		}
		if list := e.command("admin", "!presence always-send list"); strings.Contains(list.Body, "@dash:localhost") {
			t.Fatalf("eve's command changed the list: %q", list.Body)
		}
	})

	t.Run("lists survive a restart of presence-router", func(t *testing.T) {
		if reply := e.command("admin", "!presence always-send add @dash:localhost @bob:localhost"); reply.Reaction != "✅" {
			t.Fatalf("reply = %+v", reply)
		}
		e.stack.StopRouter()
		if err := e.stack.StartRouter(e.ctx); err != nil {
			t.Fatal(err)
		}
		list := e.command("admin", "!presence always-send list")
		if !strings.Contains(list.Body, "@dash:localhost") || !strings.Contains(list.Body, "@bob:localhost") || !strings.Contains(list.Body, "2 users") {
			t.Fatalf("always-send list after restart = %q", list.Body)
		}
		black := e.command("admin", "!presence blacklist list")
		if !strings.Contains(black.Body, "@alice:localhost") || !strings.Contains(black.Body, "1 user") {
			t.Fatalf("blacklist after restart = %q", black.Body)
		}
	})

	t.Run("history explain and status answer", func(t *testing.T) {
		history := e.command("admin", "!presence history 3")
		if !strings.Contains(history.Body, "@admin:localhost") {
			t.Errorf("history = %q", history.Body)
		}
		explain := e.command("admin", "!presence explain @alice:localhost")
		if !strings.Contains(explain.Body, "blacklisted") {
			t.Errorf("explain = %q", explain.Body)
		}
		status := e.command("admin", "!presence status")
		if !strings.Contains(status.Body, "Version: 4") || !strings.Contains(status.Body, "always-send: 2 users") {
			t.Errorf("status = %q", status.Body)
		}
	})

	t.Run("metrics are served", func(t *testing.T) {
		// The adapter's own traffic right now is one open long poll, counted
		// when it completes: add a good and an unauthenticated request.
		req, _ := http.NewRequest("GET", e.stack.RouterURL+"/_presence_router/v1/rules", nil)
		req.Header.Set("Authorization", "Bearer "+e.stack.RouterToken)
		for _, r := range []*http.Request{req, func() *http.Request {
			r, _ := http.NewRequest("GET", e.stack.RouterURL+"/_presence_router/v1/rules", nil)
			return r
		}()} {
			if resp, err := http.DefaultClient.Do(r); err == nil {
				resp.Body.Close()
			}
		}
		resp, err := http.Get(e.stack.MetricsURL())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		value := func(series string) float64 {
			m := regexp.MustCompile("(?m)^" + regexp.QuoteMeta(series) + " (\\S+)$").FindStringSubmatch(string(body))
			if m == nil {
				t.Errorf("metrics lack %s", series)
				return -1
			}
			v, _ := strconv.ParseFloat(m[1], 64)
			return v
		}
		checks := []struct {
			series string
			ok     func(float64) bool
		}{
			{`presence_router_version`, func(v float64) bool { return v == 4 }},
			{`presence_router_list_size{list="always_send"}`, func(v float64) bool { return v == 2 }},
			{`presence_router_list_size{list="blacklist"}`, func(v float64) bool { return v == 1 }},
			{`presence_router_commands_total{result="ok"}`, func(v float64) bool { return v >= 1 }},
			{`presence_router_routing_requests_total{endpoint="rules",status="200"}`, func(v float64) bool { return v == 1 }},
			{`presence_router_routing_requests_total{endpoint="rules",status="401"}`, func(v float64) bool { return v == 1 }},
			{`presence_router_routing_request_duration_seconds_count{endpoint="rules"}`, func(v float64) bool { return v == 2 }},
			{`presence_router_adapter_last_request_age_seconds`, func(v float64) bool { return v >= 0 && v < 60 }},
			{`presence_router_bot_connected`, func(v float64) bool { return v == 1 }},
		}
		for _, c := range checks {
			if v := value(c.series); !c.ok(v) {
				t.Errorf("%s = %v is not plausible", c.series, v)
			}
		}
	})

	t.Run("no /sync failed and no token was logged", func(t *testing.T) {
		for name, s := range e.syncs {
			if n := s.SyncErrors(); n > 0 {
				t.Errorf("%d of %s's /sync requests failed", n, name)
			}
		}
		logs, _ := os.ReadFile(e.stack.Path("presence-router.log"))
		if strings.Contains(string(logs), e.stack.RouterToken) {
			t.Error("the router token appears in presence-router's log")
		}
	})
}

func TestAdminBotAndAdapter(t *testing.T) {
	e := startStack(t, false)

	t.Run("push: dash gets alice's current presence without a change from her", func(t *testing.T) {
		e.setPresence("alice", "online", "online before routing")
		time.Sleep(time.Second)
		if e.syncs["dash"].SawPresence(uid("alice"), "online before routing") {
			t.Fatal("dash saw alice's presence before being routed it")
		}
		e.command("admin", "!presence always-send add @dash:localhost")
		if _, ok := e.syncs["dash"].WaitPresence(uid("alice"), "online before routing", 5*time.Second); !ok {
			t.Fatalf("dash did not get alice's current presence within 5 s; got %+v", e.syncs["dash"].Presence())
		}
	})

	t.Run("bulk add with a reason shows in history", func(t *testing.T) {
		reply := e.command("admin", "!presence always-send add @mon1:localhost @mon2:localhost https://matrix.to/#/@mon3:localhost --force Night shift monitors")
		if reply.Reaction != "✅" || !strings.Contains(reply.Body, "@mon3:localhost") {
			t.Fatalf("reply = %+v", reply)
		}
		history := e.command("admin", "!presence history 1")
		if !strings.Contains(history.Body, "@admin:localhost") || !strings.Contains(history.Body, "Night shift monitors") || !strings.Contains(history.Body, "@mon1:localhost") {
			t.Fatalf("history = %q", history.Body)
		}
	})

	t.Run("a bad argument rejects the whole command", func(t *testing.T) {
		reply := e.command("admin", "!presence always-send add @ok:localhost @broken")
		if reply.Reaction != "❌" || !strings.Contains(reply.Body, "@broken") {
			t.Fatalf("reply = %+v", reply)
		}
		if list := e.command("admin", "!presence always-send list"); strings.Contains(list.Body, "@ok:localhost") {
			t.Fatal("a rejected command changed the list")
		}
	})

	t.Run("explain a blacklisted user and status", func(t *testing.T) {
		e.command("admin", "!presence blacklist add @bob:localhost privacy")
		if explain := e.command("admin", "!presence explain @bob:localhost"); !strings.Contains(explain.Body, "blacklisted") {
			t.Errorf("explain = %q", explain.Body)
		}
		status := e.command("admin", "!presence status")
		for _, want := range []string{"Version: 3", "always-send: 4 users", "blacklist: 1 user"} {
			if !strings.Contains(status.Body, want) {
				t.Errorf("status lacks %q: %q", want, status.Body)
			}
		}
	})

	t.Run("an invite from a non-admin is declined", func(t *testing.T) {
		resp, err := e.users["eve"].CreateRoom(e.ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		e.invite(e.users["eve"], resp.RoomID, e.stack.BotID())
		deadline := time.Now().Add(15 * time.Second)
		for {
			var member event.MemberEventContent
			err := e.users["eve"].StateEvent(e.ctx, resp.RoomID, event.StateMember, string(e.stack.BotID()), &member)
			if err == nil && member.Membership == event.MembershipLeave {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the bot did not decline eve's invite (membership %q, %v)", member.Membership, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("import from a stock-router homeserver.yaml", func(t *testing.T) {
		bad := e.stack.Path("bad-homeserver.yaml")
		_ = os.WriteFile(bad, []byte("presence:\n  presence_router:\n    module: my.ExamplePresenceRouter\n    config:\n      always_send_to_users: [\"@fine:localhost\", \"nobody\"]\n"), 0o600)
		out, err := exec.Command(os.Getenv("PR_BINARY"), "-c", e.stack.Path("config.yaml"), "--import-synapse-config", bad).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "nobody") || !strings.Contains(string(out), "nothing was imported") {
			t.Fatalf("bad import: %v %s", err, out)
		}
		good := e.stack.Path("stock-homeserver.yaml")
		_ = os.WriteFile(good, []byte("presence:\n  enabled: true\n  presence_router:\n    module: my_module.ExamplePresenceRouter\n    config:\n      always_send_to_users: [\"@imported:localhost\"]\n      blacklisted_users:\n        - \"@hidden:localhost\"\n"), 0o600)
		out, err = exec.Command(os.Getenv("PR_BINARY"), "-c", e.stack.Path("config.yaml"), "--import-synapse-config", good).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "1 always-send and 1 blacklisted") {
			t.Fatalf("import: %v %s", err, out)
		}
		// The running service picks up the change from the database.
		deadline := time.Now().Add(10 * time.Second)
		for {
			list := e.command("admin", "!presence always-send list")
			black := e.command("admin", "!presence blacklist list")
			if strings.Contains(list.Body, "@imported:localhost") && strings.Contains(black.Body, "@hidden:localhost") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("imported users not listed: %q / %q", list.Body, black.Body)
			}
			time.Sleep(time.Second)
		}
	})

	t.Run("Synapse keeps working while presence-router is down, and catches up", func(t *testing.T) {
		e.stack.StopRouter()
		before := map[string]int{}
		for name, s := range e.syncs {
			before[name] = s.SyncErrors()
		}
		// A change made through the store while the adapter is cut off.
		stock := e.stack.Path("outage-homeserver.yaml")
		_ = os.WriteFile(stock, []byte("modules:\n  - module: my_module.ExamplePresenceRouter\n    config:\n      always_send_to_users: [\"@eve:localhost\"]\n"), 0o600)
		if out, err := exec.Command(os.Getenv("PR_BINARY"), "-c", e.stack.Path("config.yaml"), "--import-synapse-config", stock).CombinedOutput(); err != nil {
			t.Fatalf("import: %v %s", err, out)
		}
		deadline := time.Now().Add(30 * time.Second)
		for i := 0; time.Now().Before(deadline); i++ {
			// Shared-room presence keeps flowing: bob's room-mate alice sees it.
			status := fmt.Sprintf("bob during outage %d", i)
			e.setPresence("bob", "online", status)
			if _, ok := e.syncs["alice"].WaitPresence(uid("bob"), status, 10*time.Second); !ok {
				t.Fatalf("alice did not see bob's presence while presence-router was down")
			}
			time.Sleep(3 * time.Second)
		}
		for name, s := range e.syncs {
			if n := s.SyncErrors() - before[name]; n > 0 {
				t.Errorf("%d of %s's /sync requests failed while presence-router was down", n, name)
			}
		}
		// dash shares no room with eve; his presence reaches her only by routing.
		e.setPresence("dash", "online", "dash at the end of the outage")
		time.Sleep(2 * time.Second)
		if e.syncs["eve"].SawPresence(uid("dash"), "dash at the end of the outage") {
			t.Fatal("eve got dash's presence before presence-router was back")
		}
		if err := e.stack.StartRouter(e.ctx); err != nil {
			t.Fatal(err)
		}
		// eve was added while the adapter was cut off: within 5 s of the
		// restart the adapter sees the new version and pushes to her.
		if _, ok := e.syncs["eve"].WaitPresence(uid("dash"), "dash at the end of the outage", 5*time.Second); !ok {
			t.Fatalf("eve did not get dash's presence within 5 s of the restart; got %+v", e.syncs["eve"].Presence())
		}
	})
}
