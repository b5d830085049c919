package bot

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rs/zerolog"
	"github.com/sirupsen/logrus"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/config"
	"github.com/presence-router/presence-router/encryption"
	"github.com/presence-router/presence-router/follower"
	"github.com/presence-router/presence-router/router"
	"github.com/presence-router/presence-router/rules"
	"github.com/presence-router/presence-router/store"
)

const (
	testRoom   = id.RoomID("!control:test")
	testAdmin  = id.UserID("@admin:test")
	testMember = id.UserID("@member:test")
	testMod    = id.UserID("@mod:test")
	hsToken    = "hs-token-for-tests-0123456789"
)

// sentEvent is an event the bot sent to the fake homeserver.
type sentEvent struct {
	Room    string
	Type    string
	TxnID   string
	Content map[string]any
	Size    int
}

// fakeHomeserver answers the client-server API calls the bot makes and
// records what it sends. Sending the same transaction ID twice stores one
// event, like Synapse.
type fakeHomeserver struct {
	t        *testing.T
	lock     sync.Mutex
	sent     []sentEvent
	txnSeen  map[string]bool
	leaves   []string
	userPL   map[id.UserID]int
	failSend bool
	timeline []map[string]any // the control room's /messages, newest first
	pages    int              // /messages requests answered
	// failMessages makes /messages fail, as while Synapse is busy.
	failMessages bool
	// aliases maps room aliases to room IDs; joins records joined rooms.
	aliases      map[string]id.RoomID
	joins        []string
	usersDefault int
	encrypted    bool // the control room has an m.room.encryption event
	failJoin     bool // joins fail, as when the bot was not invited
	down         bool // every request fails, as while Synapse is stopped
	// tombstone is the control room's m.room.tombstone state event (nil:
	// none); predecessors maps rooms to their m.room.create's predecessor.
	tombstone    map[string]any
	predecessors map[id.RoomID]id.RoomID
	forbidJoin   map[string]bool // joins of these rooms fail, as without an invite
	refuseSend   bool            // sends are refused (403), as after a room upgrade
	paths        []string        // every request's path, in order
	// registerGate, when set, holds /register until it is closed (the
	// bot is not connected before; newTestBotWith does not wait for it).
	registerGate chan struct{}
}

// set changes the fake homeserver (f sets its fields) under its lock.
func (hs *fakeHomeserver) set(f func()) {
	hs.lock.Lock()
	defer hs.lock.Unlock()
	f()
}

func newFakeHomeserver(t *testing.T) *fakeHomeserver {
	return &fakeHomeserver{t: t, txnSeen: map[string]bool{}, userPL: map[id.UserID]int{testMod: 50}}
}

