//go:build e2e

package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"

	"github.com/presence-router/presence-router/e2e/harness"
)

// resetIdentity makes new cross-signing keys for u's user and signs u's
// device with them, as "reset your identity" in Element does.
func resetIdentity(t *testing.T, ctx context.Context, u *cryptoUser, password string) {
	t.Helper()
	mach := u.helper.Machine()
	if _, _, err := mach.GenerateAndUploadCrossSigningKeysWithPassword(ctx, password, ""); err != nil {
		t.Fatalf("failed to reset %s's identity: %v", u.cli.UserID, err)
	}
	if err := mach.SignOwnDevice(ctx, mach.OwnIdentity()); err != nil {
		t.Fatal(err)
	}
	if err := mach.SignOwnMasterKey(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestIdentityReset: under the default verification level
// (cross-signed-tofu), an admin who resets their identity is refused with a
// reply that says how to accept the new one; another admin's
// `identity accept` lets them command again, and so does the command line's
// --accept-identity (for the last admin) after a second reset. Both are in
// history.
func TestIdentityReset(t *testing.T) {
	e := newEnvWith(t, harness.Options{Admins: []string{"admin", "admin2"}, Encryption: true})
	if err := e.stack.StartSynapse(e.ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.stack.StartRouter(e.ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"admin", "admin2"} {
		cli, err := e.stack.User(e.ctx, name, "password-"+name)
		if err != nil {
			t.Fatal(err)
		}
		e.users[name] = cli
	}
	bot := e.stack.BotID()
	admin := newCryptoUser(t, e.ctx, e.users["admin"], true)
	admin2 := newCryptoUser(t, e.ctx, e.users["admin2"], true)
	room := e.createEncryptedControlRoom(admin)
	e.invite(admin.cli, room, bot)
	e.invite(admin.cli, room, admin2.cli.UserID)
	if _, err := admin2.cli.JoinRoom(e.ctx, string(room), nil); err != nil {
		t.Fatal(err)
	}
	e.waitBotJoined()
	for _, u := range []*cryptoUser{admin, admin2} {
		u.waitState(t, "the room encrypted and the bot joined", func(ctx context.Context) bool {
			encrypted, _ := u.cli.StateStore.IsEncrypted(ctx, room)
			member, _ := u.cli.StateStore.GetMember(ctx, room, bot)
			return encrypted && member.Membership == event.MembershipJoin
		})
		if r := u.waitReply(t, bot, u.send(t, room, "!presence status")); r.Reaction != "✅" {
			t.Fatalf("%s before any reset: %+v", u.cli.UserID, r)
		}
	}
	// waitRefused sends status as admin until the bot, having seen the new
	// keys, refuses it; it returns the refusal.
	waitRefused := func() string {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			r := admin.waitReply(t, bot, admin.send(t, room, "!presence status"))
			if r.Reaction == "❌" {
				return r.Body
			}
			time.Sleep(time.Second)
		}
		t.Fatal("the admin's commands were still obeyed 60 s after they reset their identity")
		return ""
	}

	resetIdentity(t, e.ctx, admin, "password-admin")
	refusal := waitRefused()
	t.Logf("after the reset: %s", refusal)
	if !strings.Contains(refusal, "identity changed") || !strings.Contains(refusal, "identity accept @admin:localhost") || !strings.Contains(refusal, "--accept-identity") {
		t.Errorf("the refusal does not say how to accept the new identity: %q", refusal)
	}
	if r := admin2.waitReply(t, bot, admin2.send(t, room, "!presence identity accept @admin:localhost reset on a new laptop")); r.Reaction != "✅" || !strings.Contains(r.Body, "Accepted") {
		t.Fatalf("identity accept by the other admin: %+v", r)
	}
	if r := admin.waitReply(t, bot, admin.send(t, room, "!presence always-send add @dash:localhost --force")); r.Reaction != "✅" {
		t.Fatalf("after identity accept, the admin's command: %+v", r)
	}

	// The last admin standing: the command line.
	resetIdentity(t, e.ctx, admin, "password-admin")
	waitRefused()
	out, err := exec.CommandContext(e.ctx, e.stack.Opts.Binary, "-c", e.stack.Path("config.yaml"), "--accept-identity", "@admin:localhost").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Accepted @admin:localhost's new identity") {
		t.Fatalf("--accept-identity: %v\n%s", err, out)
	}
	if r := admin.waitReply(t, bot, admin.send(t, room, "!presence always-send add @eve:localhost --force")); r.Reaction != "✅" {
		t.Fatalf("after --accept-identity, the admin's command: %+v", r)
	}
	h := admin.waitReply(t, bot, admin.send(t, room, "!presence history 5"))
	if strings.Count(h.Body, "accepted the new identity of") != 2 {
		t.Errorf("history does not show both acceptances: %q", h.Body)
	}
}
