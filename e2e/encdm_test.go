//go:build e2e

package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/e2e/harness"
)

// TestEncryptedDirectChat: with encryption.enabled, a user hides and
// unhides their presence in a direct chat that their encrypting client
// made encrypted, as Element does by default; the replies come back
// encrypted.
func TestEncryptedDirectChat(t *testing.T) {
	e := newEnvWith(t, harness.Options{Admins: []string{"admin"}, Encryption: true})
	if err := e.stack.StartSynapse(e.ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.stack.StartRouter(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.populate() // the (plain) control room: commands wait until the bot is in it
	// A device of alice's own, with encryption.
	cli, err := e.stack.User(e.ctx, "alice", "password-alice")
	if err != nil {
		t.Fatal(err)
	}
	alice := newCryptoUser(t, e.ctx, cli, false)
	bot := e.stack.BotID()
	resp, err := cli.CreateRoom(e.ctx, &mautrix.ReqCreateRoom{
		Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{bot},
		InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	room := resp.RoomID
	alice.waitState(t, "the direct chat encrypted and the bot joined", func(ctx context.Context) bool {
		encrypted, _ := cli.StateStore.IsEncrypted(ctx, room)
		member, _ := cli.StateStore.GetMember(ctx, room, bot)
		return encrypted && member.Membership == event.MembershipJoin
	})
	time.Sleep(time.Second) // the bot's device keys reach alice's client
	hide := alice.waitReply(t, bot, alice.send(t, room, "!presence hide"))
	if hide.Reaction != "✅" || !strings.Contains(hide.Body, "no longer routed") || !hide.Encrypted {
		t.Fatalf("hide in an encrypted direct chat: %+v", hide)
	}
	if _, blacklist := e.rules(); !slices.Contains(blacklist, "@alice:localhost") {
		t.Fatalf("after hide, the blacklist is %v", blacklist)
	}
	unhide := alice.waitReply(t, bot, alice.send(t, room, "!presence unhide"))
	if unhide.Reaction != "✅" || !strings.Contains(unhide.Body, "routed again") || !unhide.Encrypted {
		t.Fatalf("unhide in an encrypted direct chat: %+v", unhide)
	}
	if _, blacklist := e.rules(); len(blacklist) != 0 {
		t.Fatalf("after unhide, the blacklist is %v", blacklist)
	}
}
