package bot

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/sirupsen/logrus"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/commands"
	"github.com/presence-router/presence-router/encryption"
)

// problemTombstone is the problem topic of a control-room upgrade the bot
// did not (or not yet) follow.
const problemTombstone = "tombstone"

// isAdmin reports whether user may change the lists: listed in bot.admins,
// or at bot.admin_power_level in the control room by its power levels read
// now.
func (b *Bot) isAdmin(ctx context.Context, user id.UserID) (bool, error) {
	if b.isListedAdmin(user) {
		return true, nil
	}
	need := b.cfg.Bot.AdminPowerLevel
	if need == nil {
		return false, nil
	}
	pl, err := b.readPowerLevels(ctx, b.ControlRoom())
	if err != nil {
		return false, err
	}
	return pl.GetUserLevel(user) >= *need, nil
}

// followUpgrade follows the control room's m.room.tombstone (evt): when an
// admin sent it and the replacement room names the control room as its
// predecessor, the bot joins the replacement, moves the pin there (an
// audited change) and answers there from then on. Anything else changes
// nothing and shows in Problems. An error means try again later.
func (b *Bot) followUpgrade(ctx context.Context, log *logrus.Entry, evt *event.Event) error {
	old := b.ControlRoom()
	if evt.RoomID != old {
		return nil
	}
	_ = evt.Content.ParseRaw(evt.Type)
	tombstone := evt.Content.AsTombstone()
	replacement := tombstone.ReplacementRoom
	log = log.WithFields(logrus.Fields{"replacement_room_id": replacement, "tombstone_sender": evt.Sender})
	stay := func(msg string) error {
		log.Warn(msg)
		b.setProblem(problemTombstone, msg)
		return nil
	}
	if replacement == "" || replacement == old {
		return stay(fmt.Sprintf("The control room has a tombstone from %s that names no replacement room: presence-router stays in %s.", evt.Sender, old))
	}
	admin, err := b.isAdmin(ctx, evt.Sender)
	if err != nil {
		return err
	}
	if !admin {
		return stay(fmt.Sprintf("%s marked the control room as replaced by %s (m.room.tombstone), but is not a presence-router admin: presence-router stays in %s.", evt.Sender, replacement, old))
	}
	intent := b.intent()
	_, err = intent.JoinRoom(ctx, string(replacement), &mautrix.ReqJoinRoom{Via: []string{evt.Sender.Homeserver()}})
	if errors.Is(err, mautrix.MForbidden) {
		// Upgrading an invite-only room invites nobody: the admin's invite
		// to the replacement brings the bot here again (handleMembership).
		return stay(fmt.Sprintf("%s upgraded the control room to %s, which presence-router may not join yet: invite %s there, and presence-router moves with its commands.", evt.Sender, replacement, b.botID))
	} else if err != nil {
		return fmt.Errorf("failed to join the replacement room %s: %w", replacement, err)
	}
	var create event.CreateEventContent
	if err = intent.StateEvent(ctx, replacement, event.StateCreate, "", &create); err != nil {
		return fmt.Errorf("failed to read the replacement room's creation: %w", err)
	}
	if create.GetPredecessor().RoomID != old {
		if _, err = intent.LeaveRoom(ctx, replacement, &mautrix.ReqLeave{Reason: "not a replacement of presence-router's control room"}); err != nil {
			log.WithError(err).Warn("Failed to leave the room named by the tombstone")
		}
		return stay(fmt.Sprintf("The control room's tombstone (from %s) names %s, whose creation does not name the control room as its predecessor: presence-router stays in %s.", evt.Sender, replacement, old))
	}
	change, err := b.store.MoveControlRoom(ctx, old, replacement, evt.ID, evt.Sender)
	if err != nil {
		return err
	}
	if err = b.follower.Committed(ctx, change); err != nil {
		log.WithError(err).Warn("Failed to bring the router up to this change; the database watch applies it")
	}
	b.setControlRoom(replacement)
	b.setProblem(problemTombstone, "")
	log.WithField("version", change.Version).Info("Followed the control room's upgrade: commands are read and answered in the replacement room only")
	b.checkRoomEncryption(ctx, log)
	// Best effort: the old room may no longer let the bot post.
	b.notice(ctx, log, old, fmt.Sprintf("This room was upgraded. presence-router now reads commands only in %s.", commands.Code(string(replacement))))
	b.notice(ctx, log, replacement, fmt.Sprintf("presence-router followed the upgrade of %s by %s and reads commands here now (version %d; see %s).",
		commands.Code(string(old)), commands.CodeUser(evt.Sender), change.Version, commands.Code(b.cfg.Bot.CommandPrefix+" history")))
	return nil
}

