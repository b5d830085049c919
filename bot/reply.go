package bot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"
)

// Command results, for replies and metrics.
const (
	resultOK      = "ok"
	resultInvalid = "invalid"
	resultRefused = "refused"
)

// listBudget and listMaxLines bound long replies. The event carries the
// plain body and the HTML, and JSON escapes every < and > of the HTML, so
// a short line costs about seven times its Markdown: the line cap keeps a
// list of the shortest user IDs under Matrix's 65,536-byte event limit,
// the byte budget a list of the longest.
const (
	listBudget   = 15000
	listMaxLines = 400
)

// maxEventBytes is the largest reply content sent; a larger one is replaced
// by a short notice (Matrix rejects events over 65,536 bytes).
const maxEventBytes = 60000

// reply is a committed answer to a command, stored in the inbox so that it
// is sent even after a restart.
type reply struct {
	RoomID   id.RoomID  `json:"room_id"`
	ReplyTo  id.EventID `json:"reply_to"`
	Sender   id.UserID  `json:"sender"`
	Markdown string     `json:"markdown"`
	Result   string     `json:"result"`
}

func success(markdown string) *reply {
	return &reply{Markdown: markdown, Result: resultOK}
}

func failure(markdown, result string) *reply {
	return &reply{Markdown: markdown, Result: result}
}

// content renders the reply as an m.notice that replies to the command.
func (r *reply) content() *event.MessageEventContent {
	content := format.RenderMarkdown(r.Markdown, true, false)
	content.MsgType = event.MsgNotice
	content.RelatesTo = (&event.RelatesTo{}).SetReplyTo(r.ReplyTo)
	content.Mentions = &event.Mentions{UserIDs: []id.UserID{r.Sender}}
	if data, err := json.Marshal(&content); err == nil && len(data) > maxEventBytes {
		short := format.RenderMarkdown("The answer is too long for one Matrix message; narrow the command down.", true, false)
		short.MsgType, short.RelatesTo, short.Mentions = event.MsgNotice, content.RelatesTo, content.Mentions
		return &short
	}
	return &content
}

// sendReply sends the notice and the ✅ or ❌ reaction. Transaction IDs are
// derived from the command's event ID, so a resend after a crash is
// de-duplicated by the homeserver.
func (b *Bot) sendReply(ctx context.Context, r *reply) error {
	txn := txnPrefix(r.ReplyTo)
	if err := b.send(ctx, r.RoomID, event.EventMessage, r.content(), txn+"-reply"); err != nil {
		return fmt.Errorf("failed to send reply: %w", err)
	}
	key := "✅"
	if r.Result != resultOK {
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
	evtType, content, err := b.sealed(ctx, room, evtType, content)
	if err != nil {
		return err
	}
	_, err = b.intent().SendMessageEvent(ctx, room, evtType, content, mautrix.ReqSendEvent{TransactionID: txnID})
	return err
}

func txnPrefix(eventID id.EventID) string {
	sum := sha256.Sum256([]byte(eventID))
	return "pr-" + hex.EncodeToString(sum[:12])
}
