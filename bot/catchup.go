package bot

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"maunium.net/go/mautrix"

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
	// catchUpLimit is how many recent events are read each time.
	catchUpLimit = 50
)

// catchUpLoop runs catchUp after each connect and every catchUpInterval.
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

// catchUp stores the commands of the control room's recent timeline that
// the homeserver did not deliver.
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
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cli := b.as.BotClient()
	url := cli.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "rooms", room, "messages"},
		map[string]string{"dir": "b", "limit": fmt.Sprint(catchUpLimit)})
	var resp struct {
		Chunk []json.RawMessage `json:"chunk"`
	}
	if _, err = cli.MakeRequest(ctx, "GET", url, nil, &resp); err != nil {
		return fmt.Errorf("failed to read the control room's timeline: %w", err)
	}
	cutoff := time.Now().Add(-catchUpGrace)
	var candidates []json.RawMessage
	for _, raw := range resp.Chunk {
		var ts struct {
			OriginServerTS int64 `json:"origin_server_ts"`
		}
		if json.Unmarshal(raw, &ts) != nil {
			continue
		}
		sent := time.UnixMilli(ts.OriginServerTS)
		if sent.Before(horizon) || sent.After(cutoff) {
			continue
		}
		candidates = append(candidates, raw)
	}
	// Oldest first, so that recovered commands keep their order.
	for i, j := 0, len(candidates)-1; i < j; i, j = i+1, j-1 {
		candidates[i], candidates[j] = candidates[j], candidates[i]
	}
	keep := b.keepEvents(candidates)
	added, err := b.store.Enqueue(ctx, keep)
	if err != nil {
		return err
	}
	if added > 0 {
		b.log.WithField("commands", added).Warn("Recovered commands the homeserver had not delivered (read from the control room's timeline)")
		b.metrics.countRecovered(added)
		signal(b.wakeWorker)
	}
	return nil
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
			keep = append(keep, store.InboxEvent{EventID: hdr.ID, RoomID: hdr.RoomID, Sender: hdr.Sender, JSON: raw})
		}
	}
	return keep
}
