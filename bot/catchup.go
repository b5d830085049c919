package bot

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/sirupsen/logrus"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/store"
)

// Synapse can leave an event undelivered: when a transaction is created
// just as its recovery of the appservice finishes, the transaction is
// stored but not sent, and waits for the next failure (seen as 1 command
// in 200 under repeated kill -9, see e2e/crash_test.go). So the bot also
// reads the control room's recent timeline, as a client would, and stores
// any command that did not arrive. The inbox's unique event IDs make this
// harmless when nothing was missing.
var (
	// catchUpInterval is how often the timeline is read while connected.
	catchUpInterval = 20 * time.Second
	// catchUpGrace leaves recent events to normal delivery, so that catch-up
	// does not race the transaction that is already on its way.
	catchUpGrace = 5 * time.Second
	// catchUpPage is how many events one /messages request asks for.
	catchUpPage = 100
	// catchUpMaxEvents bounds one catch-up's reading of a busy room.
	catchUpMaxEvents = 2000
	// catchUpRestartSlack widens the first catch-up after a restart, which
	// begins before the last event the previous run received.
	catchUpRestartSlack = time.Minute
)

// catchUpLoop runs catchUp after each connect and every catchUpInterval.
// It is the only reader and writer of b.caughtUpTo and b.skipped.
func (b *Bot) catchUpLoop(ctx context.Context) {
	ticker := time.NewTicker(catchUpInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-b.wakeCatchUp:
		}
		if !b.connected.Load() {
			continue
		}
		if err := b.catchUp(ctx); err != nil && ctx.Err() == nil {
			b.log.WithError(err).Warn("Failed to read the control room's recent commands; will retry")
		}
	}
}

// catchUp stores the commands of the control room's timeline that the
// homeserver did not deliver. Each read goes back to where the previous one
// ended (less the grace); the first after a start goes back to before the
// last event the previous run received, which covers that run's last
// interval.
func (b *Bot) catchUp(ctx context.Context) error {
	room := b.ControlRoom()
	if room == "" {
		return nil
	}
	// Commands from before this service first received anything predate
	// it and are never applied; on a fresh install, neither are those from
	// before this start.
	horizon := b.started
	first, ok, err := b.store.FirstReceipt(ctx)
	if err != nil {
		return err
	}
	if ok && first.Before(horizon) {
		horizon = first
	}
	// Nor those from before the control room was pinned where it is.
	pinnedAt, err := b.store.ControlRoomPinnedAt(ctx)
	if err != nil {
		return err
	}
	if pinnedAt.After(horizon) {
		horizon = pinnedAt
	}
	from := horizon
	if !b.caughtUpTo.IsZero() {
		from = b.caughtUpTo.Add(-catchUpGrace)
	} else if last, ok, err := b.store.LastReceiptBefore(ctx, b.started); err != nil {
		return err
	} else if ok {
		from = last.Add(-catchUpInterval - catchUpGrace - catchUpRestartSlack)
	}
	if from.Before(horizon) {
		from = horizon
	}
	until := time.Now().Add(-catchUpGrace)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tl, err := b.readTimeline(ctx, room, from, until)
	if err != nil {
		return err
	}
	if !tl.complete {
		b.log.WithFields(logrus.Fields{"since": from.UTC().Format(time.RFC3339), "events": catchUpMaxEvents}).
			Warn("The control room's timeline since the last catch-up is longer than one catch-up reads; older undelivered commands, if any, were not recovered")
	}
	b.logSkipped(tl.beforeJoin, "sent before presence-router joined the control room")
	if from.Equal(horizon) {
		b.logSkipped(tl.beforeFrom, "sent before presence-router first started or before the control room was pinned to this room")
	}
	keep := b.keepEvents(tl.events)
	res, err := b.store.Enqueue(ctx, keep)
	if err != nil {
		return err
	}
	b.logTooOld(res)
	b.caughtUpTo = until
	if added := res.New; added > 0 {
		b.log.WithField("commands", added).Warn("Recovered commands the homeserver had not delivered (read from the control room's timeline)")
		b.metrics.countRecovered(added)
		signal(b.wakeWorker)
	}
	return nil
}

// timeline is what readTimeline read.
type timeline struct {
	// events were sent between from and until, after the bot joined,
	// oldest first, so that recovered commands keep their order.
	events []json.RawMessage
	// beforeJoin were sent between from and until but before the bot's
	// latest join (it was not in the room to be sent them).
	beforeJoin []json.RawMessage
	// beforeFrom were sent before from, on the last page read.
	beforeFrom []json.RawMessage
	// complete is false when catchUpMaxEvents ended the reading first.
	complete bool
}

