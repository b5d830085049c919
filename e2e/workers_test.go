//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/presence-router/presence-router/e2e/harness"
)

// TestWorkers runs Synapse as large homeservers do: a main process, a
// presence writer and a sync worker, on PostgreSQL with Redis, the adapter
// loaded in each, and presence-router on the same PostgreSQL server. Each
// test calls the process it means directly: /sync on the sync worker,
// PUT /presence on the writer or a worker, room and admin calls on main.
func TestWorkers(t *testing.T) {
	began := time.Now()
	pg := startPostgres(t)
	redis, err := harness.StartRedis(context.Background(), filepath.Join(pg.Dir, "redis.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(redis.Stop)
	e := startStackWith(t, harness.Options{Admins: []string{"admin"}, Workers: true, Postgres: pg, RedisPort: redis.Port})
	checkDocFiles(t, e.stack, "../docs/workers.md", 3)
	t.Cleanup(func() { t.Logf("the worker test took %s", time.Since(began).Round(time.Second)) })
	main, writer, syncer := e.stack.Process(harness.MainProcess), e.stack.Process(harness.PresenceWriter), e.stack.Process(harness.SyncWorker)
	t.Logf("up after %s: main %s, presence writer %s, sync worker %s", time.Since(began).Round(time.Millisecond), main.URL, writer.URL, syncer.URL)

	// The same user's access token works on every process.
	on := func(name string, p *harness.Process) *mautrix.Client {
		t.Helper()
		cli, err := mautrix.NewClient(p.URL, e.users[name].UserID, e.users[name].AccessToken)
		if err != nil {
			t.Fatal(err)
		}
		return cli
	}
	for _, name := range []string{"carol", "mallory"} {
		if e.users[name], err = e.stack.User(e.ctx, name, "password-"+name); err != nil {
			t.Fatal(err)
		}
	}
	// dash and carol sync on the sync worker, bob on the writer, the others on main.
	e.syncs["dash"].Stop()
	for name, p := range map[string]*harness.Process{"dash": syncer, "carol": syncer, "bob": writer} {
		if e.syncs[name], err = harness.NewSyncer(e.ctx, on(name, p)); err != nil {
			t.Fatal(err)
		}
	}
	putErrors := atomic.Int64{}
	setPresenceOn := func(name string, p *harness.Process, status string) {
		t.Helper()
		if err := on(name, p).SetPresence(e.ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: status}); err != nil {
			putErrors.Add(1)
			t.Errorf("PUT /presence for %s on the %s process: %v", name, p.Name, err)
		}
	}
	// command sends a command and waits until every process's adapter holds
	// the version it made, which must take at most within.
	command := func(text string, within time.Duration) harness.Reply {
		t.Helper()
		start := time.Now()
		reply := e.command("admin", text)
		if reply.Reaction != "✅" {
			t.Fatalf("%q: reply = %+v", text, reply)
		}
		m := regexp.MustCompile(`Version (\d+)`).FindStringSubmatch(reply.Body)
		if m == nil {
			t.Fatalf("%q: no version in the reply %q", text, reply.Body)
		}
		version, _ := strconv.Atoi(m[1])
		var line []string
		for _, p := range e.stack.Processes {
			took, err := waitAdapterVersion(p, version, start.Add(within+10*time.Second))
			if err != nil {
				t.Fatalf("%q: the %s process's adapter: %v", text, p.Name, err)
			}
			line = append(line, fmt.Sprintf("%s %s", p.Name, took.Sub(start).Round(time.Millisecond)))
			if took.Sub(start) > within {
				t.Errorf("%q: the %s process's adapter reached version %d after %s, later than %s", text, p.Name, version, took.Sub(start).Round(time.Millisecond), within)
			}
		}
		t.Logf("%q: version %d on every adapter after (from sending the command): %s", text, version, strings.Join(line, ", "))
		return reply
	}

	t.Run("dash on the sync worker gets alice's presence set through the writer and through the sync worker", func(t *testing.T) {
		start := time.Now()
		command("!presence always-send add @dash:localhost", time.Second)
		setPresenceOn("alice", writer, "alice through the writer")
		if p, ok := e.syncs["dash"].WaitPresence(uid("alice"), "alice through the writer", 5*time.Second-time.Since(start)); !ok {
			t.Fatalf("dash did not get alice's presence (set on the writer) within 5 s of the command; got %+v", e.syncs["dash"].Presence())
		} else {
			t.Logf("through the writer: %s after the command", p.At.Sub(start).Round(time.Millisecond))
		}
		start = time.Now()
		setPresenceOn("alice", syncer, "alice through the sync worker")
		if p, ok := e.syncs["dash"].WaitPresence(uid("alice"), "alice through the sync worker", 5*time.Second); !ok {
			t.Fatalf("dash did not get alice's presence (set on the sync worker) within 5 s; got %+v", e.syncs["dash"].Presence())
		} else {
			t.Logf("through the sync worker: %s after the PUT", p.At.Sub(start).Round(time.Millisecond))
		}
	})

	t.Run("push: carol gets bob's presence from the writer alone", func(t *testing.T) {
		setPresenceOn("bob", writer, "bob online first")
		if _, ok := e.syncs["alice"].WaitPresence(uid("bob"), "bob online first", 10*time.Second); !ok {
			t.Fatal("alice (shared room) did not see bob come online")
		}
		if e.syncs["carol"].SawPresence(uid("bob"), "bob online first") {
			t.Fatal("carol saw bob's presence before being routed it")
		}
		pushes := func() map[string]int {
			counts := map[string]int{}
			for _, p := range e.stack.Processes {
				data, _ := os.ReadFile(e.stack.Path(p.Log))
				counts[p.Name] = strings.Count(string(data), "Sent current presence to")
			}
			return counts
		}
		before := pushes()
		start := time.Now()
		command("!presence always-send add @carol:localhost", time.Second)
		if p, ok := e.syncs["carol"].WaitPresence(uid("bob"), "bob online first", 5*time.Second-time.Since(start)); !ok {
			t.Fatalf("carol did not get bob's current presence within 5 s; got %+v", e.syncs["carol"].Presence())
		} else {
			t.Logf("carol got bob's presence %s after the command", p.At.Sub(start).Round(time.Millisecond))
		}
		after := pushes()
		for _, p := range e.stack.Processes {
			pushed := after[p.Name] - before[p.Name]
			t.Logf("pushes logged by the %s process: %d", p.Name, pushed)
			if want := map[bool]int{true: 1, false: 0}[p.Name == harness.PresenceWriter]; pushed != want {
				t.Errorf("the %s process logged %d pushes, want %d", p.Name, pushed, want)
			}
			if data, _ := os.ReadFile(e.stack.Path(p.Log)); p.Name != harness.PresenceWriter && !strings.Contains(string(data), "does not write the presence stream") {
				t.Errorf("the %s process's log does not say it leaves pushing to the writer", p.Name)
			}
		}
	})

	t.Run("a blacklisted user's change does not reach dash while a control user's does", func(t *testing.T) {
		command("!presence blacklist add @mallory:localhost", time.Second)
		setPresenceOn("mallory", syncer, "mallory is hidden")
		setPresenceOn("alice", writer, "alice, the control")
		if _, ok := e.syncs["dash"].WaitPresence(uid("alice"), "alice, the control", 5*time.Second); !ok {
			t.Fatal("dash did not get the control user's change: the negative below would prove nothing")
		}
		time.Sleep(2 * time.Second)
		if e.syncs["dash"].SawPresence(uid("mallory"), "mallory is hidden") {
			t.Fatal("dash received blacklisted mallory's presence")
		}
	})

	t.Run("presence-router stopped for 20 s fails no request on any process and a command then takes effect everywhere", func(t *testing.T) {
		syncErrors := map[string]int{}
		for name, s := range e.syncs {
			syncErrors[name] = s.SyncErrors()
		}
		putsBefore := putErrors.Load()
		e.stack.StopRouter()
		deadline := time.Now().Add(20 * time.Second)
		puts := 0
		for i := 0; time.Now().Before(deadline); i++ {
			for _, p := range e.stack.Processes {
				setPresenceOn("bob", p, fmt.Sprintf("bob on %s during the outage %d", p.Name, i))
				puts++
			}
			time.Sleep(time.Second)
		}
		// Shared-room presence kept flowing: bob's room-mate alice sees his last change.
		last := fmt.Sprintf("bob on %s during the outage", harness.SyncWorker)
		if !strings.Contains(fmt.Sprint(e.syncs["alice"].Presence()), last) {
			t.Errorf("alice (shared room) saw none of bob's changes during the outage")
		}
		for name, s := range e.syncs {
			if n := s.SyncErrors() - syncErrors[name]; n > 0 {
				t.Errorf("%d of %s's /sync requests failed while presence-router was down", n, name)
			}
		}
		if n := putErrors.Load() - putsBefore; n > 0 {
			t.Errorf("%d of %d PUT /presence failed while presence-router was down", n, puts)
		}
		t.Logf("%d PUT /presence on the three processes and the syncers' /sync on all of them during 20 s: none failed", puts)
		if err := e.stack.StartRouter(e.ctx); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		command("!presence always-send add @eve:localhost", 15*time.Second)
		if _, ok := e.syncs["eve"].WaitPresence(uid("alice"), "alice, the control", 10*time.Second); !ok {
			t.Fatalf("eve did not get alice's current presence after presence-router returned; got %+v", e.syncs["eve"].Presence())
		}
		t.Logf("after presence-router returned, eve was routed alice's presence %s after the command", time.Since(start).Round(time.Millisecond))
	})
}

var adapterVersionLine = regexp.MustCompile(`(?m)^presence_router_adapter_version (\S+)$`)

// waitAdapterVersion polls a process's metrics until its adapter holds
// version (or a later one), and returns when it saw it.
func waitAdapterVersion(p *harness.Process, version int, deadline time.Time) (time.Time, error) {
	var last string
	for {
		resp, err := http.Get(p.MetricsURL)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if m := adapterVersionLine.FindSubmatch(body); m != nil {
				last = string(m[1])
				if v, err := strconv.ParseFloat(last, 64); err == nil && int(v) >= version {
					return time.Now(), nil
				}
			}
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("presence_router_adapter_version is %q, not %d (metrics at %s; %v)", last, version, p.MetricsURL, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var (
	docFile   = regexp.MustCompile("(?s)<!-- file: (\\S+) -->\n```\\w*\n(.*?)```")
	portValue = regexp.MustCompile(`(port: |127\.0\.0\.1:)\d+`)
)

// checkDocFiles checks that a doc (a path from e2e/) shows the files the
// stack wrote: it has want file blocks (<!-- file: NAME --> before a
// fenced block), and each block's lines stand in that file in the same
// order, ports aside.
func checkDocFiles(t *testing.T, stack *harness.Stack, docPath string, want int) {
	t.Helper()
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	blocks := docFile.FindAllSubmatch(doc, -1)
	if len(blocks) != want {
		t.Fatalf("%s shows %d files, want %d", docPath, len(blocks), want)
	}
	for _, block := range blocks {
		data, err := os.ReadFile(stack.Path(string(block[1])))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(portValue.ReplaceAllString(string(data), "${1}N"), "\n")
		i := 0
		for _, want := range strings.Split(strings.TrimSpace(portValue.ReplaceAllString(string(block[2]), "${1}N")), "\n") {
			for i < len(lines) && lines[i] != want {
				i++
			}
			if i == len(lines) {
				t.Errorf("%s shows %q in %s, which the harness does not write there (or not in that order)", docPath, want, block[1])
				break
			}
			i++
		}
	}
}