func (hs *fakeHomeserver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if hs.registerGate != nil && strings.HasSuffix(r.URL.Path, "/register") {
		<-hs.registerGate
	}
	hs.lock.Lock()
	defer hs.lock.Unlock()
	path := r.URL.Path
	hs.paths = append(hs.paths, path)
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	switch {
	case hs.down:
		w.WriteHeader(http.StatusBadGateway)
		fmt.Fprint(w, `{"errcode":"M_UNKNOWN","error":"Bad Gateway"}`)
	case strings.Contains(path, "/profile/@dahs"):
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"errcode":"M_UNKNOWN","error":"No row found (profiles)"}`) // as Synapse 1.163 answers
	case strings.HasSuffix(path, "/register"):
		fmt.Fprint(w, `{"user_id":"@presence:test"}`)
	case strings.Contains(path, "/join/") && hs.forbidJoin[path[strings.LastIndex(path, "/")+1:]]:
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"errcode":"M_FORBIDDEN","error":"You are not invited to this room."}`)
	case strings.Contains(path, "/join/"):
		room := path[strings.LastIndex(path, "/")+1:]
		hs.joins = append(hs.joins, room)
		fmt.Fprintf(w, `{"room_id":%q}`, room)
	case strings.HasSuffix(path, "/join") && hs.failJoin:
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"errcode":"M_FORBIDDEN","error":"not invited"}`)
	case strings.HasSuffix(path, "/join"):
		parts := strings.Split(path, "/")
		room := parts[len(parts)-2]
		hs.joins = append(hs.joins, room)
		fmt.Fprintf(w, `{"room_id":%q}`, room)
	case strings.Contains(path, "/directory/room/"):
		alias, _ := url.PathUnescape(path[strings.LastIndex(path, "/")+1:])
		room, ok := hs.aliases[alias]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"errcode":"M_NOT_FOUND","error":"no such alias"}`)
			return
		}
		fmt.Fprintf(w, `{"room_id":%q,"servers":["test"]}`, room)
	case strings.HasSuffix(path, "/leave"):
		hs.leaves = append(hs.leaves, path)
		fmt.Fprint(w, `{}`)
	case strings.Contains(path, "/appservice/") && strings.HasSuffix(path, "/ping"):
		fmt.Fprint(w, `{"duration_ms":1}`)
	case strings.HasSuffix(path, "/messages"):
		if hs.failMessages {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"errcode":"M_UNKNOWN","error":"busy"}`)
			return
		}
		// Paginated like Synapse: "end" is absent at the start of the room.
		hs.pages++
		offset, _ := strconv.Atoi(r.URL.Query().Get("from"))
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		offset, end := min(offset, len(hs.timeline)), min(offset+limit, len(hs.timeline))
		resp := map[string]any{"chunk": append([]map[string]any{}, hs.timeline[offset:end]...), "start": strconv.Itoa(offset)}
		if end < len(hs.timeline) {
			resp["end"] = strconv.Itoa(end)
		}
		_ = json.NewEncoder(w).Encode(resp)
	case strings.Contains(path, "/state/m.room.encryption"):
		if !hs.encrypted {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"errcode":"M_NOT_FOUND","error":"Event not found."}`)
			return
		}
		fmt.Fprint(w, `{"algorithm":"m.megolm.v1.aes-sha2"}`)
	case strings.HasSuffix(path, "/state"):
		state := []map[string]any{}
		if hs.tombstone != nil {
			state = append(state, hs.tombstone)
		}
		_ = json.NewEncoder(w).Encode(state)
	case strings.Contains(path, "/state/m.room.create"):
		parts := strings.Split(path, "/")
		room, _ := url.PathUnescape(parts[len(parts)-4])
		_ = json.NewEncoder(w).Encode(map[string]any{"room_version": "12", "predecessor": map[string]any{"room_id": hs.predecessors[id.RoomID(room)]}})
	case strings.Contains(path, "/state/m.room.power_levels"):
		pl := map[string]any{"users": hs.userPL, "users_default": hs.usersDefault}
		_ = json.NewEncoder(w).Encode(pl)
	case strings.Contains(path, "/send/"):
		if hs.refuseSend {
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `{"errcode":"M_FORBIDDEN","error":"You don't have permission to post that to the room."}`)
			return
		}
		if hs.failSend {
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprint(w, `{"errcode":"M_UNKNOWN","error":"down"}`)
			return
		}
		parts := strings.Split(path, "/")
		txnID, evtType, room := parts[len(parts)-1], parts[len(parts)-2], parts[len(parts)-4]
		if !hs.txnSeen[txnID] {
			hs.txnSeen[txnID] = true
			var content map[string]any
			_ = json.Unmarshal(body, &content)
			hs.sent = append(hs.sent, sentEvent{Room: room, Type: evtType, TxnID: txnID, Content: content, Size: len(body)})
		}
		fmt.Fprintf(w, `{"event_id":"$sent-%s"}`, txnID)
	default:
		fmt.Fprint(w, `{}`)
	}
}

func (hs *fakeHomeserver) events(evtType string) []sentEvent {
	hs.lock.Lock()
	defer hs.lock.Unlock()
	var out []sentEvent
	for _, e := range hs.sent {
		if e.Type == evtType {
			out = append(out, e)
		}
	}
	return out
}

type testBot struct {
	*Bot
	hs     *fakeHomeserver
	store  *store.Store
	engine *router.Engine
	dbPath string
}

func newTestBot(t *testing.T, dbPath string, adminPL *int) *testBot {
	t.Helper()
	return newTestBotWith(t, dbPath, adminPL, newFakeHomeserver(t))
}

// newTestBotWith starts a bot against hs, prepared by the caller.
func newTestBotWith(t *testing.T, dbPath string, adminPL *int, hs *fakeHomeserver) *testBot {
	t.Helper()
	return newTestBotIn(t, dbPath, adminPL, hs, string(testRoom))
}

// newTestBotIn starts a bot whose bot.control_room is controlRoom.
func newTestBotIn(t *testing.T, dbPath string, adminPL *int, hs *fakeHomeserver, controlRoom string) *testBot {
	return newTestBotEnc(t, dbPath, adminPL, hs, controlRoom, nil)
}

