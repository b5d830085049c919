package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/rules"
)

// The meta table's keys.
const (
	metaControlRoom = "control_room"
	// metaControlRoomPinnedAt is when the pin last moved.
	metaControlRoomPinnedAt = "control_room_pinned_at"
	metaPrunedBefore        = "inbox_pruned_before"
	metaEncryptionNotice    = "encryption_notice_at"
	metaCryptoDevice        = "crypto_device"
	// metaControlRoomPredecessors lists, as JSON, the rooms the control
	// room was upgraded from, oldest first.
	metaControlRoomPredecessors = "control_room_predecessors"
	// metaDirectChatPrefix, followed by a room ID, marks a direct chat the
	// bot joined on a local user's invite (the value: who invited it).
	metaDirectChatPrefix = "direct_chat:"
)

const (
	getMetaQuery = `SELECT value FROM meta WHERE key = $1`
	setMetaQuery = `INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value`
)

func (s *Store) getMeta(ctx context.Context, key string) (string, bool, error) {
	var value string
	err := s.db.QueryRow(ctx, getMetaQuery, key).Scan(&value)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	} else if err != nil {
		return "", false, fmt.Errorf("failed to read %s: %w", key, err)
	}
	return value, true, nil
}

func (s *Store) setMeta(ctx context.Context, key, value string) error {
	if _, err := s.db.Exec(ctx, setMetaQuery, key, value); err != nil {
		return fmt.Errorf("failed to store %s: %w", key, err)
	}
	return nil
}

// ControlRoom returns the pinned control room: the room the bot first
// joined, or the one an operator moved it to. ok is false before the first
// join.
func (s *Store) ControlRoom(ctx context.Context) (room id.RoomID, ok bool, err error) {
	value, ok, err := s.getMeta(ctx, metaControlRoom)
	return id.RoomID(value), ok, err
}

// PinControlRoom stores room as the control room; when the pin moves (or is
// first set), it records when, for ControlRoomPinnedAt.
func (s *Store) PinControlRoom(ctx context.Context, room id.RoomID) error {
	return s.InTxn(ctx, func(ctx context.Context) error {
		pinned, ok, err := s.ControlRoom(ctx)
		if err != nil || ok && pinned == room {
			return err
		}
		if err = s.setMeta(ctx, metaControlRoom, string(room)); err != nil {
			return err
		}
		return s.setMetaTime(ctx, metaControlRoomPinnedAt, time.Now())
	})
}

// ControlRoomPredecessors returns the rooms the control room was upgraded
// from (MoveControlRoom), oldest first.
func (s *Store) ControlRoomPredecessors(ctx context.Context) ([]id.RoomID, error) {
	value, ok, err := s.getMeta(ctx, metaControlRoomPredecessors)
	if err != nil || !ok {
		return nil, err
	}
	var rooms []id.RoomID
	if err = json.Unmarshal([]byte(value), &rooms); err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", metaControlRoomPredecessors, err)
	}
	return rooms, nil
}

// MoveControlRoom moves the pin from the control room to its replacement
// after a room upgrade, in one transaction with an audited change (no rule
// entries; its version is the next one, so every process sees the move in
// history in order). eventID is the old room's m.room.tombstone, sender
// its sender. Moving a pin that is no longer on from fails.
func (s *Store) MoveControlRoom(ctx context.Context, from, to id.RoomID, eventID id.EventID, sender id.UserID) (*rules.Change, error) {
	var change *rules.Change
	err := s.InTxn(ctx, func(ctx context.Context) error {
		pinned, _, err := s.ControlRoom(ctx)
		if err != nil {
			return err
		}
		if pinned != from {
			return fmt.Errorf("failed to move the control room: it is pinned to %s, not %s", pinned, from)
		}
		predecessors, err := s.ControlRoomPredecessors(ctx)
		if err != nil {
			return err
		}
		data, err := json.Marshal(append(predecessors, from))
		if err != nil {
			return fmt.Errorf("failed to encode %s: %w", metaControlRoomPredecessors, err)
		}
		if err = s.setMeta(ctx, metaControlRoomPredecessors, string(data)); err != nil {
			return err
		}
		if err = s.PinControlRoom(ctx, to); err != nil {
			return err
		}
		change, err = s.Record(ctx, rules.Mutation{EventID: eventID, Sender: sender, Command: fmt.Sprintf("moved the control room from %s to %s (room upgrade)", from, to)})
		return err
	})
	if err != nil {
		return nil, err
	}
	return change, nil
}

