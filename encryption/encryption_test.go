package encryption

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/config"
	"github.com/presence-router/presence-router/store"
)

func testConfig(enabled bool, homeserver string) *config.Config {
	cfg := &config.Config{}
	cfg.Homeserver.Address, cfg.Homeserver.Domain = homeserver, "test"
	cfg.Appservice.BotUsername, cfg.Appservice.ASToken = "presence", "as-token"
	cfg.Encryption.Enabled, cfg.Encryption.PickleKey = enabled, "pickle"
	cfg.Encryption.VerificationLevel = "cross-signed-tofu"
	return cfg
}

func TestNew_ChoosesByEncryptionEnabled(t *testing.T) {
	if _, off := New(Options{Config: testConfig(false, "")}).(Off); !off {
		t.Error("encryption.enabled off: not Off")
	}
	if _, on := New(Options{Config: testConfig(true, "")}).(*Machine); !on {
		t.Error("encryption.enabled on: not a Machine")
	}
}

// Both implementations before their device is up: nothing is read,
// everything is sent as it is, nothing is refused.
func TestComponent_BeforeTheDeviceIsUp(t *testing.T) {
	for name, c := range map[string]Component{"off": Off{}, "machine not started": New(Options{Config: testConfig(true, "")})} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			if _, err := c.Decrypt(ctx, logrus.NewEntry(logrus.New()), &event.Event{}); !errors.Is(err, ErrOff) {
				t.Errorf("Decrypt: %v, want ErrOff", err)
			}
			content := &event.MessageEventContent{Body: "hi"}
			typ, sent, err := c.Seal(ctx, "!room:test", event.EventMessage, content)
			if err != nil || typ != event.EventMessage || sent != content {
				t.Errorf("Seal: %v %v %v, want the content as it is", typ, sent, err)
			}
			if why, err := c.Refusal(ctx, &event.Event{}, false); why != "" || err != nil {
				t.Errorf("Refusal: %q %v, want none", why, err)
			}
			c.Wait()
		})
	}
	if !(Off{}).Ready() || (Off{}).ReadsEncrypted() {
		t.Error("Off must be ready and read nothing")
	}
	m := New(Options{Config: testConfig(true, "")})
	if m.Ready() || !m.ReadsEncrypted() {
		t.Error("a Machine must read encrypted messages and be ready only once started")
	}
}

func TestTrustRefusal_NamesTheDeviceAndTheLevels(t *testing.T) {
	device := &id.Device{UserID: "@admin:test", DeviceID: "PHONE"}
	tests := []struct {
		name  string
		trust id.TrustState
		min   id.TrustState
		want  []string
	}{
		{"at the level", id.TrustStateCrossSignedTOFU, id.TrustStateCrossSignedTOFU, nil},
		{"above the level", id.TrustStateVerified, id.TrustStateCrossSignedTOFU, nil},
		{"below the level", id.TrustStateUnset, id.TrustStateCrossSignedTOFU, []string{"the device `PHONE`", "`@admin:test`", "`unverified`", "`cross-signed-tofu`", "encryption.verification_level"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evt := &event.Event{Sender: "@admin:test"}
			evt.Mautrix.TrustState, evt.Mautrix.TrustSource = tt.trust, device
			got := trustRefusal(tt.min, evt)
			if (got == "") != (tt.want == nil) {
				t.Fatalf("refusal %q, want one: %v", got, tt.want != nil)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("refusal lacks %q: %s", w, got)
				}
			}
		})
	}
}

