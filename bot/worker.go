package bot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/sirupsen/logrus"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/commands"
	"github.com/presence-router/presence-router/encryption"
	"github.com/presence-router/presence-router/rules"
	"github.com/presence-router/presence-router/store"
)

// retryInterval is how often the worker looks at the inbox without being
// woken, to retry replies that could not be sent.
const retryInterval = 15 * time.Second

// inboxRetention is how long done inbox items are kept, counted back from
// the newest item. It is far longer than any catch-up reads back (the
// previous read, or about 1.5 minutes before the last event received) and
// than Synapse takes to redeliver what it sent just before a crash; an
// event sent before the retention is ignored (see store.PruneInbox).
const inboxRetention = 24 * time.Hour

// pruneInterval is how often the worker prunes the inbox.
const pruneInterval = 10 * time.Minute

// workerLoop processes the inbox in arrival order whenever woken.
func (b *Bot) workerLoop(ctx context.Context) {
	ticker := time.NewTicker(retryInterval)
	defer ticker.Stop()
	var pruned time.Time
	for {
		parked := b.processInbox(ctx)
		if time.Since(pruned) >= pruneInterval {
			pruned = time.Now()
			if n, err := b.store.PruneInbox(ctx, inboxRetention); err != nil {
				b.log.WithError(err).Warn("Failed to prune the inbox")
			} else if n > 0 {
				b.log.WithField("items", n).Debug("Pruned done inbox items")
			}
		}
		var retryParked <-chan time.Time
		if parked {
			retryParked = time.After(parkedRetry)
		}
		select {
		case <-ctx.Done():
			return
		case <-b.wakeWorker:
		case <-ticker.C:
		case <-retryParked:
		}
	}
}

// parkedRetry is how often the worker looks again at commands parked while
// their keys are missing.
const parkedRetry = 500 * time.Millisecond

// errParked is processItem's answer for an encrypted command of an admin's
// whose keys are not here yet: it waits apart (see encryption.DecryptWait),
// and so do the sender's later items; everyone else's go on.
var errParked = errors.New("waiting for the keys of an encrypted command")

// parkedItem is when an inbox item was first parked, and whether its keys
// were asked for.
type parkedItem struct {
	since     time.Time
	requested bool
}

// processInbox processes the unfinished items in order; it reports whether
// some wait for their keys (then it should run again in parkedRetry).
func (b *Bot) processInbox(ctx context.Context) (parked bool) {
	for ctx.Err() == nil {
		items, err := b.store.Unfinished(ctx, 100)
		if err != nil {
			b.log.WithError(err).Error("Failed to read the inbox")
			return parked
		}
		progressed := false
		waiting := map[id.UserID]bool{} // senders with a parked item: their later items wait
		for _, item := range items {
			if ctx.Err() != nil {
				return parked
			}
			if waiting[item.Event.Sender] {
				continue
			}
			done, err := b.processItem(ctx, item)
			switch {
			case errors.Is(err, errParked):
				waiting[item.Event.Sender], parked = true, true
			case err != nil:
				b.log.WithError(err).WithField("event_id", item.Event.EventID).Warn("Failed to process inbox item; will retry")
			}
			if done {
				delete(b.parked, item.Seq)
			}
			progressed = progressed || done
		}
		if len(items) < 100 || !progressed {
			return parked
		}
	}
	return parked
}