// newTestBotEnc is newTestBotIn with the bot's encryption enc (nil: from
// the config, off).
func newTestBotEnc(t *testing.T, dbPath string, adminPL *int, hs *fakeHomeserver, controlRoom string, enc encryption.Component) *testBot {
	t.Helper()
	srv := httptest.NewServer(hs)
	t.Cleanup(srv.Close)
	if dbPath == "" {
		dbPath = filepath.Join(t.TempDir(), "bot.db")
	}
	st, err := store.Open(context.Background(), dbPath, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	rules, _ := st.LoadRules(context.Background())
	engine := router.NewEngine("", rules.Version, rules.AlwaysSend, rules.Blacklist, nil)
	cfg := config.Default()
	cfg.Homeserver = config.Homeserver{Address: srv.URL, Domain: "test"}
	cfg.Appservice.ASToken, cfg.Appservice.HSToken = "as-token-for-tests-0123456789", hsToken
	cfg.Bot.ControlRoom = controlRoom
	cfg.Bot.Admins = []id.UserID{testAdmin}
	cfg.Bot.AdminPowerLevel = adminPL
	reg := appservice.CreateRegistration()
	reg.ID, reg.AppToken, reg.ServerToken, reg.SenderLocalpart = "presence-router", cfg.Appservice.ASToken, hsToken, "presence"
	as, err := appservice.CreateFull(appservice.CreateOpts{Registration: reg, HomeserverDomain: "test", HomeserverURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	as.DefaultHTTPRetries = 0
	log := logrus.New()
	log.SetOutput(io.Discard)
	if os.Getenv("PR_BOT_LOG") != "" {
		log.SetOutput(os.Stderr)
		log.SetLevel(logrus.DebugLevel)
	}
	b := New(Options{Config: &cfg, AS: as, Store: st, Engine: engine, Follower: follower.New(st, engine, logrus.NewEntry(log)), Log: logrus.NewEntry(log), Metrics: NewMetrics(prometheus.NewRegistry()),
		HomeserverCheckInterval: 20 * time.Millisecond, Encryption: enc})
	b.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		b.Stop(ctx)
	})
	tb := &testBot{Bot: b, hs: hs, store: st, engine: engine, dbPath: dbPath}
	if hs.registerGate == nil {
		tb.waitFor(t, "connected", b.Connected)
	}
	return tb
}

func (tb *testBot) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func message(eventID string, sender id.UserID, body string) map[string]any {
	return map[string]any{
		"event_id": eventID, "room_id": testRoom, "sender": sender, "type": "m.room.message",
		"origin_server_ts": 1, "content": map[string]any{"msgtype": "m.text", "body": body},
	}
}

// deliver sends an appservice transaction and returns the HTTP status.
func (tb *testBot) deliver(t *testing.T, txnID, token string, events ...map[string]any) int {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"events": events})
	req := httptest.NewRequest(http.MethodPut, "/_matrix/app/v1/transactions/"+txnID, bytes.NewReader(body))
	req.SetPathValue("txnID", txnID)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	tb.HandleTransaction(rec, req)
	return rec.Code
}

// replies waits for n replies and returns them all.
func (tb *testBot) replies(t *testing.T, n int) []sentEvent {
	t.Helper()
	tb.waitFor(t, fmt.Sprintf("%d replies", n), func() bool { return len(tb.hs.events("m.room.message")) >= n })
	return tb.hs.events("m.room.message")
}

func body(e sentEvent) string {
	s, _ := e.Content["body"].(string)
	return s
}