// ControlRoomPinnedAt returns when the control room was pinned to the room
// it is pinned to now (zero if unknown: pinned before this was recorded).
func (s *Store) ControlRoomPinnedAt(ctx context.Context) (time.Time, error) {
	return s.getMetaTime(ctx, metaControlRoomPinnedAt)
}

// EncryptionNoticeAt returns when the bot last told the control room that
// it cannot read encrypted messages (zero if never).
func (s *Store) EncryptionNoticeAt(ctx context.Context) (time.Time, error) {
	return s.getMetaTime(ctx, metaEncryptionNotice)
}

// SetEncryptionNoticeAt records when the bot told the control room that it
// cannot read encrypted messages.
func (s *Store) SetEncryptionNoticeAt(ctx context.Context, at time.Time) error {
	return s.setMetaTime(ctx, metaEncryptionNotice, at)
}

// prunedBefore returns the time before which the inbox no longer remembers
// the events it processed (zero if it was never pruned).
func (s *Store) prunedBefore(ctx context.Context) (time.Time, error) {
	return s.getMetaTime(ctx, metaPrunedBefore)
}

// getMetaTime reads a time stored as unix milliseconds (zero if unset).
func (s *Store) getMetaTime(ctx context.Context, key string) (time.Time, error) {
	value, ok, err := s.getMeta(ctx, key)
	if err != nil || !ok {
		return time.Time{}, err
	}
	ms, err := strconv.ParseInt(value, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("failed to read %s: %w", key, err)
	}
	return time.UnixMilli(ms), nil
}

// setMetaTime stores a time as unix milliseconds.
func (s *Store) setMetaTime(ctx context.Context, key string, at time.Time) error {
	return s.setMeta(ctx, key, strconv.FormatInt(at.UnixMilli(), 10))
}

// CryptoDevice is the bot's encryption device and its access token,
// encrypted with the pickle key (PickledToken); AccessToken is the plain
// token that versions before it stored, read only to be replaced.
type CryptoDevice struct {
	DeviceID     id.DeviceID `json:"device_id"`
	AccessToken  string      `json:"access_token,omitempty"`
	PickledToken string      `json:"pickled_access_token,omitempty"`
}

// CryptoDevice returns the bot's encryption device (ok is false before the
// first login).
func (s *Store) CryptoDevice(ctx context.Context) (device CryptoDevice, ok bool, err error) {
	value, ok, err := s.getMeta(ctx, metaCryptoDevice)
	if err != nil || !ok {
		return device, ok, err
	}
	if err = json.Unmarshal([]byte(value), &device); err != nil {
		return device, false, fmt.Errorf("failed to read %s: %w", metaCryptoDevice, err)
	}
	return device, true, nil
}

// SetCryptoDevice stores the bot's encryption device.
func (s *Store) SetCryptoDevice(ctx context.Context, device CryptoDevice) error {
	data, err := json.Marshal(device)
	if err != nil {
		return fmt.Errorf("failed to encode %s: %w", metaCryptoDevice, err)
	}
	return s.setMeta(ctx, metaCryptoDevice, string(data))
}

// RecordDirectChat records room as a direct chat that user invited the bot
// to: the bot answers self-service commands there, and in no other room
// but the control room.
func (s *Store) RecordDirectChat(ctx context.Context, room id.RoomID, user id.UserID) error {
	return s.setMeta(ctx, metaDirectChatPrefix+string(room), string(user))
}

// IsDirectChat says whether room was recorded by RecordDirectChat.
func (s *Store) IsDirectChat(ctx context.Context, room id.RoomID) (bool, error) {
	_, ok, err := s.getMeta(ctx, metaDirectChatPrefix+string(room))
	return ok, err
}