// processItem moves one item forward. It returns true when the item is done.
func (b *Bot) processItem(ctx context.Context, item store.InboxItem) (bool, error) {
	log := b.log.WithFields(logrus.Fields{"event_id": item.Event.EventID, "room_id": item.Event.RoomID, "sender": item.Event.Sender})
	if item.Reply != nil {
		// Applied before, but the reply was not sent yet; with encryption
		// on, it waits for the device that encrypts it.
		if !b.enc.Ready() {
			return false, nil
		}
		var rep storedReply
		if err := json.Unmarshal(item.Reply, &rep); err != nil {
			log.WithError(err).Warn("Dropping an unreadable stored reply")
			return true, b.store.MarkDone(ctx, item.Seq)
		}
		return b.deliver(ctx, item.Seq, &rep)
	}
	evt, err := decodeEvent(item.Event.JSON)
	if err != nil {
		log.WithError(err).Warn("Dropping an unreadable event")
		return true, b.store.MarkDone(ctx, item.Seq)
	}
	if evt.Type == event.StateMember {
		return true, b.handleMembership(ctx, log, item, evt)
	}
	if !b.connected.Load() {
		// Commands wait (in order) until the control room is joined.
		return false, nil
	}
	if evt.Type == event.StateTombstone {
		if err := b.followUpgrade(ctx, log, evt); err != nil {
			return false, err
		}
		return true, b.store.MarkDone(ctx, item.Seq)
	}
	if evt.RoomID != b.ControlRoom() {
		direct, err := b.store.IsDirectChat(ctx, evt.RoomID)
		if err != nil {
			return false, err
		}
		if !direct {
			log.Debug("Ignoring an event in a room that is neither the control room nor a direct chat")
			return true, b.store.MarkDone(ctx, item.Seq)
		}
	}
	wasEncrypted := false
	if evt.Type == event.StateEncryption || evt.Type == event.EventEncrypted {
		decrypted, preset, done, err := b.openEncrypted(ctx, log, item, evt)
		switch {
		case err != nil:
			return false, err
		case done:
			return true, b.store.MarkDone(ctx, item.Seq)
		case preset != nil:
			return b.answer(ctx, log, item, evt, func(context.Context) (*commands.Reply, *rules.Change, error) { return preset, nil, nil })
		}
		evt, wasEncrypted = decrypted, true
	}
	msg := evt.Content.AsMessage()
	if evt.RoomID != b.ControlRoom() && evt.Type == event.EventMessage {
		return b.processDirect(ctx, log, item, evt, msg)
	}
	if evt.RoomID != b.ControlRoom() || msg.MsgType == event.MsgNotice {
		log.Debug("Ignoring a message that is not a command in the control room")
		return true, b.store.MarkDone(ctx, item.Seq)
	}
	if notApplied := b.notACommand(msg); notApplied != "" {
		log.WithField("reason", notApplied).Info("Not applying a message addressed to the bot")
		return b.answer(ctx, log, item, evt, func(context.Context) (*commands.Reply, *rules.Change, error) {
			return commands.Failure(notApplied, commands.ResultInvalid), nil, nil
		})
	}
	if msg.RelatesTo.GetReplaceID() != "" || msg.MsgType == event.MsgEmote {
		log.Debug("Ignoring an edit or an emote that is not addressed to the bot")
		return true, b.store.MarkDone(ctx, item.Seq)
	}
	formatted := ""
	if msg.Format == event.FormatHTML {
		formatted = msg.FormattedBody
	}
	cmd, parseErr := commands.ParseCommand(b.cfg.Bot.CommandPrefix, msg.Body, formatted)
	if cmd == nil && parseErr == nil {
		return true, b.store.MarkDone(ctx, item.Seq)
	}
	refusal, err := b.enc.Refusal(ctx, evt, wasEncrypted)
	if err != nil {
		return false, err
	}
	allowed, why := b.mayCommand(ctx, evt.Sender, cmd)
	return b.answer(ctx, log, item, evt, func(ctx context.Context) (*commands.Reply, *rules.Change, error) {
		switch {
		case refusal != "":
			return commands.Failure(refusal, commands.ResultRefused), nil, nil
		case parseErr != nil:
			return commands.Failure(parseErr.Error(), commands.ResultInvalid), nil, nil
		case !allowed:
			return commands.Failure(why, commands.ResultRefused), nil, nil
		case cmd.DirectOnly():
			return commands.Failure(fmt.Sprintf("%s is about your own presence: send it in a direct chat with %s (any local user may open one). Nothing was changed.",
				commands.Code(b.cfg.Bot.CommandPrefix+" "+string(cmd.Verb)), commands.CodeUser(b.botID)), commands.ResultInvalid), nil, nil
		}
		return b.runner.Run(ctx, commands.Origin{EventID: evt.ID, Sender: evt.Sender}, cmd)
	})
}

