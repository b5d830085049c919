package bot

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/encryption"
)

func encrypted(eventID string, sender id.UserID) map[string]any {
	return map[string]any{
		"event_id": eventID, "room_id": testRoom, "sender": sender, "type": "m.room.encrypted", "origin_server_ts": 1,
		"content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEnAB…", "session_id": "s", "sender_key": "k", "device_id": "D"},
	}
}

func encryptionEvent(eventID string, sender id.UserID) map[string]any {
	return map[string]any{
		"event_id": eventID, "room_id": testRoom, "sender": sender, "type": "m.room.encryption", "state_key": "", "origin_server_ts": 1,
		"content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"},
	}
}

func encryptionNotices(tb *testBot) int {
	n := 0
	for _, e := range tb.hs.events("m.room.message") {
		if strings.Contains(body(e), "cannot read encrypted messages") {
			n++
		}
	}
	return n
}

func hasEncryptionProblem(b *Bot) bool {
	return slices.ContainsFunc(b.Problems(), func(p string) bool { return strings.Contains(p, "cannot read encrypted messages") })
}

// An encrypted control room is never met with silence: a plain notice in
// the room (at most once an hour, also across restarts), an error in the
// log, and the problem in status and /ready.
func TestBot_EncryptedControlRoomIsNeverSilent(t *testing.T) {
	t.Run("encryption turned on after the bot joined", func(t *testing.T) {
		tb := newTestBot(t, "", nil)
		if hasEncryptionProblem(tb.Bot) || encryptionNotices(tb) != 0 {
			t.Fatal("an unencrypted control room is reported as encrypted")
		}
		tb.deliver(t, "t1", hsToken, encryptionEvent("$enc", testAdmin))
		tb.waitFor(t, "the encryption notice", func() bool { return encryptionNotices(tb) == 1 })
		if !hasEncryptionProblem(tb.Bot) {
			t.Errorf("problems = %q, want the encryption problem", tb.Problems())
		}
		notice := tb.hs.events("m.room.message")[0]
		if notice.Content["msgtype"] != "m.notice" || !strings.Contains(body(notice), "bot.control_room") {
			t.Errorf("notice = %+v, want an m.notice naming bot.control_room", notice.Content)
		}
		// The encrypted commands that follow get no second notice within the hour.
		tb.deliver(t, "t2", hsToken, encrypted("$c1", testAdmin), encrypted("$c2", testAdmin))
		time.Sleep(200 * time.Millisecond)
		if n := encryptionNotices(tb); n != 1 {
			t.Errorf("%d notices within the hour, want 1", n)
		}
	})

	t.Run("an encrypted room found on joining, repeated after an hour, not after a restart", func(t *testing.T) {
		hs := newFakeHomeserver(t)
		hs.encrypted = true
		tb := newTestBotWith(t, "", nil, hs)
		tb.waitFor(t, "the encryption notice", func() bool { return encryptionNotices(tb) == 1 })
		if !hasEncryptionProblem(tb.Bot) {
			t.Errorf("problems = %q, want the encryption problem", tb.Problems())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		tb.Stop(ctx)
		cancel()
		_ = tb.store.Close()
		hs2 := newFakeHomeserver(t)
		hs2.encrypted = true
		tb2 := newTestBotWith(t, tb.dbPath, nil, hs2)
		tb2.waitFor(t, "the encryption problem", func() bool { return hasEncryptionProblem(tb2.Bot) })
		tb2.deliver(t, "t1", hsToken, encrypted("$c1", testAdmin))
		time.Sleep(200 * time.Millisecond)
		if n := encryptionNotices(tb2); n != 0 {
			t.Errorf("%d notices after a restart within the hour, want 0", n)
		}
		if err := tb2.store.SetEncryptionNoticeAt(context.Background(), time.Now().Add(-encryptionNoticeInterval-time.Minute)); err != nil {
			t.Fatal(err)
		}
		tb2.deliver(t, "t2", hsToken, encrypted("$c2", testAdmin))
		tb2.waitFor(t, "the notice an hour later", func() bool { return encryptionNotices(tb2) == 1 })
	})

	t.Run("the bot's own encrypted events do not count; a direct chat's is answered there", func(t *testing.T) {
		tb := newTestBot(t, "", nil)
		tb.openDirect(t, "!direct:test")
		mine := encrypted("$mine", "@presence:test")
		other := encrypted("$other", testMember)
		other["room_id"] = "!direct:test"
		remote := encrypted("$remote", "@far:elsewhere.org")
		remote["room_id"] = "!direct:test"
		tb.deliver(t, "t1", hsToken, mine, other, remote)
		replies := tb.replies(t, 1)
		time.Sleep(200 * time.Millisecond)
		if hasEncryptionProblem(tb.Bot) || len(tb.hs.events("m.room.message")) != 1 {
			t.Fatalf("the bot's own encrypted event or a remote user's was answered, or a direct chat made a control-room problem: %v", tb.Problems())
		}
		if r := replies[0]; r.Room != "!direct:test" || !strings.Contains(body(r), "encryption.enabled") {
			t.Errorf("the encrypted direct chat's answer: %s %q", r.Room, body(r))
		}
	})
}

// With encryption.enabled off, no crypto code runs: the bot's component is
// encryption.Off, and a control room full of encrypted events makes no
// request that only encryption makes (login of a device, keys, /sync,
// to-device messages).
func TestBot_EncryptionOffRunsNoCryptoPath(t *testing.T) {
	hs := newFakeHomeserver(t)
	hs.encrypted = true
	tb := newTestBotWith(t, "", nil, hs)
	if _, off := tb.enc.(encryption.Off); !off {
		t.Fatalf("the encryption component is %T with encryption.enabled off; want encryption.Off", tb.enc)
	}
	tb.deliver(t, "t1", hsToken, encryptionEvent("$enc", testAdmin), encrypted("$c1", testAdmin), encrypted("$c2", testMember))
	tb.waitFor(t, "the encryption notice", func() bool { return encryptionNotices(tb) == 1 })
	tb.deliver(t, "t2", hsToken, message("$plain", testAdmin, "!presence status"))
	tb.replies(t, 1)
	hs.lock.Lock()
	defer hs.lock.Unlock()
	for _, path := range hs.paths {
		for _, cryptoPath := range []string{"/login", "/keys/", "/sync", "/sendToDevice", "/account/whoami"} {
			if strings.Contains(path, cryptoPath) {
				t.Errorf("with encryption off the bot requested %s", path)
			}
		}
	}
}
