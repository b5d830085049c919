package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Presence is one presence event a user's /sync returned.
type Presence struct {
	Sender    id.UserID
	State     string
	StatusMsg string
	At        time.Time
}

// Syncer runs a user's /sync loop and records presence and timeline events.
type Syncer struct {
	Client   *mautrix.Client
	lock     sync.Mutex
	presence []Presence
	timeline []*event.Event
	errs     int
	syncs    int
	cancel   context.CancelFunc
	done     chan struct{}
}

// NewSyncer does an initial sync, then keeps syncing in the background
// until Stop. It syncs with set_presence=offline, so syncing does not change
// the user's own presence.
func NewSyncer(ctx context.Context, cli *mautrix.Client) (*Syncer, error) {
	resp, err := cli.SyncRequest(ctx, 0, "", "", false, event.PresenceOffline)
	if err != nil {
		return nil, fmt.Errorf("failed to do the initial sync of %s: %w", cli.UserID, err)
	}
	loopCtx, cancel := context.WithCancel(context.Background())
	s := &Syncer{Client: cli, cancel: cancel, done: make(chan struct{})}
	s.record(resp)
	go s.loop(loopCtx, resp.NextBatch)
	return s, nil
}

func (s *Syncer) loop(ctx context.Context, since string) {
	defer close(s.done)
	for ctx.Err() == nil {
		resp, err := s.Client.SyncRequest(ctx, 1000, since, "", false, event.PresenceOffline)
		if err != nil {
			s.lock.Lock()
			s.errs++
			s.lock.Unlock()
			time.Sleep(100 * time.Millisecond)
			continue
		}
		since = resp.NextBatch
		s.record(resp)
	}
}

func (s *Syncer) record(resp *mautrix.RespSync) {
	s.lock.Lock()
	defer s.lock.Unlock()
	s.syncs++
	now := time.Now()
	for _, evt := range resp.Presence.Events {
		var content struct {
			Presence  string `json:"presence"`
			StatusMsg string `json:"status_msg"`
		}
		_ = json.Unmarshal(evt.Content.VeryRaw, &content)
		s.presence = append(s.presence, Presence{Sender: evt.Sender, State: content.Presence, StatusMsg: content.StatusMsg, At: now})
	}
	for roomID, room := range resp.Rooms.Join {
		for _, evt := range room.Timeline.Events {
			evt.RoomID = roomID
			s.timeline = append(s.timeline, evt)
		}
	}
}

// Syncs returns how many /sync responses came, the first included.
func (s *Syncer) Syncs() int {
	s.lock.Lock()
	defer s.lock.Unlock()
	return s.syncs
}

// SyncErrors returns how many /sync requests failed.
func (s *Syncer) SyncErrors() int {
	s.lock.Lock()
	defer s.lock.Unlock()
	return s.errs
}

// Stop ends the sync loop.
func (s *Syncer) Stop() {
	s.cancel()
	<-s.done
}

// Presence returns every presence event received so far.
func (s *Syncer) Presence() []Presence {
	s.lock.Lock()
	defer s.lock.Unlock()
	return append([]Presence(nil), s.presence...)
}