// notACommand says why a message addressed to the bot is not applied: an
// edit of a command (applying it would change the rules a second time, or
// differently from what the room shows as history) or a command sent as an
// emote (/me). It returns "" for anything else.
func (b *Bot) notACommand(msg *event.MessageEventContent) string {
	prefix := b.cfg.Bot.CommandPrefix
	switch {
	case msg.RelatesTo.GetReplaceID() != "":
		if msg.NewContent == nil || !commands.Addressed(msg.NewContent.Body, prefix) {
			return ""
		}
		return fmt.Sprintf("Edits are not applied: the original command stands as it was answered. Send the corrected command as a new message (see %s).", commands.Code(prefix+" history"))
	case msg.MsgType == event.MsgEmote:
		if !commands.Addressed(msg.Body, prefix) {
			return ""
		}
		return "Commands sent as emotes (/me) are not applied: send the command as a plain message."
	}
	return ""
}

// decodeEvent reads an inbox item's event and its content.
func decodeEvent(data []byte) (*event.Event, error) {
	var evt event.Event
	if err := json.Unmarshal(data, &evt); err != nil {
		return nil, fmt.Errorf("failed to decode event: %w", err)
	}
	evt.Type.Class = event.MessageEventType
	if evt.StateKey != nil {
		evt.Type.Class = event.StateEventType
	}
	if err := evt.Content.ParseRaw(evt.Type); err != nil && !errors.Is(err, event.ErrUnsupportedContentType) {
		return nil, fmt.Errorf("failed to decode content: %w", err)
	}
	return &evt, nil
}

// openEncrypted handles an encryption event or an encrypted message: it
// returns the decrypted event, or an answer decided without reading it
// (preset), or done when there is nothing to answer, or errParked while an
// admin's command waits for its keys.
func (b *Bot) openEncrypted(ctx context.Context, log *logrus.Entry, item store.InboxItem, evt *event.Event) (decrypted *event.Event, preset *commands.Reply, done bool, err error) {
	direct := evt.RoomID != b.ControlRoom()
	if direct && (evt.Type == event.StateEncryption || evt.Sender.Homeserver() != b.cfg.Homeserver.Domain) {
		return nil, nil, true, nil
	}
	if direct && !b.enc.ReadsEncrypted() {
		if ok, answer := b.directLimits.allow(evt.Sender, time.Now()); !ok && !answer {
			return nil, nil, true, nil
		}
		return nil, commands.Failure(directEncryptedText, commands.ResultInvalid), false, nil
	}
	if !b.enc.ReadsEncrypted() {
		b.cannotDecrypt(ctx, log, evt)
		return nil, nil, true, nil
	}
	if evt.Type == event.StateEncryption {
		log.Info("Encryption was turned on in the control room; replies are encrypted from now on")
		return nil, nil, true, nil
	}
	decrypted, err = b.enc.Decrypt(ctx, log, evt)
	if err == nil {
		if decrypted.Content.Parsed == nil {
			_ = decrypted.Content.ParseRaw(decrypted.Type)
		}
		return decrypted, nil, false, nil
	}
	if ctx.Err() != nil {
		return nil, nil, false, ctx.Err()
	}
	var withheld *encryption.WithheldError
	if errors.Is(err, encryption.ErrKeysMissing) || errors.As(err, &withheld) {
		// Only a sender who could command is waited for (apart) or
		// answered: in a direct chat, any local user.
		admin, adminErr := b.isAdmin(ctx, evt.Sender)
		if direct {
			admin, adminErr = true, nil
		}
		if adminErr != nil {
			log.WithError(adminErr).Warn("Failed to read the control room's power levels; waiting for the keys as for an admin")
		}
		if !admin && adminErr == nil {
			if ok, held := b.undecryptable.Allow(time.Now(), undecryptableLogInterval); ok {
				log.WithField("not_logged_since_last", held).Info("Ignoring an encrypted message whose keys are not here from a member who may not command (no reply)")
			}
			return nil, nil, true, nil
		}
		if withheld != nil {
			log.WithField("code", withheld.Code).Warn("The sender's client withheld the keys of a message in the control room")
			return nil, commands.Failure(withheldText(withheld.Code, b.botID), commands.ResultInvalid), false, nil
		}
		if waited, err := b.park(ctx, log, item.Seq, evt); err != nil || !waited {
			return nil, nil, false, err
		}
		log.WithError(err).Warn("Could not decrypt a message in the control room")
		text := fmt.Sprintf("Could not decrypt this message (its keys did not reach presence-router within %s). If it was a command, send it again; if this repeats, check that your client shares keys with unverified devices, or verify presence-router's device.", encryption.DecryptWait)
		return nil, commands.Failure(text, commands.ResultInvalid), false, nil
	}
	log.WithError(err).Warn("Could not decrypt a message in the control room")
	text := fmt.Sprintf("Could not decrypt this message: %s.", commands.Code(err.Error()))
	return nil, commands.Failure(text, commands.ResultInvalid), false, nil
}

