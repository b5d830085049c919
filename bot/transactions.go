package bot

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/sirupsen/logrus"
	"go.mau.fi/util/exhttp"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/commands"
	"github.com/presence-router/presence-router/store"
)

// authWarnInterval is how often at most a rejected hs_token is logged.
const authWarnInterval = 10 * time.Second

// maxTransactionBytes is the largest appservice transaction body accepted.
const maxTransactionBytes = 64 << 20

// transaction is the part of an appservice transaction the bot reads.
type transaction struct {
	Events []json.RawMessage `json:"events"`
}

// eventHeader is the part of an event needed to decide whether to keep it.
type eventHeader struct {
	ID       id.EventID `json:"event_id"`
	RoomID   id.RoomID  `json:"room_id"`
	Sender   id.UserID  `json:"sender"`
	Type     string     `json:"type"`
	StateKey *string    `json:"state_key"`
	SentAt   int64      `json:"origin_server_ts"`
	Content  struct {
		MsgType    string `json:"msgtype"`
		Body       string `json:"body"`
		Membership string `json:"membership"`
		RelatesTo  struct {
			Type event.RelationType `json:"rel_type"`
		} `json:"m.relates_to"`
		NewContent struct {
			Body string `json:"body"`
		} `json:"m.new_content"`
	} `json:"content"`
}

// HandleTransaction serves PUT /_matrix/app/v1/transactions/{txnID}. Unlike
// mautrix's handler, it answers 200 only after the events it cares about are
// committed to the inbox, so a crash never loses an acknowledged command;
// the inbox's unique event IDs make Synapse's retries harmless.
func (b *Bot) HandleTransaction(w http.ResponseWriter, r *http.Request) {
	if !b.as.CheckServerToken(w, r) {
		if ok, held := b.authWarn.Allow(time.Now(), authWarnInterval); ok {
			b.log.WithFields(logrus.Fields{"remote_addr": r.RemoteAddr, "not_logged_since_last": held}).Warn("Rejected appservice transaction with a bad hs_token")
		}
		return
	}
	txnID := r.PathValue("txnID")
	log := b.log.WithField("transaction_id", txnID)
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxTransactionBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			mautrix.MTooLarge.WithMessage("Transaction body is over 64 MiB").Write(w)
		} else {
			mautrix.MNotJSON.WithMessage("Failed to read request body").Write(w)
		}
		return
	}
	var txn transaction
	if err = json.Unmarshal(body, &txn); err != nil {
		log.WithError(err).Warn("Rejected malformed appservice transaction")
		mautrix.MNotJSON.WithMessage("Transaction body is not valid JSON").Write(w)
		return
	}
	keep := b.keepEvents(txn.Events)
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	added, err := b.store.Enqueue(ctx, keep)
	if err != nil {
		// Synapse retries the transaction, so nothing is lost.
		log.WithError(err).Error("Failed to store transaction events; the homeserver will retry")
		mautrix.MUnknown.WithMessage("Failed to store events").Write(w)
		return
	}
	b.logTooOld(added)
	log.WithField("events", len(txn.Events)).WithField("new_commands", added.New).Debug("Accepted transaction")
	exhttp.WriteEmptyJSONResponse(w, http.StatusOK)
	if added.New > 0 {
		signal(b.wakeWorker)
	}
}

// logTooOld warns about events dropped because they were sent before the
// inbox was last pruned.
func (b *Bot) logTooOld(res store.Enqueued) {
	if res.TooOld > 0 {
		b.log.WithField("events", res.TooOld).Warn("Ignored events sent before the inbox's memory begins (older than the inbox retention before the newest event): they may have been applied already")
	}
}

// wanted says whether an event may be a command or concerns the bot's
// membership. Everything else is dropped before it is stored.
func (b *Bot) wanted(hdr *eventHeader) bool {
	switch hdr.Type {
	case event.StateMember.Type:
		return hdr.StateKey != nil && id.UserID(*hdr.StateKey) == b.botID
	case event.StateEncryption.Type, event.StateTombstone.Type:
		return hdr.StateKey != nil && *hdr.StateKey == ""
	case event.EventEncrypted.Type:
		// Maybe a command the bot cannot read: kept, so it is answered.
		return hdr.Sender != b.botID
	case event.EventMessage.Type:
		if hdr.Sender == b.botID || hdr.Content.MsgType == string(event.MsgNotice) {
			return false
		}
		if hdr.Content.RelatesTo.Type == event.RelReplace {
			// An edit of a command: kept, so it is answered (not applied).
			return commands.Addressed(hdr.Content.NewContent.Body, b.cfg.Bot.CommandPrefix)
		}
		return commands.Addressed(hdr.Content.Body, b.cfg.Bot.CommandPrefix)
	}
	return false
}
