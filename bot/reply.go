package bot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/commands"
)

// storedReply is a committed answer to a command, stored in the inbox so
// that it is sent even after a restart.
type storedReply struct {
	RoomID  id.RoomID  `json:"room_id"`
	ReplyTo id.EventID `json:"reply_to"`
	Sender  id.UserID  `json:"sender"`
	commands.Reply
}

// sendReply sends the notice and the ✅ or ❌ reaction. Transaction IDs are
// derived from the command's event ID, so a resend after a crash is
// de-duplicated by the homeserver.
func (b *Bot) sendReply(ctx context.Context, r *storedReply) error {
	txn := txnPrefix(r.ReplyTo)
	if err := b.send(ctx, r.RoomID, event.EventMessage, r.Content(r.ReplyTo, r.Sender), txn+"-reply"); err != nil {
		return fmt.Errorf("failed to send reply: %w", err)
	}
	key := "✅"
	if r.Result != commands.ResultOK {
		key = "❌"
	}
	reaction := &event.ReactionEventContent{RelatesTo: event.RelatesTo{Type: event.RelAnnotation, EventID: r.ReplyTo, Key: key}}
	if err := b.send(ctx, r.RoomID, event.EventReaction, reaction, txn+"-react"); err != nil {
		return fmt.Errorf("failed to send reaction: %w", err)
	}
	return nil
}

// send sends an event as the bot, encrypted in an encrypted room when
// encryption is on. txnID ("" for a fresh one) makes a resend a no-op.
func (b *Bot) send(ctx context.Context, room id.RoomID, evtType event.Type, content any, txnID string) error {
	evtType, content, err := b.enc.Seal(ctx, room, evtType, content)
	if err != nil {
		return err
	}
	intent, err := b.sender()
	if err != nil {
		return err
	}
	_, err = intent.SendMessageEvent(ctx, room, evtType, content, mautrix.ReqSendEvent{TransactionID: txnID})
	return err
}

func txnPrefix(eventID id.EventID) string {
	sum := sha256.Sum256([]byte(eventID))
	return "pr-" + hex.EncodeToString(sum[:12])
}
