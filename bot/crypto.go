package bot

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/logging"
	"github.com/presence-router/presence-router/store"
)

// DecryptWait is how long an encrypted command whose keys have not arrived
// waits for them (asking the sender's devices after a few seconds) before
// it is answered ❌ "could not decrypt". Commands after it wait too: they
// are applied in order.
const DecryptWait = 30 * time.Second

// firstKeysWait is how long a command waits for its keys before the bot
// asks for them.
const firstKeysWait = 5 * time.Second

// botCrypto is the bot's end-to-end encryption: a device of its own, logged
// in once with the appservice's token and kept (its keys in the service's
// database, encrypted with encryption.pickle_key), and a /sync loop that
// only brings what encryption needs: to-device messages (room keys), device
// lists and the rooms' membership and encryption state. Commands still
// arrive through appservice transactions and the inbox.
type botCrypto struct {
	helper   *cryptohelper.CryptoHelper
	client   *mautrix.Client
	minTrust id.TrustState
	synced   chan struct{} // closed after the first /sync
	once     sync.Once
}

// syncFilter keeps the crypto device's /sync to what encryption needs.
var syncFilter = &mautrix.Filter{
	Presence:    &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
	AccountData: &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
	Room: &mautrix.RoomFilter{
		Timeline:    &mautrix.FilterPart{Types: []event.Type{event.StateMember, event.StateEncryption, event.StateHistoryVisibility}, Limit: 50},
		Ephemeral:   &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
		AccountData: &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
	},
}

// startCrypto sets up the bot's encryption device (once per process):
// logs it in on first use, loads its keys, cross-signs it on first start
// (logging the recovery key once, for the operator's records), and starts
// the /sync loop under life, waiting for its first answer.
func (b *Bot) startCrypto(ctx, life context.Context) error {
	if b.crypto.Load() != nil || !b.cfg.Encryption.Enabled {
		return nil
	}
	minTrust, err := b.cfg.Encryption.MinTrust()
	if err != nil {
		return err
	}
	cli, err := b.cryptoClient(ctx)
	if err != nil {
		return err
	}
	helper, err := cryptohelper.NewCryptoHelper(cli, []byte(b.cfg.Encryption.PickleKey), b.store.DB())
	if err != nil {
		return fmt.Errorf("failed to set up encryption: %w", err)
	}
	if err = helper.Init(ctx); err != nil {
		return fmt.Errorf("failed to load the bot's encryption keys (is encryption.pickle_key the one they were made with?): %w", err)
	}
	c := &botCrypto{helper: helper, client: cli, minTrust: minTrust, synced: make(chan struct{})}
	if err = b.crossSignSelf(ctx, helper.Machine()); err != nil {
		return err
	}
	// Synapse answers 500 to a /sync of the appservice's sender: say why.
	probeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = cli.FullSyncRequest(probeCtx, mautrix.ReqSync{Timeout: 0, FilterID: `{"room":{"rooms":[]},"presence":{"not_types":["*"]}}`})
	cancel()
	if err != nil {
		return fmt.Errorf("the homeserver refused the encryption device's /sync (with encryption on, the registration's sender_localpart must be %s, not the bot: regenerate the registration with -g, load it in Synapse and restart Synapse): %w", b.cfg.SenderLocalpart(), err)
	}
	syncer := cli.Syncer.(*mautrix.DefaultSyncer)
	syncer.FilterJSON = syncFilter
	syncer.OnSync(func(context.Context, *mautrix.RespSync, string) bool {
		c.once.Do(func() { close(c.synced) })
		return true
	})
	loop, stop := context.WithCancel(life)
	b.done.Add(1)
	go func() {
		defer b.done.Done()
		for loop.Err() == nil {
			if err := cli.SyncWithContext(loop); err != nil && loop.Err() == nil {
				b.log.WithError(err).Warn("The encryption device's /sync stopped; restarting it")
				select {
				case <-loop.Done():
				case <-time.After(5 * time.Second):
				}
			}
		}
	}()
	select {
	case <-c.synced:
	case <-ctx.Done():
		stop() // the next try starts another
		return fmt.Errorf("failed to sync the encryption device: %w", ctx.Err())
	}
	_ = stop // the loop runs until life ends
	b.crypto.Store(c)
	b.log.WithFields(logrus.Fields{"device_id": cli.DeviceID, "verification_level": minTrust.String()}).Info("End-to-end encryption is on")
	return nil
}

// cryptoClient returns a client for the bot's encryption device: the one
// stored, logged in again (as the same device) if its token is no longer
// valid, or a new one, logged in with the appservice's token.
func (b *Bot) cryptoClient(ctx context.Context) (*mautrix.Client, error) {
	device, ok, err := b.store.CryptoDevice(ctx)
	if err != nil {
		return nil, err
	}
	cli, err := mautrix.NewClient(b.cfg.Homeserver.Address, b.botID, device.AccessToken)
	if err != nil {
		return nil, fmt.Errorf("failed to create the encryption client: %w", err)
	}
	cli.Log = logging.Zerolog(b.log.Logger).With().Str("component", "crypto").Logger()
	cli.DefaultHTTPRetries = 0
	cli.DeviceID = device.DeviceID
	if ok {
		if _, err = cli.Whoami(ctx); err == nil {
			return cli, nil
		} else if !errors.Is(err, mautrix.MUnknownToken) {
			return nil, fmt.Errorf("failed to check the encryption device's token: %w", err)
		}
		b.log.WithField("device_id", device.DeviceID).Info("The encryption device's token is no longer valid; logging it in again")
	}
	cli.AccessToken = b.cfg.Appservice.ASToken
	resp, err := cli.Login(ctx, &mautrix.ReqLogin{
		Type:                     mautrix.AuthTypeAppservice,
		Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: b.botID.Localpart()},
		DeviceID:                 device.DeviceID,
		InitialDeviceDisplayName: "presence-router",
		StoreCredentials:         true,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to log in the bot's encryption device: %w", err)
	}
	if err = b.store.SetCryptoDevice(ctx, store.CryptoDevice{DeviceID: resp.DeviceID, AccessToken: resp.AccessToken}); err != nil {
		return nil, err
	}
	b.log.WithField("device_id", resp.DeviceID).Info("Logged in the bot's encryption device")
	return cli, nil
}

