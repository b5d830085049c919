package follower

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/internal/testdb"
	"github.com/presence-router/presence-router/router"
	"github.com/presence-router/presence-router/rules"
	"github.com/presence-router/presence-router/store"
)

func TestMain(m *testing.M) { testdb.Main(m, "follower tests") }

// process is one presence-router process as far as rules go: its store
// connection, its engine, its follower, and its routing API.
type process struct {
	store    *store.Store
	engine   *router.Engine
	follower *Follower
	api      *httptest.Server
	logs     *test.Hook
}

func open(t *testing.T, location string) *store.Store {
	t.Helper()
	var st *store.Store
	var err error
	if testdb.OnPostgres() {
		st, err = store.OpenPostgres(context.Background(), location, zerolog.Nop())
	} else {
		st, err = store.Open(context.Background(), location, zerolog.Nop())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// start starts a process on the database at location; with run, it follows
// the database in the background as main does (notifications on
// PostgreSQL, polling every pollInterval).
func start(t *testing.T, location string, run bool, pollInterval time.Duration) *process {
	t.Helper()
	st := open(t, location)
	engine, err := Load(context.Background(), st, "x")
	if err != nil {
		t.Fatal(err)
	}
	log, hook := test.NewNullLogger()
	p := &process{store: st, engine: engine, follower: New(st, engine, logrus.NewEntry(log)), logs: hook}
	p.api = httptest.NewServer(router.NewHandler(engine, router.HandlerOptions{Token: "t", Log: logrus.NewEntry(log)}))
	t.Cleanup(p.api.Close)
	if run {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		wake, err := st.ListenChanges(ctx, func(err error) { t.Log(err) })
		if err != nil {
			t.Fatal(err)
		}
		go p.follower.Run(ctx, pollInterval, wake, func(err error) { t.Log(err) })
	}
	return p
}

// command commits a mutation as a chat command does: through this
// process's store, then its follower.
func (p *process) command(t *testing.T, entries ...rules.Entry) *rules.Change {
	t.Helper()
	res, err := p.store.Apply(context.Background(), rules.Mutation{Sender: "@admin:x", Command: "test", Entries: entries})
	if err != nil {
		t.Fatal(err)
	}
	if res.Change != nil {
		if err = p.follower.Committed(context.Background(), res.Change); err != nil {
			t.Fatal(err)
		}
	}
	return res.Change
}

// rulesAnswer is GET /_presence_router/v1/rules.
type rulesAnswer struct {
	Version    int64       `json:"version"`
	AlwaysSend []id.UserID `json:"always_send"`
	Blacklist  []id.UserID `json:"blacklist"`
}

func (p *process) served(t *testing.T) rulesAnswer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, p.api.URL+"/_presence_router/v1/rules", nil)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var a rulesAnswer
	if err = json.Unmarshal(body, &a); err != nil {
		t.Fatalf("rules: %v: %s", err, body)
	}
	return a
}