// TestBot_RepliesWaitForTheBotsRegistration: a command delivered while
// the bot's registration is still under way is applied, and its reply is
// sent once the bot is registered, not before (mautrix's intent reads
// whether it is registered unlocked when it sends, while the registration
// writes it: under -race, sending before is caught).
func TestBot_RepliesWaitForTheBotsRegistration(t *testing.T) {
	// A first run applies a command whose reply the homeserver fails to
	// take: the reply is left to the next run.
	first := newTestBot(t, "", nil)
	first.hs.set(func() { first.hs.failSend = true })
	first.deliver(t, "t1", hsToken, message("$early", testAdmin, "!presence always-send add @early:test"))
	first.waitFor(t, "the command applied", func() bool { return first.engine.Version() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	first.Stop(ctx)
	cancel()
	_ = first.store.Close()
	// The next run's worker has that reply to send at once, while the
	// bot's registration is held.
	hs := newFakeHomeserver(t)
	hs.registerGate = make(chan struct{})
	released := false
	release := func() {
		if !released {
			released = true
			close(hs.registerGate)
		}
	}
	tb := newTestBotWith(t, first.dbPath, nil, hs)
	// Released before the fake homeserver closes (cleanups run last first).
	t.Cleanup(release)
	// Time to send, had the worker not waited.
	time.Sleep(300 * time.Millisecond)
	if sent := tb.hs.events("m.room.message"); len(sent) != 0 {
		t.Fatalf("a reply was sent before the bot was registered: %v", sent)
	}
	release()
	if got := body(tb.replies(t, 1)[0]); !strings.Contains(got, "@early:test") {
		t.Errorf("the reply after registration: %q", got)
	}
}

func TestBot_RetriedTransactionAndRedeliveryApplyOnce(t *testing.T) {
	tb := newTestBot(t, "", nil)
	cmd := message("$add", testAdmin, "!presence always-send add @dash:test")
	for i, txn := range []string{"t1", "t1", "t2"} {
		if code := tb.deliver(t, txn, hsToken, cmd); code != http.StatusOK {
			t.Fatalf("delivery %d answered %d", i, code)
		}
	}
	tb.replies(t, 1)
	time.Sleep(100 * time.Millisecond)
	if v := tb.engine.Version(); v != 1 {
		t.Fatalf("version = %d after one command delivered three times, want 1", v)
	}
	if n := len(tb.hs.events("m.room.message")); n != 1 {
		t.Fatalf("%d replies to one command, want 1", n)
	}
	if n := len(tb.hs.events("m.reaction")); n != 1 {
		t.Fatalf("%d reactions, want 1", n)
	}

	// A restart: a new bot on the same database gets the event again.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	tb.Stop(ctx)
	cancel()
	_ = tb.store.Close()
	tb2 := newTestBot(t, tb.dbPath, nil)
	if code := tb2.deliver(t, "t3", hsToken, cmd); code != http.StatusOK {
		t.Fatalf("redelivery answered %d", code)
	}
	time.Sleep(200 * time.Millisecond)
	if v, _ := tb2.store.Version(context.Background()); v != 1 {
		t.Fatalf("version = %d after redelivery, want 1", v)
	}
	if n := len(tb2.hs.events("m.room.message")); n != 0 {
		t.Fatalf("redelivered command was answered again (%d replies)", n)
	}
}

func TestBot_AppliesCommandsInOrder(t *testing.T) {
	tb := newTestBot(t, "", nil)
	tb.deliver(t, "t1", hsToken,
		message("$1", testAdmin, "!presence always-send add @dash:test"),
		message("$2", testAdmin, "!presence always-send remove @dash:test"),
		message("$3", testAdmin, "!presence always-send add @dash:test @mon:test"),
		message("$4", testAdmin, "!presence always-send remove @mon:test"),
	)
	tb.replies(t, 4)
	_, alwaysSend, _ := tb.engine.Rules()
	if len(alwaysSend) != 1 || alwaysSend[0] != "@dash:test" || tb.engine.Version() != 4 {
		t.Fatalf("always-send = %v at version %d, want [@dash:test] at 4", alwaysSend, tb.engine.Version())
	}
}

func TestBot_Permissions(t *testing.T) {
	fifty := 50
	tests := []struct {
		name    string
		adminPL *int
		sender  id.UserID
		allowed bool
	}{
		{"listed admin may change lists", nil, testAdmin, true},
		{"member is refused", nil, testMember, false},
		{"power-level admin is refused when admin_power_level is unset", nil, testMod, false},
		{"power-level admin is accepted", &fifty, testMod, true},
		{"member below the power level is refused", &fifty, testMember, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTestBot(t, "", tt.adminPL)
			tb.deliver(t, "t", hsToken, message("$cmd", tt.sender, "!presence blacklist add @alice:test"))
			reply := tb.replies(t, 1)[0]
			_, _, blacklist := tb.engine.Rules()
			if changed := len(blacklist) == 1; changed != tt.allowed {
				t.Fatalf("blacklist = %v; allowed = %v", blacklist, tt.allowed)
			}
			if !tt.allowed && !strings.Contains(body(reply), "not a presence-router admin") {
				t.Errorf("refusal does not say why: %q", body(reply))
			}
			wantKey := "✅"
			if !tt.allowed {
				wantKey = "❌"
			}
			tb.waitFor(t, "reaction", func() bool { return len(tb.hs.events("m.reaction")) == 1 })
			rel := tb.hs.events("m.reaction")[0].Content["m.relates_to"].(map[string]any)
			if rel["key"] != wantKey || rel["event_id"] != "$cmd" {
				t.Errorf("reaction = %v, want %s on $cmd", rel, wantKey)
			}
		})
	}
}

func TestBot_RepliesAreNoticesInReplyToTheCommand(t *testing.T) {
	tb := newTestBot(t, "", nil)
	tb.deliver(t, "t", hsToken, message("$help", testMember, "!presence help"))
	reply := tb.replies(t, 1)[0]
	if reply.Content["msgtype"] != "m.notice" || reply.Content["format"] != "org.matrix.custom.html" {
		t.Errorf("reply is not an HTML notice: %v", reply.Content)
	}
	rel, _ := reply.Content["m.relates_to"].(map[string]any)
	inReply, _ := rel["m.in_reply_to"].(map[string]any)
	if inReply["event_id"] != "$help" {
		t.Errorf("reply does not reply to the command: %v", rel)
	}
}

func TestBot_IgnoresWhatIsNotACommand(t *testing.T) {
	tb := newTestBot(t, "", nil)
	other := message("$other", testAdmin, "!presence always-send add @x:test")
	other["room_id"] = "!elsewhere:test"
	own := message("$own", "@presence:test", "!presence always-send add @x:test")
	notice := message("$notice", testAdmin, "!presence always-send add @x:test")
	notice["content"].(map[string]any)["msgtype"] = "m.notice"
	edit := message("$edit", testAdmin, "!presence always-send add @x:test")
	edit["content"].(map[string]any)["m.relates_to"] = map[string]any{"rel_type": "m.replace", "event_id": "$old"}
	chat := message("$chat", testAdmin, "hello everyone")
	tb.deliver(t, "t", hsToken, other, own, notice, edit, chat, message("$status", testAdmin, "!presence status"))
	tb.replies(t, 1)
	time.Sleep(100 * time.Millisecond)
	// A room that is neither the control room nor a direct chat a local
	// user opened gets no answer (a direct chat's refusals:
	// TestDirect_WhatADirectChatRefuses).
	if replies := tb.hs.events("m.room.message"); len(replies) != 1 || replies[0].Room == "!elsewhere:test" || tb.engine.Version() != 0 {
		t.Fatalf("%d replies (%v) and version %d; only the status command should be answered", len(replies), replies, tb.engine.Version())
	}
}

func TestBot_RejectsBadTokens(t *testing.T) {
	tb := newTestBot(t, "", nil)
	for _, token := range []string{"", "wrong-token"} {
		if code := tb.deliver(t, "t", token, message("$x", testAdmin, "!presence always-send add @d:test")); code != http.StatusUnauthorized {
			t.Errorf("token %q answered %d, want 401", token, code)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if tb.engine.Version() != 0 {
		t.Fatal("an unauthenticated transaction changed the rules")
	}
}

func TestBot_DeclinesInvitesFromNonAdmins(t *testing.T) {
	tb := newTestBot(t, "", nil)
	stateKey := "@presence:test"
	invite := map[string]any{
		"event_id": "$inv", "room_id": "!other:test", "sender": testMember, "type": "m.room.member",
		"state_key": stateKey, "content": map[string]any{"membership": "invite"},
	}
	tb.deliver(t, "t", hsToken, invite)
	tb.waitFor(t, "leave", func() bool {
		tb.hs.lock.Lock()
		defer tb.hs.lock.Unlock()
		return len(tb.hs.leaves) == 1
	})
}

// An admin's invite makes the bot join again; while it is not joined, the
// connection metric says so as Connected does (it stayed 1 before).
func TestBot_InviteReconnectKeepsTheConnectedMetricTrue(t *testing.T) {
	tb := newTestBot(t, "", nil)
	if got := testutil.ToFloat64(tb.metrics.connected); got != 1 {
		t.Fatalf("connected metric %v after connecting, want 1", got)
	}
	tb.hs.set(func() { tb.hs.failJoin = true })
	tb.deliver(t, "t", hsToken, map[string]any{
		"event_id": "$inv", "room_id": string(testRoom), "sender": testAdmin, "type": "m.room.member",
		"state_key": "@presence:test", "content": map[string]any{"membership": "invite"},
	})
	tb.waitFor(t, "disconnected", func() bool { return !tb.Connected() })
	if got := testutil.ToFloat64(tb.metrics.connected); got != 0 {
		t.Errorf("connected metric %v while the bot cannot join, want 0", got)
	}
	tb.hs.set(func() { tb.hs.failJoin = false })
	signal(tb.wakeConnect)
	tb.waitFor(t, "connected again", tb.Connected)
	if got := testutil.ToFloat64(tb.metrics.connected); got != 1 {
		t.Errorf("connected metric %v after joining again, want 1", got)
	}
}

// While the homeserver does not answer, HomeserverAnswers (behind
// /_matrix/mau/ready), the connection metric and Problems say so; when it
// answers again, all three recover by themselves.
func TestBot_HomeserverDownShowsInHealth(t *testing.T) {
	tb := newTestBot(t, "", nil)
	tb.waitFor(t, "the homeserver answers", tb.HomeserverAnswers)
	setDown := func(down bool) {
		tb.hs.set(func() { tb.hs.down = down })
	}
	setDown(true)
	tb.waitFor(t, "the homeserver to be seen down", func() bool { return !tb.HomeserverAnswers() })
	if got := testutil.ToFloat64(tb.metrics.connected); got != 0 {
		t.Errorf("connected metric %v while the homeserver does not answer, want 0", got)
	}
	if problems := strings.Join(tb.Problems(), "\n"); !strings.Contains(problems, "does not answer") {
		t.Errorf("problems %q do not say the homeserver does not answer", problems)
	}
	if !tb.Connected() {
		t.Error("the bot left the control room: a homeserver outage is not a leave")
	}
	setDown(false)
	tb.waitFor(t, "the homeserver to be seen again", tb.HomeserverAnswers)
	tb.waitFor(t, "the problem to clear", func() bool { return len(tb.Problems()) == 0 })
	if got := testutil.ToFloat64(tb.metrics.connected); got != 1 {
		t.Errorf("connected metric %v after the homeserver answers again, want 1", got)
	}
}

func TestBot_LargeListStaysUnderEventLimit(t *testing.T) {
	tests := []struct {
		name   string
		format string
	}{
		// Long IDs fill the byte budget; short ones the line cap (each
		// line's HTML and its JSON escapes cost more than its text).
		{"long user IDs", "@user-with-a-long-name-%05d:some.homeserver.example"},
		{"short user IDs", "@u%05d:x.y"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTestBot(t, "", nil)
			m := rules.Mutation{Sender: testAdmin}
			for i := 0; i < 10000; i++ {
				m.Entries = append(m.Entries, rules.Entry{List: rules.AlwaysSend, UserID: id.UserID(fmt.Sprintf(tt.format, i)), Action: rules.Add})
			}
			res, err := tb.store.Apply(context.Background(), m)
			if err != nil {
				t.Fatal(err)
			}
			tb.engine.Apply(res.Change.Update())
			tb.deliver(t, "t", hsToken, message("$list", testAdmin, "!presence always-send list"))
			reply := tb.replies(t, 1)[0]
			if reply.Size >= 65536 {
				t.Fatalf("list reply is %d bytes, over Matrix's limit", reply.Size)
			}
			if !strings.Contains(body(reply), "10000 users") || !strings.Contains(body(reply), "more") {
				t.Errorf("list reply does not give the count and say more exist: %.200q", body(reply))
			}
		})
	}
}

func TestBot_UnsentReplyIsRetried(t *testing.T) {
	tb := newTestBot(t, "", nil)
	tb.hs.set(func() { tb.hs.failSend = true })
	tb.deliver(t, "t", hsToken, message("$cmd", testAdmin, "!presence always-send add @dash:test"))
	tb.waitFor(t, "the change", func() bool { return tb.engine.Version() == 1 })
	tb.hs.set(func() { tb.hs.failSend = false })
	signal(tb.wakeWorker)
	if r := tb.replies(t, 1); !strings.Contains(body(r[0]), "Added") {
		t.Fatalf("retried reply = %q", body(r[0]))
	}
}

// Edits and redactions of a command change nothing; an edit whose new
// content is a command is answered once, saying edits are not applied. A
// command sent as a reply (with the legacy fallback) is applied; one sent as
// an emote is answered, not applied.
func TestBot_EditsRepliesAndEmotesOfCommands(t *testing.T) {
	tb := newTestBot(t, "", nil)
	tb.deliver(t, "t1", hsToken, message("$cmd", testAdmin, "!presence always-send add @x:test"))
	tb.replies(t, 1)
	if tb.engine.Version() != 1 {
		t.Fatalf("version %d after the command, want 1", tb.engine.Version())
	}
	edit := func(eventID, body, newBody string) map[string]any {
		m := message(eventID, testAdmin, body)
		content := m["content"].(map[string]any)
		content["m.new_content"] = map[string]any{"msgtype": "m.text", "body": newBody}
		content["m.relates_to"] = map[string]any{"rel_type": "m.replace", "event_id": "$cmd"}
		return m
	}
	redaction := map[string]any{
		"event_id": "$redact", "room_id": testRoom, "sender": testAdmin, "type": "m.room.redaction",
		"origin_server_ts": 2, "redacts": "$cmd", "content": map[string]any{"redacts": "$cmd", "reason": "oops"},
	}
	// The command itself, redelivered redacted (its content stripped).
	redacted := map[string]any{
		"event_id": "$cmd", "room_id": testRoom, "sender": testAdmin, "type": "m.room.message",
		"origin_server_ts": 1, "content": map[string]any{}, "unsigned": map[string]any{"redacted_because": redaction},
	}
	emote := message("$emote", testAdmin, "!presence always-send remove @x:test")
	emote["content"].(map[string]any)["msgtype"] = "m.emote"
	reply := message("$reply", testAdmin, "> <@bob:test> what is going on?\n> second line\n\n!presence always-send add @y:test")
	reply["content"].(map[string]any)["m.relates_to"] = map[string]any{"m.in_reply_to": map[string]any{"event_id": "$question"}}
	tests := []struct {
		name      string
		events    []map[string]any
		wantReply string // "" for no reply
		wantRules []id.UserID
	}{
		{"an edit whose body is a command", []map[string]any{edit("$edit1", "!presence always-send remove @x:test", "!presence always-send remove @x:test")}, "Edits are not applied", []id.UserID{"@x:test"}},
		{"an edit with the usual star", []map[string]any{edit("$edit2", "* !presence always-send remove @x:test", "!presence always-send remove @x:test")}, "Edits are not applied", []id.UserID{"@x:test"}},
		{"an edit that is no command", []map[string]any{edit("$edit3", "* hello", "hello")}, "", []id.UserID{"@x:test"}},
		{"a redaction of the command", []map[string]any{redaction}, "", []id.UserID{"@x:test"}},
		{"the command redelivered after redaction", []map[string]any{redacted}, "", []id.UserID{"@x:test"}},
		{"a command as an emote", []map[string]any{emote}, "emotes (/me) are not applied", []id.UserID{"@x:test"}},
		{"a command in a reply with the fallback", []map[string]any{reply}, "Added", []id.UserID{"@x:test", "@y:test"}},
	}
	replies := 1
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code := tb.deliver(t, fmt.Sprintf("t%d", i+2), hsToken, tt.events...); code != http.StatusOK {
				t.Fatalf("transaction answered %d", code)
			}
			if tt.wantReply != "" {
				replies++
			}
			// A later command proves the earlier events were processed.
			status := fmt.Sprintf("$status%d", i)
			tb.deliver(t, fmt.Sprintf("s%d", i), hsToken, message(status, testAdmin, "!presence status"))
			replies++
			got := tb.replies(t, replies)
			if n := len(got); n != replies {
				t.Fatalf("%d replies, want %d", n, replies)
			}
			if tt.wantReply != "" && !strings.Contains(body(got[replies-2]), tt.wantReply) {
				t.Errorf("reply %q, want it to say %q", body(got[replies-2]), tt.wantReply)
			}
			_, alwaysSend, _ := tb.engine.Rules()
			if !slices.Equal(alwaysSend, tt.wantRules) {
				t.Errorf("always-send %v after %s, want %v", alwaysSend, tt.name, tt.wantRules)
			}
		})
	}
}