// withheldText says what to do when the sender's client withheld a
// message's keys from the bot's device, by the client's reason.
func withheldText(code event.RoomKeyWithheldCode, bot id.UserID) string {
	switch code {
	case event.RoomKeyWithheldUnverified:
		return fmt.Sprintf("Your client did not give presence-router the keys of this message: it sends keys only to verified devices (%s). Verify %s's device in your client, or let it send to unverified devices in this room (Element: room settings, Security & Privacy, \"Never send encrypted messages to unverified sessions\" off), then send the command again.",
			commands.Code(string(code)), commands.CodeUser(bot))
	case event.RoomKeyWithheldBlacklisted:
		return fmt.Sprintf("Your client did not give presence-router the keys of this message: it blocked %s's device (%s). Unblock that device in your client's session list, then send the command again.",
			commands.CodeUser(bot), commands.Code(string(code)))
	}
	return fmt.Sprintf("Your client did not give presence-router the keys of this message (%s). Check that it shares keys with %s's device, then send the command again.",
		commands.Code(string(code)), commands.CodeUser(bot))
}

// undecryptableLogInterval is how often at most an ignored undecryptable
// message of a member who may not command is logged.
const undecryptableLogInterval = time.Minute

// park keeps an admin's encrypted command whose keys are missing aside: it
// returns errParked until encryption.DecryptWait has passed since it was
// first parked (asking the sender's devices for the keys after
// encryption.FirstKeysWait), then waited true.
func (b *Bot) park(ctx context.Context, log *logrus.Entry, seq int64, evt *event.Event) (waited bool, err error) {
	p, ok := b.parked[seq]
	if !ok {
		p = &parkedItem{since: time.Now()}
		b.parked[seq] = p
		log.WithField("session_id", evt.Content.AsEncrypted().SessionID).Info("Waiting for the keys of an encrypted command (later commands of other senders go on)")
	}
	age := time.Since(p.since)
	if age >= encryption.FirstKeysWait && !p.requested {
		p.requested = true
		if err := b.enc.RequestKeys(ctx, evt); err != nil {
			log.WithError(err).Warn("Failed to ask for the keys of an encrypted command")
		}
	}
	if age < encryption.DecryptWait {
		return false, errParked
	}
	return true, nil
}

// answer decides a command's reply (and change) with decide, inside one
// store transaction that also marks the item applied, then applies the
// change to the router and delivers the reply.
func (b *Bot) answer(ctx context.Context, log *logrus.Entry, item store.InboxItem, evt *event.Event, decide func(context.Context) (*commands.Reply, *rules.Change, error)) (bool, error) {
	var rep *storedReply
	var change *rules.Change
	err := b.store.InTxn(ctx, func(ctx context.Context) error {
		decided, c, err := decide(ctx)
		if err != nil {
			return err
		}
		change = c
		rep = &storedReply{RoomID: evt.RoomID, ReplyTo: evt.ID, Sender: evt.Sender, Reply: *decided}
		data, err := json.Marshal(rep)
		if err != nil {
			return fmt.Errorf("failed to encode reply: %w", err)
		}
		return b.store.MarkApplied(ctx, item.Seq, data)
	})
	if err != nil {
		return false, fmt.Errorf("failed to apply command: %w", err)
	}
	b.metrics.countCommand(rep.Result)
	if change != nil {
		if err := b.follower.Committed(ctx, change); err != nil {
			log.WithError(err).Warn("Failed to bring the router up to this change; the database watch applies it")
		}
		log.WithFields(logrus.Fields{"version": change.Version, "entries": len(change.Entries), "push_to": change.PushCount}).Info("Applied rule change")
	}
	return b.deliver(ctx, item.Seq, rep)
}