// notice posts a notice in room, once, and only logs a failure.
func (b *Bot) notice(ctx context.Context, log *logrus.Entry, room id.RoomID, markdown string) {
	reply := commands.Success(markdown)
	if err := b.send(ctx, room, event.EventMessage, reply.Content("", ""), ""); err != nil {
		log.WithError(err).WithField("room_id", room).Info("Could not post a notice")
	}
}

// upgradedFrom reports whether room is one the control room was upgraded
// from.
func (b *Bot) upgradedFrom(ctx context.Context, room id.RoomID) (bool, error) {
	predecessors, err := b.store.ControlRoomPredecessors(ctx)
	if err != nil {
		return false, err
	}
	return slices.Contains(predecessors, room), nil
}

// wasUpgradedFrom is upgradedFrom that logs a failure and says false.
func (b *Bot) wasUpgradedFrom(ctx context.Context, room id.RoomID) bool {
	upgraded, err := b.upgradedFrom(ctx, room)
	if err != nil {
		b.log.WithError(err).Warn("Failed to read the control room's predecessors")
	}
	return upgraded
}

// checkTombstone follows a tombstone already in the control room's state,
// one the bot missed (sent while it was stopped, or before an invite to the
// replacement let it join).
func (b *Bot) checkTombstone(ctx context.Context, log *logrus.Entry) error {
	room := b.ControlRoom()
	state, err := b.intent().State(ctx, room)
	if err != nil {
		return fmt.Errorf("failed to read the control room's state: %w", err)
	}
	evt := state[event.StateTombstone][""]
	if evt == nil {
		return nil
	}
	evt.RoomID = room
	return b.followUpgrade(ctx, log, evt)
}

// AcceptIdentity trusts user's new cross-signing identity through the
// bot's encryption (commands.Service); what leaves nothing to do is a
// commands.Refusal.
func (b *Bot) AcceptIdentity(ctx context.Context, user id.UserID) (first, current string, err error) {
	identity, err := b.enc.AcceptIdentity(ctx, user)
	switch {
	case errors.Is(err, encryption.ErrOff):
		return "", "", &commands.Refusal{Text: "End-to-end encryption is off here (encryption.enabled, or the bot's device is not up yet): commands are not checked against identities, so there is none to accept."}
	case errors.Is(err, encryption.ErrIdentityUnchanged):
		return "", "", &commands.Refusal{Text: fmt.Sprintf("%s's identity has not changed since presence-router first saw it: nothing to accept.", commands.CodeUser(user))}
	case errors.Is(err, encryption.ErrNoIdentity):
		return "", "", &commands.Refusal{Text: fmt.Sprintf("presence-router has seen no cross-signing identity of %s: their keys reach it when they share an encrypted room with the bot.", commands.CodeUser(user))}
	case err != nil:
		return "", "", err
	}
	return identity.First.String(), identity.Current.String(), nil
}

// UserExists asks the homeserver whether a local user is registered, by
// their profile (commands.Service): Synapse answers 404 for a user it does
// not know.
func (b *Bot) UserExists(ctx context.Context, user id.UserID) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := b.intent().GetProfile(ctx, user)
	// Synapse 1.163 answers 404 M_UNKNOWN "No row found (profiles)" for a
	// user it does not know; the specification says M_NOT_FOUND.
	var httpErr mautrix.HTTPError
	if errors.Is(err, mautrix.MNotFound) || errors.As(err, &httpErr) && httpErr.IsStatus(http.StatusNotFound) {
		return false, nil
	}
	if err != nil {
		b.log.WithError(err).WithField("user_id", user).Info("Could not check whether a user is registered; taking them as registered")
	}
	return err == nil, err
}