// A command Synapse never delivered is found in the control room's timeline
// and applied once; commands from before the service started are not.
// A missed command behind more than a page of newer events is still found,
// and each catch-up reads only what is new since the previous one.
func TestBot_CatchUpPagesBackToThePreviousRead(t *testing.T) {
	old := []any{catchUpInterval, catchUpGrace, catchUpPage}
	catchUpInterval, catchUpGrace, catchUpPage = 100*time.Millisecond, 0, 10
	t.Cleanup(func() {
		catchUpInterval, catchUpGrace, catchUpPage = old[0].(time.Duration), old[1].(time.Duration), old[2].(int)
	})
	tb := newTestBot(t, "", nil)
	tb.deliver(t, "t1", hsToken, message("$delivered", testAdmin, "!presence always-send add @one:test"))
	tb.replies(t, 1)
	tb.waitFor(t, "a first catch-up", func() bool {
		tb.hs.lock.Lock()
		defer tb.hs.lock.Unlock()
		return tb.hs.pages > 0
	})
	// Synapse did not deliver a command, and 35 chat messages followed it.
	now := time.Now()
	timeline := make([]map[string]any, 0, 40)
	for i := range 35 {
		chat := message(fmt.Sprintf("$chat%d", i), testAdmin, "hello")
		chat["origin_server_ts"] = now.Add(time.Duration(35-i) * time.Millisecond).UnixMilli()
		timeline = append(timeline, chat)
	}
	missed := message("$missed", testAdmin, "!presence always-send add @two:test")
	missed["origin_server_ts"] = now.UnixMilli() // after the first catch-up
	timeline = append(timeline, missed)
	tb.hs.set(func() { tb.hs.timeline = timeline })
	tb.waitFor(t, "the missed command", func() bool { return tb.engine.Version() == 2 })

	// Later catch-ups read one page each: nothing before the last read.
	tb.hs.set(func() { tb.hs.pages = 0 })
	time.Sleep(5 * catchUpInterval)
	tb.hs.lock.Lock()
	pages := tb.hs.pages
	tb.hs.lock.Unlock()
	if pages < 2 || pages > 6 {
		t.Errorf("%d pages read in %d catch-ups, want one each", pages, 5)
	}
	if v := tb.engine.Version(); v != 2 {
		t.Errorf("version %d, want 2", v)
	}
}

