//go:build e2e

package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
)

// TestEncryptedControlRoomIsNeverSilent turns on encryption in the control
// room, as Element does for every new private room: presence-router cannot
// read encrypted messages, and says so in the room (a plain-text notice),
// in its log, in status and in /_matrix/mau/ready.
func TestEncryptedControlRoomIsNeverSilent(t *testing.T) {
	e := startStack(t, false)
	const said = "cannot read encrypted messages"
	start := time.Now()
	if _, err := e.users["admin"].SendStateEvent(e.ctx, e.room, event.StateEncryption, "", &event.EncryptionEventContent{Algorithm: "m.megolm.v1.aes-sha2"}); err != nil {
		t.Fatal(err)
	}
	msgType, body, err := e.syncs["admin"].WaitBotNotice(said, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the bot's notice came %s after encryption was turned on: %q", time.Since(start).Round(time.Millisecond), body)
	if msgType != "m.notice" || !strings.Contains(body, "bot.control_room") {
		t.Errorf("notice is a %s that does not name bot.control_room: %q", msgType, body)
	}

	// An encrypted command, as Element would send it now: answered by
	// nothing new within the hour, but logged.
	if _, err = e.users["admin"].SendMessageEvent(e.ctx, e.room, event.EventEncrypted, map[string]any{
		"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEnACkc0…", "device_id": "ELEMENT", "sender_key": "k", "session_id": "s",
	}); err != nil {
		t.Fatal(err)
	}
	// A plain command still works, and status names the problem.
	status := e.command("admin", "!presence status")
	if !strings.Contains(status.Body, said) {
		t.Errorf("status does not name the problem: %q", status.Body)
	}
	resp, err := http.Get(e.stack.RouterURL + "/_matrix/mau/ready")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var ready struct {
		Problems []string `json:"problems"`
	}
	_ = json.Unmarshal(raw, &ready)
	if !strings.Contains(strings.Join(ready.Problems, "\n"), said) {
		t.Errorf("/_matrix/mau/ready does not name the problem: %s", raw)
	}
	if n := e.syncs["admin"].CountBotNotices(said); n != 1 {
		t.Errorf("the bot posted the notice %d times, want once within the hour", n)
	}
	if log := e.stack.Tail("presence-router.log", 200); strings.Count(log, "The control room is encrypted") < 2 {
		t.Errorf("presence-router's log does not report both the encryption event and the encrypted command:\n%s", log)
	}
}