// WaitPresence waits up to timeout for a presence event from sender with
// the given status message.
func (s *Syncer) WaitPresence(sender id.UserID, statusMsg string, timeout time.Duration) (Presence, bool) {
	deadline := time.Now().Add(timeout)
	for {
		for _, p := range s.Presence() {
			if p.Sender == sender && p.StatusMsg == statusMsg {
				return p, true
			}
		}
		if time.Now().After(deadline) {
			return Presence{}, false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// SawPresence reports whether any presence event from sender with the
// status message arrived.
func (s *Syncer) SawPresence(sender id.UserID, statusMsg string) bool {
	_, ok := s.WaitPresence(sender, statusMsg, 0)
	return ok
}

// Reply is the bot's answer to a command.
type Reply struct {
	Body     string
	HTML     string
	MsgType  string
	Reaction string
}

// WaitReply waits for the bot's m.notice replying to eventID and its
// reaction.
func (s *Syncer) WaitReply(eventID id.EventID, timeout time.Duration) (Reply, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var reply Reply
		s.lock.Lock()
		for _, evt := range s.timeline {
			if evt.Sender != botFor(s.Client.UserID) {
				continue
			}
			var content struct {
				MsgType       string `json:"msgtype"`
				Body          string `json:"body"`
				FormattedBody string `json:"formatted_body"`
				RelatesTo     struct {
					InReplyTo struct {
						EventID id.EventID `json:"event_id"`
					} `json:"m.in_reply_to"`
					RelType string     `json:"rel_type"`
					EventID id.EventID `json:"event_id"`
					Key     string     `json:"key"`
				} `json:"m.relates_to"`
			}
			_ = json.Unmarshal(evt.Content.VeryRaw, &content)
			if evt.Type.Type == "m.room.message" && content.RelatesTo.InReplyTo.EventID == eventID {
				reply.Body, reply.HTML, reply.MsgType = content.Body, content.FormattedBody, content.MsgType
			}
			if evt.Type.Type == "m.reaction" && content.RelatesTo.EventID == eventID {
				reply.Reaction = content.RelatesTo.Key
			}
		}
		s.lock.Unlock()
		if reply.Body != "" && reply.Reaction != "" {
			return reply, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return Reply{}, fmt.Errorf("no reply from the bot to %s within %s", eventID, timeout)
}

// botNotices returns the bodies of the bot's messages that reply to no
// command (notices it posts of its own accord) and contain text, by
// msgtype. The caller holds the lock.
func (s *Syncer) botNotices(text string) (msgTypes, bodies []string) {
	for _, evt := range s.timeline {
		var content struct {
			MsgType   string `json:"msgtype"`
			Body      string `json:"body"`
			RelatesTo *struct {
				InReplyTo *struct{} `json:"m.in_reply_to"`
			} `json:"m.relates_to"`
		}
		_ = json.Unmarshal(evt.Content.VeryRaw, &content)
		if evt.Sender != botFor(s.Client.UserID) || evt.Type.Type != "m.room.message" || content.RelatesTo != nil || !strings.Contains(content.Body, text) {
			continue
		}
		msgTypes, bodies = append(msgTypes, content.MsgType), append(bodies, content.Body)
	}
	return msgTypes, bodies
}

// WaitBotNotice waits for a message the bot posts of its own accord (not
// a reply) whose body contains text, and returns its msgtype and body.
func (s *Syncer) WaitBotNotice(text string, timeout time.Duration) (msgType, body string, err error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		s.lock.Lock()
		types, bodies := s.botNotices(text)
		s.lock.Unlock()
		if len(bodies) > 0 {
			return types[0], bodies[0], nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "", "", fmt.Errorf("no message from the bot containing %q within %s", text, timeout)
}

// CountBotNotices counts the messages the bot posted of its own accord
// whose body contains text.
func (s *Syncer) CountBotNotices(text string) int {
	s.lock.Lock()
	defer s.lock.Unlock()
	_, bodies := s.botNotices(text)
	return len(bodies)
}

// CountReplies counts the bot's m.notice replies to eventID and its
// reactions to it.
func (s *Syncer) CountReplies(eventID id.EventID) (notices, reactions int) {
	s.lock.Lock()
	defer s.lock.Unlock()
	for _, evt := range s.timeline {
		if evt.Sender != botFor(s.Client.UserID) {
			continue
		}
		var content struct {
			RelatesTo struct {
				InReplyTo struct {
					EventID id.EventID `json:"event_id"`
				} `json:"m.in_reply_to"`
				EventID id.EventID `json:"event_id"`
			} `json:"m.relates_to"`
		}
		_ = json.Unmarshal(evt.Content.VeryRaw, &content)
		switch {
		case evt.Type.Type == "m.room.message" && content.RelatesTo.InReplyTo.EventID == eventID:
			notices++
		case evt.Type.Type == "m.reaction" && content.RelatesTo.EventID == eventID:
			reactions++
		}
	}
	return notices, reactions
}