// After a restart, catch-up begins before the last event the previous run
// received, not at what the new run has received since.
func TestBot_CatchUpAfterRestartCoversThePreviousRun(t *testing.T) {
	old := []time.Duration{catchUpInterval, catchUpGrace, catchUpRestartSlack}
	catchUpInterval, catchUpGrace, catchUpRestartSlack = 100*time.Millisecond, 0, 0
	t.Cleanup(func() { catchUpInterval, catchUpGrace, catchUpRestartSlack = old[0], old[1], old[2] })
	previous := newTestBot(t, "", nil)
	previous.deliver(t, "t1", hsToken, message("$before", testAdmin, "!presence always-send add @one:test"))
	previous.replies(t, 1)
	// A command sent just as the previous run stopped was never delivered.
	missed := message("$missed", testAdmin, "!presence always-send add @two:test")
	missed["origin_server_ts"] = time.Now().UnixMilli()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	previous.Stop(ctx)
	cancel()
	_ = previous.store.Close()
	time.Sleep(500 * time.Millisecond) // down for a while

	hs := newFakeHomeserver(t)
	hs.timeline, hs.failMessages = []map[string]any{missed}, true
	tb := newTestBotWith(t, previous.dbPath, nil, hs)
	// The new run receives a command before its first catch-up succeeds.
	tb.deliver(t, "t2", hsToken, message("$after", testAdmin, "!presence always-send add @three:test"))
	tb.waitFor(t, "the command after the restart", func() bool { return tb.engine.Version() == 2 })
	hs.set(func() { hs.failMessages = false })
	tb.waitFor(t, "the command missed before the restart", func() bool { return tb.engine.Version() == 3 })
	if _, alwaysSend, _ := tb.engine.Rules(); !slices.Equal(alwaysSend, []id.UserID{"@one:test", "@three:test", "@two:test"}) {
		t.Errorf("always-send %v", alwaysSend)
	}
}

