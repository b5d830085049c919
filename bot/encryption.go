package bot

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// problemEncryption is the problem topic of an encrypted control room.
const problemEncryption = "encryption"

// encryptionNoticeInterval is how often at most the bot repeats, in the
// control room, that it cannot read encrypted messages.
const encryptionNoticeInterval = time.Hour

// encryptedRoomText is what the bot says, logs and reports when the control
// room is encrypted: it reads no encrypted message, so it must never stay
// silent about it.
const encryptedRoomText = "The control room is end-to-end encrypted, and this presence-router cannot read encrypted messages: " +
	"encryption.enabled is off in its config, so encrypted commands sent here are not seen or applied. " +
	"Turn on encryption.enabled (see the README, \"Encrypted control rooms\"), or move to a room without encryption " +
	"(set bot.control_room to its ID)."

// checkRoomEncryption reports an encrypted control room, as the bot finds it
// on joining.
func (b *Bot) checkRoomEncryption(ctx context.Context, log *logrus.Entry) {
	if b.enc.ReadsEncrypted() {
		return
	}
	content, err := b.readRoomEncryption(ctx, b.ControlRoom())
	switch {
	case err != nil:
		log.WithError(err).Warn("Failed to read whether the control room is encrypted")
	case content == nil:
		b.setProblem(problemEncryption, "")
	default:
		b.cannotDecrypt(ctx, log, nil)
	}
}

// readRoomEncryption reads a room's m.room.encryption state from the
// homeserver: nil when the room is not encrypted.
func (b *Bot) readRoomEncryption(ctx context.Context, room id.RoomID) (*event.EncryptionEventContent, error) {
	var content event.EncryptionEventContent
	err := b.intent().StateEvent(ctx, room, event.StateEncryption, "", &content)
	if errors.Is(err, mautrix.MNotFound) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("failed to read whether %s is encrypted: %w", room, err)
	}
	if content.Algorithm == "" {
		return nil, nil
	}
	return &content, nil
}

// cannotDecrypt reports that the control room is encrypted (evt is what
// showed it: its m.room.encryption event, or an encrypted message; nil on
// joining): an error in the log and the problem in status and /ready every
// time, and a plain-text notice in the room at most once per
// encryptionNoticeInterval, also across restarts.
func (b *Bot) cannotDecrypt(ctx context.Context, log *logrus.Entry, evt *event.Event) {
	b.setProblem(problemEncryption, encryptedRoomText)
	entry := log
	if evt != nil {
		entry = log.WithField("event_type", evt.Type.Type)
	}
	entry.Error("The control room is encrypted and presence-router cannot read encrypted messages; set bot.control_room to an unencrypted room")
	last, err := b.store.EncryptionNoticeAt(ctx)
	if err != nil {
		log.WithError(err).Warn("Failed to read when the encryption notice was last sent")
	}
	if time.Since(last) < encryptionNoticeInterval {
		return
	}
	sendCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	content := &event.MessageEventContent{MsgType: event.MsgNotice, Body: "⚠️ " + encryptedRoomText}
	intent, err := b.sender()
	if err == nil {
		_, err = intent.SendMessageEvent(sendCtx, b.ControlRoom(), event.EventMessage, content)
	}
	if err != nil {
		log.WithError(err).Warn("Failed to post the encryption notice in the control room")
		return
	}
	if err = b.store.SetEncryptionNoticeAt(ctx, time.Now()); err != nil {
		log.WithError(err).Warn("Failed to record the encryption notice")
	}
}