// readTimeline pages back through room's timeline until an event sent
// before from, the bot's own join, the start of the room, or
// catchUpMaxEvents.
func (b *Bot) readTimeline(ctx context.Context, room id.RoomID, from, until time.Time) (*timeline, error) {
	cli := b.intent()
	token := ""
	tl := &timeline{}
	joined := false
	for read := 0; read < catchUpMaxEvents; {
		resp, err := cli.Messages(ctx, room, token, "", mautrix.DirectionBackward, nil, catchUpPage)
		if err != nil {
			return nil, fmt.Errorf("failed to read the control room's timeline: %w", err)
		}
		read += len(resp.Chunk)
		reachedFrom := false
		for _, evt := range resp.Chunk {
			// Timestamps are not strictly ordered, so the rest of the page
			// is still read once an older event is seen; the timeline's
			// order says what came before the bot's join.
			sent := time.UnixMilli(evt.Timestamp)
			raw, err := json.Marshal(evt)
			if err != nil {
				return nil, fmt.Errorf("failed to encode event %s: %w", evt.ID, err)
			}
			switch {
			case sent.Before(from):
				reachedFrom = true
				tl.beforeFrom = append(tl.beforeFrom, raw)
			case sent.After(until):
			case joined:
				tl.beforeJoin = append(tl.beforeJoin, raw)
			default:
				tl.events = append(tl.events, raw)
			}
			joined = joined || b.isOwnJoin(evt)
		}
		if reachedFrom || joined || resp.End == "" || len(resp.Chunk) == 0 {
			tl.complete = true
			break
		}
		token = resp.End
	}
	slices.Reverse(tl.events)
	return tl, nil
}

// isOwnJoin reports whether evt is the bot joining a room (not a change of
// its profile while joined).
func (b *Bot) isOwnJoin(evt *event.Event) bool {
	if evt.Type != event.StateMember || evt.GetStateKey() != string(b.botID) {
		return false
	}
	_ = evt.Content.ParseRaw(evt.Type)
	if evt.Content.AsMember().Membership != event.MembershipJoin {
		return false
	}
	if evt.Unsigned.PrevContent != nil {
		_ = evt.Unsigned.PrevContent.ParseRaw(evt.Type)
		return evt.Unsigned.PrevContent.AsMember().Membership != event.MembershipJoin
	}
	return true
}

// maxSkippedLogged bounds the skipped events remembered (and so logged
// once) by logSkipped; past it the memory starts again.
const maxSkippedLogged = 1000

// logSkipped logs, once each, the events among raws that may be commands
// (what keepEvents keeps, less the bot's membership) and that catch-up does
// not apply, with the reason.
func (b *Bot) logSkipped(raws []json.RawMessage, reason string) {
	for _, raw := range raws {
		var hdr eventHeader
		if json.Unmarshal(raw, &hdr) != nil || hdr.Type == event.StateMember.Type || !b.wanted(&hdr) {
			continue
		}
		if _, logged := b.skipped[hdr.ID]; logged {
			continue
		}
		if len(b.skipped) >= maxSkippedLogged {
			clear(b.skipped)
		}
		b.skipped[hdr.ID] = struct{}{}
		b.log.WithFields(logrus.Fields{"event_id": hdr.ID, "sender": hdr.Sender, "sent_at": time.UnixMilli(hdr.SentAt).UTC().Format(time.RFC3339), "reason": reason}).
			Info("Skipped a command found in the control room's timeline; send it again to apply it")
	}
}

// keepEvents returns the events worth storing, from a transaction or a
// timeline: possible commands and the bot's own membership.
func (b *Bot) keepEvents(raws []json.RawMessage) []store.InboxEvent {
	keep := make([]store.InboxEvent, 0, len(raws))
	for _, raw := range raws {
		var hdr eventHeader
		if err := json.Unmarshal(raw, &hdr); err != nil || hdr.ID == "" {
			continue
		}
		if b.wanted(&hdr) {
			evt := store.InboxEvent{EventID: hdr.ID, RoomID: hdr.RoomID, Sender: hdr.Sender, JSON: raw}
			if hdr.SentAt > 0 {
				evt.SentAt = time.UnixMilli(hdr.SentAt)
			}
			keep = append(keep, evt)
		}
	}
	return keep
}
