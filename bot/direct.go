package bot

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/commands"
	"github.com/presence-router/presence-router/rules"
	"github.com/presence-router/presence-router/store"
)

// Direct chats: any local user may open one with the bot and hide or
// unhide their own presence, or ask where it goes. The bot joins direct
// chats that local users invite it to and records them (the store's
// RecordDirectChat); it answers in no other room but the control room (an
// old control room, a room it was once in, stays silent).

// directLimit and directWindow bound the commands one user sends in direct
// chats: past directLimit in a directWindow, the first is answered that
// they are too many, and the rest are dropped unanswered.
const (
	directLimit  = 5
	directWindow = time.Minute
	// directUsersKept bounds the users the limiter remembers.
	directUsersKept = 10_000
)

// directLimiter counts each user's commands in direct chats (workerLoop
// only).
type directLimiter struct {
	users map[id.UserID]*directCount
}

type directCount struct {
	since  time.Time
	count  int
	warned bool
}

// allow says whether user may send another command now, and whether the
// refusal is the first of this window (answered) or not (dropped).
func (l *directLimiter) allow(user id.UserID, now time.Time) (ok, answer bool) {
	if l.users == nil || len(l.users) >= directUsersKept {
		l.users = make(map[id.UserID]*directCount)
	}
	c := l.users[user]
	if c == nil || now.Sub(c.since) >= directWindow {
		c = &directCount{since: now}
		l.users[user] = c
	}
	c.count++
	if c.count <= directLimit {
		return true, false
	}
	answer = !c.warned
	c.warned = true
	return false, answer
}

// acceptDirect answers an invite to a direct chat: joined when a local user
// sent it, declined otherwise.
func (b *Bot) acceptDirect(ctx context.Context, log *logrus.Entry, evt *event.Event) {
	intent := b.intent()
	if evt.Sender.Homeserver() != b.cfg.Homeserver.Domain {
		reason := "presence-router serves the users of " + b.cfg.Homeserver.Domain + " only"
		log.WithField("reason", reason).Info("Declining a direct chat from another server")
		if _, err := intent.LeaveRoom(ctx, evt.RoomID, &mautrix.ReqLeave{Reason: reason}); err != nil {
			log.WithError(err).Warn("Failed to decline invite")
		}
		return
	}
	// Recorded first: a join that fails leaves a record of a room the bot
	// is not in, which no message comes from.
	if err := b.store.RecordDirectChat(ctx, evt.RoomID, evt.Sender); err != nil {
		log.WithError(err).Warn("Failed to record a direct chat; not joining it")
		return
	}
	joinCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := intent.JoinRoomByID(joinCtx, evt.RoomID); err != nil {
		log.WithError(err).Warn("Failed to join a direct chat")
		return
	}
	log.Info("Joined a direct chat with a local user")
}

// processDirect answers a message in a direct chat: hide, unhide and
// explain (about the sender) from a local user, rate-limited per user.
func (b *Bot) processDirect(ctx context.Context, log *logrus.Entry, item store.InboxItem, evt *event.Event, msg *event.MessageEventContent) (bool, error) {
	done := func() (bool, error) { return true, b.store.MarkDone(ctx, item.Seq) }
	if msg.MsgType == event.MsgNotice || msg.MsgType == event.MsgEmote || msg.RelatesTo.GetReplaceID() != "" {
		return done()
	}
	formatted := ""
	if msg.Format == event.FormatHTML {
		formatted = msg.FormattedBody
	}
	cmd, parseErr := commands.ParseCommand(b.cfg.Bot.CommandPrefix, msg.Body, formatted)
	if cmd == nil && parseErr == nil {
		return done()
	}
	return b.answerDirect(ctx, log, item, evt, func(ctx context.Context) (*commands.Reply, *rules.Change, error) {
		switch {
		case parseErr != nil:
			return commands.Failure(parseErr.Error(), commands.ResultInvalid), nil, nil
		case !cmd.Direct():
			return commands.Failure(commands.DirectHelp(b.cfg.Bot.CommandPrefix), commands.ResultRefused), nil, nil
		case len(cmd.Users) > 0 && cmd.Users[0] != evt.Sender:
			return commands.Failure("In a direct chat, `explain` is about yourself: send it without a user. Admins explain other users in the control room.", commands.ResultRefused), nil, nil
		}
		return b.runner.Run(ctx, commands.Origin{EventID: evt.ID, Sender: evt.Sender}, cmd)
	})
}

// answerDirect answers a command in a direct chat with decide, after the
// checks every such command passes: a local sender, within the rate limit.
func (b *Bot) answerDirect(ctx context.Context, log *logrus.Entry, item store.InboxItem, evt *event.Event, decide func(context.Context) (*commands.Reply, *rules.Change, error)) (bool, error) {
	if evt.Sender.Homeserver() != b.cfg.Homeserver.Domain {
		return b.answer(ctx, log, item, evt, func(context.Context) (*commands.Reply, *rules.Change, error) {
			return commands.Failure("presence-router serves the users of "+commands.Code(b.cfg.Homeserver.Domain)+" only.", commands.ResultRefused), nil, nil
		})
	}
	if ok, answer := b.directLimits.allow(evt.Sender, time.Now()); !ok {
		if !answer {
			log.Debug("Dropping a direct-chat command over the rate limit")
			return true, b.store.MarkDone(ctx, item.Seq)
		}
		log.Info("A user sends commands in direct chats faster than the limit")
		return b.answer(ctx, log, item, evt, func(context.Context) (*commands.Reply, *rules.Change, error) {
			return commands.Failure("Too many commands: at most 5 a minute in direct chats. The next ones this minute are not answered.", commands.ResultRefused), nil, nil
		})
	}
	return b.answer(ctx, log, item, evt, decide)
}

// directEncryptedText is the reply to an encrypted direct chat while the
// bot reads no encryption.
const directEncryptedText = "This direct chat is encrypted, and presence-router cannot read encrypted messages here: its operator has not turned on `encryption.enabled`. " +
	"Ask them to, or open a direct chat without encryption (in Element: start a chat, and turn encryption off in its settings before sending)."