// crossSignSelf makes the bot's cross-signing keys and signs its device
// with them, once: the recovery key is logged then, and never again.
func (b *Bot) crossSignSelf(ctx context.Context, mach *crypto.OlmMachine) error {
	if keys, err := mach.GetOwnCrossSigningPublicKeys(ctx); err == nil && keys != nil {
		return nil
	}
	recoveryKey, err := mach.GenerateAndVerifyWithRecoveryKey(ctx)
	if err != nil {
		return fmt.Errorf("failed to cross-sign the bot's device: %w", err)
	}
	b.log.WithField("recovery_key", recoveryKey).Warn("Made the bot's cross-signing keys and signed its device. Keep this recovery key in your records: it is shown once, here")
	return nil
}

// decrypt decrypts an encrypted command, waiting up to DecryptWait for its
// keys.
func (c *botCrypto) decrypt(ctx context.Context, log *logrus.Entry, evt *event.Event) (*event.Event, error) {
	decrypted, err := c.helper.Decrypt(ctx, evt)
	if !errors.Is(err, crypto.ErrNoSessionFound) {
		return decrypted, err
	}
	content := evt.Content.AsEncrypted()
	log.WithField("session_id", content.SessionID).Info("Waiting for the keys of an encrypted command")
	mach := c.helper.Machine()
	if !mach.WaitForSession(ctx, evt.RoomID, content.SenderKey, content.SessionID, firstKeysWait) {
		err = mach.SendRoomKeyRequest(ctx, evt.RoomID, content.SenderKey, content.SessionID, "", map[id.UserID][]id.DeviceID{evt.Sender: {"*"}})
		if err != nil {
			log.WithError(err).Warn("Failed to ask for the keys of an encrypted command")
		}
		mach.WaitForSession(ctx, evt.RoomID, content.SenderKey, content.SessionID, DecryptWait-firstKeysWait)
	}
	return c.helper.Decrypt(ctx, evt)
}

// roomEncrypted reports whether room is encrypted: as the state store
// knows it, or else as the homeserver says (and then remembered).
func (b *Bot) roomEncrypted(ctx context.Context, c *botCrypto, room id.RoomID) (bool, error) {
	states := c.client.StateStore
	if encrypted, err := states.IsEncrypted(ctx, room); err == nil && encrypted {
		return true, nil
	}
	content, err := b.readRoomEncryption(ctx, room)
	if err != nil || content == nil {
		return false, err
	}
	if err = states.SetEncryptionEvent(ctx, room, content); err != nil {
		return true, fmt.Errorf("failed to remember that %s is encrypted: %w", room, err)
	}
	return true, nil
}

// sealed returns what to send for content in room: content itself, or, in
// an encrypted room with encryption on, its encryption.
func (b *Bot) sealed(ctx context.Context, room id.RoomID, evtType event.Type, content any) (event.Type, any, error) {
	c := b.crypto.Load()
	if c == nil {
		return evtType, content, nil
	}
	encrypted, err := b.roomEncrypted(ctx, c, room)
	if err != nil || !encrypted {
		return evtType, content, err
	}
	sealed, err := c.helper.Encrypt(ctx, room, evtType, content)
	if err != nil {
		return evtType, nil, fmt.Errorf("failed to encrypt: %w", err)
	}
	return event.EventEncrypted, sealed, nil
}

// distrust applies the trust policy of an encrypted control room (with
// encryption on) to a command: it returns why the command is refused, or
// "". An unencrypted command there is refused, since it proves nothing
// about the device that sent it; an encrypted one must come from a device
// at encryption.verification_level or above.
func (b *Bot) distrust(ctx context.Context, evt *event.Event, wasEncrypted bool) (string, error) {
	c := b.crypto.Load()
	if c == nil {
		return "", nil
	}
	if wasEncrypted {
		trust := evt.Mautrix.TrustState
		if trust >= c.minTrust {
			return "", nil
		}
		device := "an unknown device"
		if d := evt.Mautrix.TrustSource; d != nil {
			device = "the device " + code(d.DeviceID)
		}
		return fmt.Sprintf("Refused: this command came from %s of %s, whose trust is %s; commands here need %s or more (encryption.verification_level). "+
			"Verify that device (cross-sign it from one of your verified sessions) and send the command again.",
			device, codeUser(evt.Sender), code(trust.String()), code(c.minTrust.String())), nil
	}
	encrypted, err := b.roomEncrypted(ctx, c, evt.RoomID)
	if err != nil {
		return "", err
	}
	if encrypted {
		return "Refused: this room is end-to-end encrypted, and this command was not. An unencrypted message says nothing about the device that sent it, " +
			"so the trust policy (encryption.verification_level) cannot be checked: send commands encrypted.", nil
	}
	return "", nil
}