// Catch-up never applies a command sent before the bot joined the control
// room (the timeline's order says so, whatever the clocks), nor one sent
// before the control room was pinned where it is now.
func TestBot_CatchUpSkipsCommandsFromBeforeTheBotWasThere(t *testing.T) {
	oldInterval, oldGrace := catchUpInterval, catchUpGrace
	catchUpInterval, catchUpGrace = 50*time.Millisecond, 0
	t.Cleanup(func() { catchUpInterval, catchUpGrace = oldInterval, oldGrace })
	at := func(m map[string]any, ts time.Time) map[string]any {
		m["origin_server_ts"] = ts.UnixMilli()
		return m
	}
	t.Run("before the bot joined", func(t *testing.T) {
		tb := newTestBot(t, "", nil)
		now := time.Now()
		join := map[string]any{
			"event_id": "$join", "room_id": testRoom, "sender": "@presence:test", "type": "m.room.member",
			"state_key": "@presence:test", "origin_server_ts": now.Add(500 * time.Millisecond).UnixMilli(),
			"content": map[string]any{"membership": "join"}, "unsigned": map[string]any{"prev_content": map[string]any{"membership": "invite"}},
		}
		tb.hs.lock.Lock()
		tb.hs.timeline = []map[string]any{ // newest first
			at(message("$after", testAdmin, "!presence always-send add @after:test"), now.Add(time.Second)),
			join,
			at(message("$before", testAdmin, "!presence always-send add @before:test"), now.Add(200*time.Millisecond)),
		}
		tb.hs.lock.Unlock()
		tb.waitFor(t, "the command after the join", func() bool { return tb.engine.Version() == 1 })
		time.Sleep(5 * catchUpInterval)
		if _, alwaysSend, _ := tb.engine.Rules(); !slices.Equal(alwaysSend, []id.UserID{"@after:test"}) {
			t.Errorf("always-send %v, want only the command sent after the bot joined", alwaysSend)
		}
	})
	t.Run("before the pin moved", func(t *testing.T) {
		previous := newTestBot(t, "", nil)
		previous.deliver(t, "t1", hsToken, message("$first", testAdmin, "!presence always-send add @one:test"))
		previous.replies(t, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		previous.Stop(ctx)
		cancel()
		_ = previous.store.Close()
		time.Sleep(1500 * time.Millisecond)
		// The operator points bot.control_room at another room's ID.
		const other = "!other:test"
		hs := newFakeHomeserver(t)
		sentBeforePin := at(message("$early", testAdmin, "!presence always-send add @early:test"), time.Now().Add(-500*time.Millisecond))
		sentBeforePin["room_id"] = other
		hs.timeline = []map[string]any{sentBeforePin}
		tb := newTestBotIn(t, previous.dbPath, nil, hs, other)
		hs.lock.Lock()
		pagesBefore := hs.pages
		hs.lock.Unlock()
		tb.waitFor(t, "two catch-ups", func() bool {
			hs.lock.Lock()
			defer hs.lock.Unlock()
			return hs.pages >= pagesBefore+2
		})
		if v := tb.engine.Version(); v != 1 {
			t.Errorf("version %d, want 1: a command sent in the new room before the pin moved there was applied", v)
		}
	})
}

func TestBot_CatchUpRecoversUndeliveredCommands(t *testing.T) {
	oldInterval, oldGrace := catchUpInterval, catchUpGrace
	catchUpInterval, catchUpGrace = 50*time.Millisecond, 0
	t.Cleanup(func() { catchUpInterval, catchUpGrace = oldInterval, oldGrace })
	tb := newTestBot(t, "", nil)
	at := func(m map[string]any, ts time.Time) map[string]any {
		m["origin_server_ts"] = ts.UnixMilli()
		return m
	}
	tb.deliver(t, "t1", hsToken, at(message("$delivered", testAdmin, "!presence always-send add @one:test"), time.Now()))
	tb.replies(t, 1)
	missed := at(message("$missed", testAdmin, "!presence always-send add @two:test"), time.Now().Add(time.Second))
	tb.hs.lock.Lock()
	tb.hs.timeline = []map[string]any{
		missed,
		at(message("$delivered", testAdmin, "!presence always-send add @one:test"), time.Now()),
		at(message("$ancient", testAdmin, "!presence always-send add @old:test"), time.Now().Add(-time.Hour)),
		at(message("$chat", testAdmin, "hello"), time.Now()),
	}
	tb.hs.lock.Unlock()
	tb.waitFor(t, "the missed command", func() bool { return tb.engine.Version() == 2 })
	// Synapse delivering it after all changes nothing.
	tb.deliver(t, "t2", hsToken, missed)
	time.Sleep(200 * time.Millisecond)
	_, alwaysSend, _ := tb.engine.Rules()
	if tb.engine.Version() != 2 || !slices.Equal(alwaysSend, []id.UserID{"@one:test", "@two:test"}) {
		t.Errorf("version %d, always-send %v: want the delivered and the missed command, once each, and not the ancient one", tb.engine.Version(), alwaysSend)
	}
	if n := len(tb.hs.events("m.room.message")); n != 2 {
		t.Errorf("%d replies, want 2", n)
	}
}