// inDatabase is what the database holds, in the shape of the rules answer.
func inDatabase(t *testing.T, st *store.Store) rulesAnswer {
	t.Helper()
	snap, err := st.LoadRules(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	a := rulesAnswer{Version: snap.Version, AlwaysSend: snap.AlwaysSend, Blacklist: snap.Blacklist}
	for _, list := range []*[]id.UserID{&a.AlwaysSend, &a.Blacklist} {
		if *list == nil {
			*list = []id.UserID{}
		}
		slices.Sort(*list)
	}
	return a
}

func sameRules(a, b rulesAnswer) bool {
	return a.Version == b.Version && slices.Equal(a.AlwaysSend, b.AlwaysSend) && slices.Equal(a.Blacklist, b.Blacklist)
}

func add(list rules.List, user id.UserID) rules.Entry {
	return rules.Entry{List: list, UserID: user, Action: rules.Add}
}

// An import committed by another process (--import-synapse-config beside
// the running service), then a chat command before the running process
// polled (its watch is left out here, as if its 2 s poll had not come yet):
// the router applies the import before the command, and routes by it.
// Before, the command's version was applied alone and the import never was.
func TestFollower_ImportThenACommandWithinTwoSeconds(t *testing.T) {
	location := testdb.NewLocation(t)
	running := start(t, location, false, 0)
	importer := open(t, location)
	if _, err := importer.Apply(context.Background(), rules.Mutation{Sender: "@importer:x", Command: "import", Entries: []rules.Entry{
		add(rules.AlwaysSend, "@dash:x"), add(rules.Blacklist, "@ceo:x"), add(rules.Blacklist, "@bot-*:x"),
	}}); err != nil {
		t.Fatal(err)
	}
	running.command(t, add(rules.Blacklist, "@spam:x"))
	if got, want := running.served(t), inDatabase(t, running.store); !sameRules(got, want) {
		t.Fatalf("the router serves %+v; the database holds %+v", got, want)
	}
	if ex := running.engine.Explain("@ceo:x"); !ex.Blacklisted {
		t.Error("the imported blacklisted user's presence is still routed")
	}
}

// Two processes on one database, 50 commands alternating between them:
// after each command settles, both routers serve exactly what the
// database holds, at its version. With their watches running (PostgreSQL's
// notifications, or SQLite's poll), both settle within a second; with no
// watch at all, each process's own commands still bring it up to the other
// one's (before, a command applied alone skipped the other's versions for
// good).
func TestFollower_TwoProcessesInterleavingFiftyCommands(t *testing.T) {
	poll := 20 * time.Millisecond // SQLite has no notifications
	if testdb.OnPostgres() {
		poll = 2 * time.Second // so that notifications do the work
	}
	for _, watch := range []bool{true, false} {
		t.Run(fmt.Sprintf("watching %v", watch), func(t *testing.T) {
			location := testdb.NewLocation(t)
			procs := []*process{start(t, location, watch, poll), start(t, location, watch, poll)}
			for i := range 50 {
				var entry rules.Entry
				switch user := id.UserID(fmt.Sprintf("@u%d:x", i/3)); i % 3 {
				case 0:
					entry = add(rules.AlwaysSend, user)
				case 1:
					entry = add(rules.Blacklist, user)
				default:
					entry = rules.Entry{List: rules.Blacklist, UserID: user, Action: rules.Remove}
				}
				procs[i%2].command(t, entry)
				want := inDatabase(t, procs[0].store)
				settled := procs[i%2 : i%2+1] // without a watch, only the committing one
				if watch {
					settled = procs
				}
				deadline := time.Now().Add(time.Second)
				for _, p := range settled {
					got := p.served(t)
					for !sameRules(got, want) && time.Now().Before(deadline) {
						time.Sleep(5 * time.Millisecond)
						got = p.served(t)
					}
					if !sameRules(got, want) {
						t.Fatalf("after command %d, a process serves %+v; the database holds %+v", i, got, want)
					}
				}
			}
		})
	}
}

// An engine more than MaxBehind changes behind reloads the rules, and says
// so, instead of applying each change.
func TestFollower_FarBehindReloads(t *testing.T) {
	location := testdb.NewLocation(t)
	behind := start(t, location, false, 0)
	behind.follower.MaxBehind = 3
	other := start(t, location, false, 0)
	for i := range 5 {
		other.command(t, add(rules.AlwaysSend, id.UserID(fmt.Sprintf("@d%d:x", i))))
	}
	if err := behind.follower.CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := behind.served(t), inDatabase(t, behind.store); !sameRules(got, want) {
		t.Fatalf("after catching up the router serves %+v; the database holds %+v", got, want)
	}
	entry := behind.logs.LastEntry()
	if entry == nil || entry.Level != logrus.WarnLevel || entry.Data["from_version"] != int64(0) || entry.Data["version"] != int64(5) {
		t.Fatalf("log %+v, want a warning that it reloaded from version 0 at 5", entry)
	}
	// The same through a command of its own, four behind again.
	for i := range 4 {
		other.command(t, add(rules.Blacklist, id.UserID(fmt.Sprintf("@b%d:x", i))))
	}
	behind.command(t, add(rules.Blacklist, "@mine:x"))
	if got, want := behind.served(t), inDatabase(t, behind.store); !sameRules(got, want) {
		t.Fatalf("after its own command the router serves %+v; the database holds %+v", got, want)
	}
	if entry := behind.logs.LastEntry(); entry == nil || entry.Data["from_version"] != int64(5) {
		t.Fatalf("log %+v, want a reload from version 5", entry)
	}
}

// failingSource fails to read what lies between; everything else is the
// store's.
type failingSource struct{ *store.Store }

func (failingSource) ChangesBetween(context.Context, int64, int64, int) ([]rules.Change, error) {
	return nil, errors.New("database down")
}

// When the changes before a committed one cannot be read, nothing is
// applied (the engine never reports a version whose predecessors it lacks);
// catching up later applies them all, in order.
func TestFollower_AGapThatCannotBeReadIsNotSkipped(t *testing.T) {
	location := testdb.NewLocation(t)
	p := start(t, location, false, 0)
	other := open(t, location)
	if _, err := other.Apply(context.Background(), rules.Mutation{Sender: "@a:x", Entries: []rules.Entry{add(rules.Blacklist, "@first:x")}}); err != nil {
		t.Fatal(err)
	}
	res, err := p.store.Apply(context.Background(), rules.Mutation{Sender: "@a:x", Entries: []rules.Entry{add(rules.Blacklist, "@second:x")}})
	if err != nil {
		t.Fatal(err)
	}
	broken := New(failingSource{p.store}, p.engine, logrus.NewEntry(logrus.New()))
	if err = broken.Committed(context.Background(), res.Change); err == nil {
		t.Fatal("Committed succeeded without reading the change before it")
	}
	if v := p.engine.Version(); v != 0 {
		t.Fatalf("the engine reports version %d without version 1", v)
	}
	if err = p.follower.CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := p.served(t), inDatabase(t, p.store); !sameRules(got, want) {
		t.Fatalf("after catching up the router serves %+v; the database holds %+v", got, want)
	}
	// A change the engine already has is not applied again.
	if err = p.follower.Committed(context.Background(), res.Change); err != nil || p.engine.Version() != 2 {
		t.Fatalf("Committed of an applied change: %v, version %d", err, p.engine.Version())
	}
}