// A homeserver that refuses the device's login fails Start with an error
// that says so, and the component stays not ready (the next connect tries
// again).
func TestMachine_StartFailsClearlyWhenTheLoginIsRefused(t *testing.T) {
	var lock sync.Mutex
	var paths []string
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lock.Lock()
		paths = append(paths, r.URL.Path)
		lock.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"errcode":"M_FORBIDDEN","error":"no appservice login here"}`)
	}))
	defer hs.Close()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "e.db"), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m := New(Options{Config: testConfig(true, hs.URL), Store: st, Log: logrus.NewEntry(logrus.New())})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = m.Start(ctx, ctx)
	if err == nil || !strings.Contains(err.Error(), "failed to log in the bot's encryption device") {
		t.Fatalf("Start: %v, want the refused login", err)
	}
	if m.Ready() {
		t.Error("ready after a failed start")
	}
	lock.Lock()
	defer lock.Unlock()
	if len(paths) == 0 || !strings.HasSuffix(paths[len(paths)-1], "/login") {
		t.Errorf("requests %v, want a login last", paths)
	}
}

// 500 to-device messages the device cannot read, from one user, made 500
// error lines: now one, and all 500 are counted.
func TestDeviceLogger_AFloodOfBadMessagesIsLimitedAndCounted(t *testing.T) {
	log, hook := test.NewNullLogger()
	counted := 0
	dev := deviceLogger(log, func() { counted++ })
	for range 500 {
		dev.Error().Str("sender", "@mallory:test").Msg("Failed to decrypt to-device event")
	}
	dev.Info().Msg("Synced")
	if n := len(hook.AllEntries()); n != 2 {
		t.Errorf("%d log lines for 500 bad messages and one info line; want 2", n)
	}
	if counted != 500 {
		t.Errorf("counted %d problems, want 500", counted)
	}
	if e := hook.AllEntries()[0]; e.Level != logrus.ErrorLevel || e.Data["component"] != "crypto" {
		t.Errorf("first line %+v, want the error, of the crypto component", e)
	}
}

// The encryption device's access token is stored encrypted with the pickle
// key: the database does not hold it in plain text, a later start reads it
// back, a plain token stored by an earlier version is encrypted at the next
// start, and another pickle key fails with an error naming it.
func TestMachine_DeviceTokenIsStoredEncrypted(t *testing.T) {
	const token = "syt_secret_device_token_123"
	var lock sync.Mutex
	logins := 0
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lock.Lock()
		defer lock.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasSuffix(r.URL.Path, "/login"):
			logins++
			fmt.Fprintf(w, `{"user_id":"@presence:test","access_token":%q,"device_id":"DEV"}`, token)
		case strings.HasSuffix(r.URL.Path, "/whoami") && r.Header.Get("Authorization") == "Bearer "+token:
			fmt.Fprint(w, `{"user_id":"@presence:test","device_id":"DEV"}`)
		default:
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"errcode":"M_UNKNOWN_TOKEN","error":"unknown token"}`)
		}
	}))
	defer hs.Close()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "e.db"), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	machine := func(pickleKey string) *Machine {
		cfg := testConfig(true, hs.URL)
		cfg.Encryption.PickleKey = pickleKey
		return New(Options{Config: cfg, Store: st, Log: logrus.NewEntry(logrus.New())}).(*Machine)
	}
	atRest := func() string {
		var value string
		if err := st.DB().QueryRow(ctx, "SELECT value FROM meta WHERE key='crypto_device'").Scan(&value); err != nil {
			t.Fatal(err)
		}
		return value
	}
	check := func(step string, wantLogins int) {
		t.Helper()
		if v := atRest(); strings.Contains(v, token) || !strings.Contains(v, "pickled_access_token") {
			t.Errorf("%s: the database holds %s", step, v)
		}
		lock.Lock()
		defer lock.Unlock()
		if logins != wantLogins {
			t.Errorf("%s: %d logins, want %d", step, logins, wantLogins)
		}
	}
	if _, err = machine("pickle").client(ctx); err != nil {
		t.Fatal(err)
	}
	check("first start", 1)
	if _, err = machine("pickle").client(ctx); err != nil {
		t.Fatal(err)
	}
	check("second start (the stored token is read back)", 1)
	if err = st.SetCryptoDevice(ctx, store.CryptoDevice{DeviceID: "DEV", AccessToken: token}); err != nil {
		t.Fatal(err)
	}
	if _, err = machine("pickle").client(ctx); err != nil {
		t.Fatal(err)
	}
	check("a plain token of an earlier version", 1)
	if _, err = machine("another key").client(ctx); err == nil || !strings.Contains(err.Error(), "pickle_key") {
		t.Errorf("another pickle key: err %v, want one naming encryption.pickle_key", err)
	}
}
