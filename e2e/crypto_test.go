//go:build e2e

package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/crypto/olm"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/e2e/harness"
)

// cryptoUser is a Matrix client with working end-to-end encryption
// (mautrix-go's cryptohelper, pure-Go Olm): one device of a user, syncing
// in the background, decrypting what it receives.
type cryptoUser struct {
	cli    *mautrix.Client
	helper *cryptohelper.CryptoHelper
	lock   sync.Mutex
	events []*event.Event // decrypted (or plain) messages and reactions
	cancel context.CancelFunc
	done   chan struct{}
}

// newCryptoUser sets up encryption for cli's device and starts its /sync;
// with crossSign, the user's cross-signing keys are made and the device
// signed with them (as a client does when verifying its first session).
func newCryptoUser(t *testing.T, ctx context.Context, cli *mautrix.Client, crossSign bool) *cryptoUser {
	t.Helper()
	helper, err := cryptohelper.NewCryptoHelper(cli, []byte("pickle-"+cli.DeviceID.String()), filepath.Join(t.TempDir(), "crypto.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err = helper.Init(ctx); err != nil {
		t.Fatal(err)
	}
	cli.Crypto = helper
	if crossSign {
		if _, err = helper.Machine().GenerateAndVerifyWithRecoveryKey(ctx); err != nil {
			t.Fatalf("failed to cross-sign %s's device: %v", cli.UserID, err)
		}
	}
	u := &cryptoUser{cli: cli, helper: helper, done: make(chan struct{})}
	syncer := cli.Syncer.(*mautrix.DefaultSyncer)
	record := func(_ context.Context, evt *event.Event) {
		u.lock.Lock()
		defer u.lock.Unlock()
		u.events = append(u.events, evt)
	}
	syncer.OnEventType(event.EventMessage, record)
	syncer.OnEventType(event.EventReaction, record)
	loopCtx, cancel := context.WithCancel(context.Background())
	u.cancel = cancel
	go func() {
		defer close(u.done)
		_ = cli.SyncWithContext(loopCtx)
	}()
	t.Cleanup(func() { u.cancel(); <-u.done; _ = helper.Close() })
	return u
}

// waitState waits until this client's state store knows cond of room.
func (u *cryptoUser) waitState(t *testing.T, what string, cond func(ctx context.Context) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond(context.Background()) {
		if time.Now().After(deadline) {
			t.Fatalf("%s's client never saw %s", u.cli.UserID, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// reply is the bot's answer to eventID as this client decrypted it.
type decryptedReply struct {
	Body, Reaction       string
	Encrypted, Reacted   bool
	ReactionWasEncrypted bool
}

// waitReply waits for the bot's reply to eventID and its reaction.
func (u *cryptoUser) waitReply(t *testing.T, bot id.UserID, eventID id.EventID) decryptedReply {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		var r decryptedReply
		u.lock.Lock()
		for _, evt := range u.events {
			if evt.Sender != bot {
				continue
			}
			encrypted := evt.Mautrix.EventSource&event.SourceDecrypted != 0
			switch evt.Type {
			case event.EventMessage:
				msg := evt.Content.AsMessage()
				if msg.RelatesTo != nil && msg.RelatesTo.GetReplyTo() == eventID {
					r.Body, r.Encrypted = msg.Body, encrypted
				}
			case event.EventReaction:
				if rel := evt.Content.AsReaction().RelatesTo; rel.EventID == eventID {
					r.Reaction, r.Reacted, r.ReactionWasEncrypted = rel.Key, true, encrypted
				}
			}
		}
		u.lock.Unlock()
		if r.Body != "" && r.Reacted {
			return r
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no reply from the bot to %s within 60 s", eventID)
	return decryptedReply{}
}

// send sends a command, encrypted (the room is), and returns its event ID.
func (u *cryptoUser) send(t *testing.T, room id.RoomID, text string) id.EventID {
	t.Helper()
	resp, err := u.cli.SendText(context.Background(), room, text)
	if err != nil {
		t.Fatalf("send %q: %v", text, err)
	}
	return resp.EventID
}

// createEncryptedControlRoom makes the control room as Element makes it
// (m.room.encryption in the initial state), as admin, and returns it.
func (e *env) createEncryptedControlRoom(admin *cryptoUser) id.RoomID {
	e.t.Helper()
	resp, err := admin.cli.CreateRoom(e.ctx, &mautrix.ReqCreateRoom{
		Preset: "private_chat", RoomAliasName: "control", Name: "presence-router control",
		InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.room = resp.RoomID
	return resp.RoomID
}

// TestEncryptedControlRoom: the admin is an encrypting client, and the
// control room is made the way Element makes it (m.room.encryption in the
// initial state). Commands are decrypted and applied, replies and
// reactions come back encrypted, and the trust policy holds.
func TestEncryptedControlRoom(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { encryptedRoomScenario(t, false) })
	// The crypto and state stores live in presence-router's database.
	t.Run("postgres", func(t *testing.T) { encryptedRoomScenario(t, true) })
}

func encryptedRoomScenario(t *testing.T, onPostgres bool) {
	opts := harness.Options{Admins: []string{"admin"}, Encryption: true}
	if onPostgres {
		opts.Postgres = startPostgres(t)
	}
	e := newEnvWith(t, opts)
	if err := e.stack.StartSynapse(e.ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.stack.StartRouter(e.ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"admin", "alice", "dash"} {
		cli, err := e.stack.User(e.ctx, name, "password-"+name)
		if err != nil {
			t.Fatal(err)
		}
		e.users[name] = cli
	}
	var err error
	for _, name := range []string{"dash"} {
		if e.syncs[name], err = harness.NewSyncer(e.ctx, e.users[name]); err != nil {
			t.Fatal(err)
		}
	}
	bot := e.stack.BotID()
	admin := newCryptoUser(t, e.ctx, e.users["admin"], true)
	room := e.createEncryptedControlRoom(admin)
	e.invite(admin.cli, room, bot)
	e.waitBotJoined()
	// The recovery key went to a file of its own, never to the log.
	if info, err := os.Stat(e.stack.Path("presence-router-recovery-key.txt")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("the recovery key's file: %v %v; want it written, mode 0600", info, err)
	}
	if log, _ := os.ReadFile(e.stack.Path("presence-router.log")); strings.Contains(string(log), "recovery_key") {
		t.Error("presence-router's log holds the recovery key")
	}
	states := admin.cli.StateStore
	admin.waitState(t, "the room encrypted and the bot joined", func(ctx context.Context) bool {
		encrypted, _ := states.IsEncrypted(ctx, room)
		member, _ := states.GetMember(ctx, room, bot)
		return encrypted && member.Membership == event.MembershipJoin
	})
	// A plain client with the admin's own token: it sends what it is given.
	plainAdmin, err := mautrix.NewClient(e.stack.SynapseURL, admin.cli.UserID, admin.cli.AccessToken)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("an encrypted command is applied, answered encrypted, and routes presence", func(t *testing.T) {
		evt := admin.send(t, room, "!presence always-send add @dash:localhost Support dashboard")
		r := admin.waitReply(t, bot, evt)
		if r.Reaction != "✅" || !strings.Contains(r.Body, "Added") {
			t.Fatalf("reply = %+v", r)
		}
		if !r.Encrypted || !r.ReactionWasEncrypted {
			t.Errorf("the reply (encrypted %v) or the reaction (encrypted %v) was sent in the clear", r.Encrypted, r.ReactionWasEncrypted)
		}
		e.setPresence("alice", "online", "alice in an encrypted world")
		if _, ok := e.syncs["dash"].WaitPresence(uid("alice"), "alice in an encrypted world", 10*time.Second); !ok {
			t.Fatalf("dash did not receive alice's presence; got %+v", e.syncs["dash"].Presence())
		}
		if status := admin.waitReply(t, bot, admin.send(t, room, "!presence status")); !strings.Contains(status.Body, "always-send: 1 user") {
			t.Errorf("status = %q", status.Body)
		}
	})

	if !onPostgres {
		t.Run("a member's undecryptable messages stall no one and get no reply", func(t *testing.T) { undecryptableMember(t, e, admin, room) })
	}

	t.Run("an unencrypted command in the encrypted room is refused", func(t *testing.T) {
		sent, err := plainAdmin.SendText(e.ctx, room, "!presence always-send add @plain:localhost")
		if err != nil {
			t.Fatal(err)
		}
		r := admin.waitReply(t, bot, sent.EventID)
		if r.Reaction != "❌" || !strings.Contains(r.Body, "this command was not") {
			t.Fatalf("reply = %+v", r)
		}
		if always, _ := e.rules(); strings.Contains(strings.Join(always, " "), "@plain:localhost") {
			t.Fatal("the unencrypted command changed the list")
		}
	})

	// A second device of the admin's, never verified.
	login, err := plainAdmin.Login(e.ctx, &mautrix.ReqLogin{
		Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "admin"}, Password: "password-admin",
	})
	if err != nil {
		t.Fatal(err)
	}
	second, err := mautrix.NewClient(e.stack.SynapseURL, login.UserID, login.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	second.DeviceID = login.DeviceID
	unverified := newCryptoUser(t, e.ctx, second, false)
	unverified.waitState(t, "the encrypted room", func(ctx context.Context) bool {
		encrypted, _ := unverified.cli.StateStore.IsEncrypted(ctx, room)
		return encrypted
	})

	t.Run("a command from an unverified device is refused under the default policy", func(t *testing.T) {
		r := admin.waitReply(t, bot, unverified.send(t, room, "!presence always-send add @unverified:localhost --force"))
		if r.Reaction != "❌" || !strings.Contains(r.Body, "verification_level") {
			t.Fatalf("reply = %+v", r)
		}
		if always, _ := e.rules(); strings.Contains(strings.Join(always, " "), "@unverified:localhost") {
			t.Fatal("the unverified device's command changed the list")
		}
	})

	t.Run("with verification_level unverified the same device is obeyed", func(t *testing.T) {
		restartWithLevel(t, e, "unverified")
		r := admin.waitReply(t, bot, unverified.send(t, room, "!presence always-send add @unverified:localhost --force"))
		if r.Reaction != "✅" {
			t.Fatalf("reply = %+v", r)
		}
	})

	t.Run("verification_level cross-signed-verified or verified, which the bot can never see met, is refused at start", func(t *testing.T) {
		for _, level := range []string{"cross-signed-verified", "verified"} {
			if err := e.stack.SetVerificationLevel(level); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
			out, err := exec.CommandContext(ctx, e.stack.Opts.Binary, "-c", e.stack.Path("config.yaml")).CombinedOutput()
			cancel()
			if err == nil || !strings.Contains(string(out), "encryption.verification_level") || !strings.Contains(string(out), "can never be met") {
				t.Errorf("presence-router with verification_level %s: %v\n%s", level, err, out)
			}
		}
		restartWithLevel(t, e, "cross-signed-tofu")
	})

	t.Run("kill -9 during a stream of encrypted commands applies each exactly once", func(t *testing.T) {
		encryptedCrashScenario(t, e, admin, room, 60)
	})

	t.Run("a command whose keys never arrive is answered could not decrypt after the documented wait", func(t *testing.T) {
		if onPostgres {
			t.Skip("waits 30 s; once, on SQLite, is enough")
		}
		// A well-formed message of a Megolm session whose keys nobody shares.
		session, err := olm.NewOutboundGroupSession()
		if err != nil {
			t.Fatal(err)
		}
		ciphertext, err := session.Encrypt([]byte(`{"type":"m.room.message","room_id":"` + string(room) + `","content":{"msgtype":"m.text","body":"!presence status"}}`))
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		sent, err := plainAdmin.SendMessageEvent(e.ctx, room, event.EventEncrypted, map[string]any{
			"algorithm": id.AlgorithmMegolmV1, "ciphertext": string(ciphertext), "device_id": admin.cli.DeviceID,
			"sender_key": admin.helper.Machine().OwnIdentity().IdentityKey, "session_id": session.ID(),
		})
		if err != nil {
			t.Fatal(err)
		}
		r := admin.waitReply(t, bot, sent.EventID)
		waited := time.Since(start)
		if r.Reaction != "❌" || !strings.Contains(r.Body, "Could not decrypt") {
			t.Fatalf("reply = %+v", r)
		}
		if waited < 30*time.Second {
			t.Errorf("answered after %s, before the documented 30 s wait", waited.Round(time.Millisecond))
		}
		t.Logf("answered %q after %s", r.Body, waited.Round(time.Millisecond))
	})
}

// restartWithLevel restarts presence-router with another
// encryption.verification_level.
func restartWithLevel(t *testing.T, e *env, level string) {
	t.Helper()
	e.stack.StopRouter()
	if err := e.stack.SetVerificationLevel(level); err != nil {
		t.Fatal(err)
	}
	if err := e.stack.StartRouter(e.ctx); err != nil {
		t.Fatal(err)
	}
}

// encryptedCrashScenario sends n encrypted commands while presence-router
// is killed with SIGKILL three times, then checks that each was applied
// exactly once and answered.
func encryptedCrashScenario(t *testing.T, e *env, admin *cryptoUser, room id.RoomID, n int) {
	eventIDs := sendWhileKilling(t, e, n, 20*time.Millisecond, func(i int) (id.EventID, error) {
		resp, err := admin.cli.SendText(context.Background(), room, fmt.Sprintf("!presence always-send add @enc%03d:localhost --force", i))
		if err != nil {
			return "", err
		}
		return resp.EventID, nil
	})
	for _, evt := range eventIDs[len(eventIDs)-3:] {
		if r := admin.waitReply(t, e.stack.BotID(), evt); r.Reaction != "✅" {
			t.Errorf("command %s: reply %+v", evt, r)
		}
	}
	db, err := e.stack.RouterDB()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	deadline := time.Now().Add(90 * time.Second)
	for {
		missing := 0
		for i, evt := range eventIDs {
			var applied int
			if err := db.QueryRow(`SELECT COUNT(*) FROM change WHERE event_id = $1`, string(evt)).Scan(&applied); err != nil && err != sql.ErrNoRows {
				t.Fatal(err)
			}
			if applied > 1 {
				t.Fatalf("encrypted command %d (%s) applied %d times", i, evt, applied)
			}
			if applied == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d encrypted commands were never applied", missing, n)
		}
		time.Sleep(time.Second)
	}
}

// undecryptableMember: eve, a member who may not command, sends three
// well-formed Megolm messages of sessions she shares with nobody; the
// admin's encrypted command right after them is answered within 5 s, and
// eve's messages get no reply.
func undecryptableMember(t *testing.T, e *env, admin *cryptoUser, room id.RoomID) {
	cli, err := e.stack.User(e.ctx, "eve", "password-eve")
	if err != nil {
		t.Fatal(err)
	}
	e.invite(admin.cli, room, cli.UserID)
	if _, err = cli.JoinRoom(e.ctx, string(room), nil); err != nil {
		t.Fatal(err)
	}
	eve := newCryptoUser(t, e.ctx, cli, true)
	mach := eve.helper.Machine()
	var sent []id.EventID
	for i := range 3 {
		session, err := crypto.NewOutboundGroupSession(room, &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		session.Shared = true // as an attacker's client says: its keys went to no one
		if err = mach.CryptoStore.AddOutboundGroupSession(e.ctx, session); err != nil {
			t.Fatal(err)
		}
		content, err := mach.EncryptMegolmEvent(e.ctx, room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: fmt.Sprintf("!presence status %d", i)})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := cli.SendMessageEvent(e.ctx, room, event.EventEncrypted, content)
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, resp.EventID)
	}
	began := time.Now()
	r := admin.waitReply(t, e.stack.BotID(), admin.send(t, room, "!presence status"))
	took := time.Since(began)
	t.Logf("the admin's command after 3 undecryptable messages was answered in %s", took.Round(time.Millisecond))
	if took > 5*time.Second || r.Reaction != "✅" {
		t.Errorf("the admin's command was answered %+v after %s; want ✅ within 5 s", r, took)
	}
	time.Sleep(2 * time.Second) // a reply to eve's messages would have come by now
	admin.lock.Lock()
	defer admin.lock.Unlock()
	for _, evt := range admin.events {
		if evt.Sender != e.stack.BotID() || evt.Type != event.EventMessage {
			continue
		}
		if rel := evt.Content.AsMessage().RelatesTo; rel != nil && slices.Contains(sent, rel.GetReplyTo()) {
			t.Errorf("the bot replied to a member's undecryptable message: %q", evt.Content.AsMessage().Body)
		}
	}
}