// maxReplyRefusals is how often a reply that the homeserver refuses (a 4xx
// answer: the bot may no longer post there, the room is gone) is tried
// before it is dropped. Replies that fail otherwise (the homeserver does not
// answer) are retried until it does.
const maxReplyRefusals = 5

// problemUndelivered is the problem topic of dropped replies.
const problemUndelivered = "undelivered_replies"

// deliver sends an applied item's reply and marks it done. When sending
// fails, the item stays applied and is retried later; after
// maxReplyRefusals refusals it is dropped (done), logged and reported in
// Problems.
func (b *Bot) deliver(ctx context.Context, seq int64, rep *storedReply) (bool, error) {
	sendCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := b.sendReply(sendCtx, rep)
	if err == nil {
		delete(b.refusals, seq)
		return true, b.store.MarkDone(ctx, seq)
	}
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response == nil || httpErr.Response.StatusCode < 400 ||
		httpErr.Response.StatusCode >= 500 || httpErr.Response.StatusCode == http.StatusTooManyRequests {
		return false, fmt.Errorf("failed to send reply: %w", err)
	}
	b.refusals[seq]++
	if b.refusals[seq] < maxReplyRefusals {
		return false, fmt.Errorf("failed to send reply (refused %d of %d times before it is dropped): %w", b.refusals[seq], maxReplyRefusals, err)
	}
	delete(b.refusals, seq)
	b.dropped++
	b.log.WithError(err).WithFields(logrus.Fields{"room_id": rep.RoomID, "reply_to": rep.ReplyTo, "attempts": maxReplyRefusals}).
		Error("Dropped a reply the homeserver refused every time (the command itself was applied; see history)")
	b.setProblem(problemUndelivered, fmt.Sprintf("%d %s could not be sent and %s dropped after %d refusals each (the last, in %s, to %s: %v); the commands were applied, see history.",
		b.dropped, commands.Plural(b.dropped, "reply", "replies"), commands.Plural(b.dropped, "was", "were"), maxReplyRefusals, rep.RoomID, rep.ReplyTo, err))
	return true, b.store.MarkDone(ctx, seq)
}

// handleMembership joins the control room when an admin invites the bot,
// declines every other invite, and reconnects when the bot leaves the
// control room.
func (b *Bot) handleMembership(ctx context.Context, log *logrus.Entry, item store.InboxItem, evt *event.Event) error {
	member := evt.Content.AsMember()
	intent := b.intent()
	switch member.Membership {
	case event.MembershipInvite:
		control := b.ControlRoom()
		if control == "" {
			resolveCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
			control, _ = b.resolveControlRoom(resolveCtx)
			cancel()
		}
		if evt.RoomID != control && control != "" && b.connected.Load() {
			// Maybe the replacement of an upgraded control room, which the
			// bot could not join before this invite.
			if err := b.checkTombstone(ctx, log); err != nil {
				log.WithError(err).Warn("Failed to check whether the control room was upgraded to the room of this invite")
			}
			if b.ControlRoom() == evt.RoomID {
				return b.store.MarkDone(ctx, item.Seq)
			}
		}
		if evt.RoomID != control && member.IsDirect {
			b.acceptDirect(ctx, log, evt)
			return b.store.MarkDone(ctx, item.Seq)
		}
		reason := ""
		if !b.isListedAdmin(evt.Sender) {
			reason = "only presence-router admins (bot.admins) may invite the bot to a room other than a direct chat"
		} else if evt.RoomID != control {
			reason = "presence-router only joins its control room (bot.control_room)"
		}
		if reason != "" {
			log.WithField("reason", reason).Info("Declining invite")
			if _, err := intent.LeaveRoom(ctx, evt.RoomID, &mautrix.ReqLeave{Reason: reason}); err != nil {
				log.WithError(err).Warn("Failed to decline invite")
			}
			return b.store.MarkDone(ctx, item.Seq)
		}
		log.Info("Accepting an admin's invite to the control room")
		b.setConnected(false)
		signal(b.wakeConnect)
	case event.MembershipLeave, event.MembershipBan:
		if evt.RoomID == b.ControlRoom() && b.connected.Load() {
			log.WithField("membership", member.Membership).Warn("The bot is no longer in the control room; trying to rejoin")
			b.setConnected(false)
			signal(b.wakeConnect)
		}
	}
	return b.store.MarkDone(ctx, item.Seq)
}
