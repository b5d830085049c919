// Package encryption is the bot's end-to-end encryption: the one place that
// knows about mautrix's crypto machine, Olm and Megolm. The bot calls it
// through a few methods (start, decrypt a command, seal a reply, apply the
// trust policy); with encryption.enabled off it uses Off, which does
// nothing, so no other code checks whether encryption exists.
package encryption

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/sirupsen/logrus"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/crypto/goolm/libolmpickle"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/commands"
	"github.com/presence-router/presence-router/config"
	"github.com/presence-router/presence-router/logging"
	"github.com/presence-router/presence-router/store"
)

// DecryptWait is how long an admin's encrypted command whose keys have not
// arrived waits for them (the bot asks the sender's devices after
// FirstKeysWait) before it is answered ❌ "could not decrypt". It waits
// apart: the sender's later commands wait behind it, everyone else's go
// on. A message from a member who may not command waits for nothing.
const DecryptWait = 30 * time.Second

// FirstKeysWait is how long a command waits for its keys before the bot
// asks for them.
const FirstKeysWait = 5 * time.Second

// ErrOff is returned by Off's Decrypt: this service reads no encrypted
// message (encryption.enabled is off).
var ErrOff = errors.New("end-to-end encryption is off (encryption.enabled)")

// ErrKeysMissing wraps the error of a decryption whose keys never came.
var ErrKeysMissing = errors.New("the message's keys did not arrive")

// WithheldError is Decrypt's error when the sender's client withheld the
// message's keys from the bot's device (an m.room_key.withheld it sent),
// with its reason code.
type WithheldError struct {
	Code event.RoomKeyWithheldCode
}

func (e *WithheldError) Error() string {
	return fmt.Sprintf("the sender's client withheld the message's keys (%s)", e.Code)
}

// Component is the bot's encryption as the rest of the bot uses it.
type Component interface {
	// Start sets encryption up on connecting; what it runs in the
	// background runs until life ends. It is called on every connect.
	Start(ctx, life context.Context) error
	// Ready reports whether replies can be sent (sealed where needed).
	Ready() bool
	// ReadsEncrypted reports whether this service reads encrypted
	// messages at all.
	ReadsEncrypted() bool
	// Decrypt decrypts an encrypted event (ErrOff when it reads none), at
	// once: an error wrapping ErrKeysMissing says its keys are not here
	// (yet).
	Decrypt(ctx context.Context, log *logrus.Entry, evt *event.Event) (*event.Event, error)
	// RequestKeys asks the sender's devices for an encrypted event's keys.
	RequestKeys(ctx context.Context, evt *event.Event) error
	// AcceptIdentity trusts a user's new cross-signing identity (see
	// Machine.AcceptIdentity).
	AcceptIdentity(ctx context.Context, user id.UserID) (*Identity, error)
	// Seal returns what to send in room: the content, or its encryption.
	Seal(ctx context.Context, room id.RoomID, evtType event.Type, content any) (event.Type, any, error)
	// Refusal applies the trust policy to a command: why it is refused,
	// or "".
	Refusal(ctx context.Context, evt *event.Event, wasEncrypted bool) (string, error)
	// Wait waits for the background work to end once life ended.
	Wait()
}

var (
	_ Component = Off{}
	_ Component = (*Machine)(nil)
)

// Off is encryption turned off: it reads no encrypted message, sends
// everything as it is, and refuses nothing.
type Off struct{}

// Start does nothing.
func (Off) Start(context.Context, context.Context) error { return nil }

// Ready reports true: replies need no device.
func (Off) Ready() bool { return true }

// ReadsEncrypted reports false.
func (Off) ReadsEncrypted() bool { return false }

// Decrypt fails with ErrOff.
func (Off) Decrypt(context.Context, *logrus.Entry, *event.Event) (*event.Event, error) {
	return nil, ErrOff
}

// RequestKeys fails with ErrOff.
func (Off) RequestKeys(context.Context, *event.Event) error { return ErrOff }

// AcceptIdentity fails with ErrOff.
func (Off) AcceptIdentity(context.Context, id.UserID) (*Identity, error) { return nil, ErrOff }

// Seal returns the content as it is.
func (Off) Seal(_ context.Context, _ id.RoomID, evtType event.Type, content any) (event.Type, any, error) {
	return evtType, content, nil
}

// Refusal refuses nothing.
func (Off) Refusal(context.Context, *event.Event, bool) (string, error) { return "", nil }

// Wait returns at once.
func (Off) Wait() {}

// Options configure Machine.
type Options struct {
	Config *config.Config
	Store  *store.Store
	Log    *logrus.Entry
	// RecoveryKeyPath is where the recovery key of the bot's cross-signing
	// keys is written when they are made (never to the log).
	RecoveryKeyPath string
	// OnProblem is called for every warning or error of the encryption
	// device's library (for a metric); nil for none.
	OnProblem func()
	// RoomEncryption reads a room's m.room.encryption state from the
	// homeserver (nil when the room is not encrypted).
	RoomEncryption func(ctx context.Context, room id.RoomID) (*event.EncryptionEventContent, error)
}

// Machine is encryption turned on: a device of the bot's own, logged in
// once with the appservice's token and kept (its keys in the service's
// database, encrypted with encryption.pickle_key), and a /sync loop that
// only brings what encryption needs: to-device messages (room keys),
// device lists and the rooms' membership and encryption state. Commands
// still arrive through appservice transactions and the inbox.
type Machine struct {
	opts  Options
	botID id.UserID
	// up is set once Start succeeded.
	up   atomic.Pointer[device]
	done sync.WaitGroup
}

// device is what Start sets up.
type device struct {
	helper   *cryptohelper.CryptoHelper
	client   *mautrix.Client
	minTrust id.TrustState
}

// New returns the encryption component for the config: Off when
// encryption.enabled is off, else a Machine (which does no I/O until
// Start).
func New(opts Options) Component {
	if !opts.Config.Encryption.Enabled {
		return Off{}
	}
	return &Machine{opts: opts, botID: opts.Config.BotMXID()}
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

// Start sets up the bot's encryption device (once per process): logs it
// in on first use, loads its keys, cross-signs it on first start (logging
// the recovery key to a file once, for the operator's records), and starts the /sync
// loop under life, waiting for its first answer. Once it succeeded, later
// calls do nothing.
func (m *Machine) Start(ctx, life context.Context) error {
	if m.up.Load() != nil {
		return nil
	}
	cfg := m.opts.Config
	minTrust, err := cfg.Encryption.MinTrust()
	if err != nil {
		return err
	}
	cli, err := m.client(ctx)
	if err != nil {
		return err
	}
	helper, err := cryptohelper.NewCryptoHelper(cli, []byte(cfg.Encryption.PickleKey), m.opts.Store.DB())
	if err != nil {
		return fmt.Errorf("failed to set up encryption: %w", err)
	}
	if err = helper.Init(ctx); err != nil {
		return fmt.Errorf("failed to load the bot's encryption keys (is encryption.pickle_key the one they were made with?): %w", err)
	}
	if err = m.crossSignSelf(ctx, helper.Machine()); err != nil {
		return err
	}
	// Synapse answers 500 to a /sync of the appservice's sender: say why.
	probeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = cli.FullSyncRequest(probeCtx, mautrix.ReqSync{Timeout: 0, FilterID: `{"room":{"rooms":[]},"presence":{"not_types":["*"]}}`})
	cancel()
	if err != nil {
		return fmt.Errorf("the homeserver refused the encryption device's /sync (with encryption on, the registration's sender_localpart must be %s, not the bot: regenerate the registration with -g, load it in Synapse and restart Synapse): %w", cfg.SenderLocalpart(), err)
	}
	synced := make(chan struct{})
	var once sync.Once
	syncer := cli.Syncer.(*mautrix.DefaultSyncer)
	syncer.FilterJSON = syncFilter
	syncer.OnSync(func(context.Context, *mautrix.RespSync, string) bool {
		once.Do(func() { close(synced) })
		return true
	})
	loop, stop := context.WithCancel(life)
	m.done.Add(1)
	go func() {
		defer m.done.Done()
		for loop.Err() == nil {
			if err := cli.SyncWithContext(loop); err != nil && loop.Err() == nil {
				m.opts.Log.WithError(err).Warn("The encryption device's /sync stopped; restarting it")
				select {
				case <-loop.Done():
				case <-time.After(5 * time.Second):
				}
			}
		}
	}()
	select {
	case <-synced:
	case <-ctx.Done():
		stop() // the next try starts another
		return fmt.Errorf("failed to sync the encryption device: %w", ctx.Err())
	}
	_ = stop // the loop runs until life ends
	m.up.Store(&device{helper: helper, client: cli, minTrust: minTrust})
	m.opts.Log.WithFields(logrus.Fields{"device_id": cli.DeviceID, "verification_level": minTrust.String()}).Info("End-to-end encryption is on")
	return nil
}

// Wait waits for the /sync loop to end (after Start's life ended).
func (m *Machine) Wait() { m.done.Wait() }

// Ready reports whether the device is up, so that replies can be sealed.
func (m *Machine) Ready() bool { return m.up.Load() != nil }

// ReadsEncrypted reports true: encrypted commands are read (once the
// device is up).
func (m *Machine) ReadsEncrypted() bool { return true }

// problemLogInterval is how often at most one warning or error of the same
// text is logged for the encryption device: anyone can send it to-device
// messages that it cannot read, and each one is an error of the library.
const problemLogInterval = time.Minute

// deviceLogger is the encryption device's logger: its warnings and errors
// limited per message (the next one logged says how many were held back),
// each one counted with onProblem.
func deviceLogger(log *logrus.Logger, onProblem func()) zerolog.Logger {
	return logging.ZerologLimited(log, problemLogInterval, onProblem).With().Str("component", "crypto").Logger()
}

// client returns a client for the bot's encryption device: the one
// stored, logged in again (as the same device) if its token is no longer
// valid, or a new one, logged in with the appservice's token.
func (m *Machine) client(ctx context.Context) (*mautrix.Client, error) {
	cfg, st, log := m.opts.Config, m.opts.Store, m.opts.Log
	stored, ok, err := st.CryptoDevice(ctx)
	if err != nil {
		return nil, err
	}
	token := stored.AccessToken // stored in plain text before tokens were pickled
	if stored.PickledToken != "" {
		plain, err := libolmpickle.Unpickle([]byte(cfg.Encryption.PickleKey), []byte(stored.PickledToken))
		if err != nil {
			// Another pickle key: the device's keys will not open either.
			return nil, fmt.Errorf("failed to decrypt the encryption device's access token (was encryption.pickle_key changed?): %w", err)
		}
		token = string(plain)
	}
	cli, err := mautrix.NewClient(cfg.Homeserver.Address, m.botID, token)
	if err != nil {
		return nil, fmt.Errorf("failed to create the encryption client: %w", err)
	}
	cli.Log = deviceLogger(log.Logger, m.opts.OnProblem)
	cli.DefaultHTTPRetries = 0
	cli.DeviceID = stored.DeviceID
	if ok {
		if _, err = cli.Whoami(ctx); err == nil {
			if stored.PickledToken == "" {
				// Written by an earlier version: encrypt it now.
				return cli, m.storeDevice(ctx, stored.DeviceID, token)
			}
			return cli, nil
		} else if !errors.Is(err, mautrix.MUnknownToken) {
			return nil, fmt.Errorf("failed to check the encryption device's token: %w", err)
		}
		log.WithField("device_id", stored.DeviceID).Info("The encryption device's token is no longer valid; logging it in again")
	}
	cli.AccessToken = cfg.Appservice.ASToken
	resp, err := cli.Login(ctx, &mautrix.ReqLogin{
		Type:                     mautrix.AuthTypeAppservice,
		Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: m.botID.Localpart()},
		DeviceID:                 stored.DeviceID,
		InitialDeviceDisplayName: "presence-router",
		StoreCredentials:         true,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to log in the bot's encryption device: %w", err)
	}
	if err = m.storeDevice(ctx, resp.DeviceID, resp.AccessToken); err != nil {
		return nil, err
	}
	log.WithField("device_id", resp.DeviceID).Info("Logged in the bot's encryption device")
	return cli, nil
}

// storeDevice stores the encryption device with its access token
// encrypted with the pickle key, like the device's keys: the database alone
// does not give the token away.
func (m *Machine) storeDevice(ctx context.Context, device id.DeviceID, token string) error {
	pickled, err := libolmpickle.Pickle([]byte(m.opts.Config.Encryption.PickleKey), []byte(token))
	if err != nil {
		return fmt.Errorf("failed to encrypt the encryption device's access token: %w", err)
	}
	return m.opts.Store.SetCryptoDevice(ctx, store.CryptoDevice{DeviceID: device, PickledToken: string(pickled)})
}

// crossSignSelf makes the bot's cross-signing keys and signs its device
// with them, once: the recovery key is written to RecoveryKeyPath then,
// and never again.
func (m *Machine) crossSignSelf(ctx context.Context, mach *crypto.OlmMachine) error {
	if keys, err := mach.GetOwnCrossSigningPublicKeys(ctx); err == nil && keys != nil {
		return nil
	}
	recoveryKey, err := mach.GenerateAndVerifyWithRecoveryKey(ctx)
	if err != nil {
		return fmt.Errorf("failed to cross-sign the bot's device: %w", err)
	}
	// Never in the log (log pipelines keep it): in a file of its own,
	// readable by its owner only.
	text := "The recovery key of presence-router's cross-signing keys (" + string(m.botID) + "), made " +
		time.Now().UTC().Format(time.RFC3339) + ". Keep it in your records, then delete this file.\n\n" + recoveryKey + "\n"
	if err = config.WriteSecretFile(m.opts.RecoveryKeyPath, []byte(text)); err != nil {
		return fmt.Errorf("failed to write the bot's recovery key to %s: %w", m.opts.RecoveryKeyPath, err)
	}
	m.opts.Log.WithField("path", m.opts.RecoveryKeyPath).Warn("Made the bot's cross-signing keys and signed its device. Its recovery key is in this file (mode 0600), written once: keep it in your records, then delete the file")
	return nil
}

// Decrypt decrypts an encrypted command now; an error wrapping
// ErrKeysMissing says its keys are not here. Before the device is up it
// fails with ErrOff.
func (m *Machine) Decrypt(ctx context.Context, _ *logrus.Entry, evt *event.Event) (*event.Event, error) {
	d := m.up.Load()
	if d == nil {
		return nil, ErrOff
	}
	decrypted, err := d.helper.Decrypt(ctx, evt)
	var withheld *event.RoomKeyWithheldEventContent
	switch {
	case errors.As(err, &withheld):
		err = &WithheldError{Code: withheld.Code}
	case errors.Is(err, crypto.ErrNoSessionFound):
		err = fmt.Errorf("%w: %w", ErrKeysMissing, err)
	}
	return decrypted, err
}

// RequestKeys asks the sender's devices for the keys of evt's session.
func (m *Machine) RequestKeys(ctx context.Context, evt *event.Event) error {
	d := m.up.Load()
	if d == nil {
		return ErrOff
	}
	content := evt.Content.AsEncrypted()
	return d.helper.Machine().SendRoomKeyRequest(ctx, evt.RoomID, content.SenderKey, content.SessionID, "", map[id.UserID][]id.DeviceID{evt.Sender: {"*"}})
}

// roomEncrypted reports whether room is encrypted: as the state store
// knows it, or else as the homeserver says (and then remembered).
func (m *Machine) roomEncrypted(ctx context.Context, d *device, room id.RoomID) (bool, error) {
	states := d.client.StateStore
	if encrypted, err := states.IsEncrypted(ctx, room); err == nil && encrypted {
		return true, nil
	}
	content, err := m.opts.RoomEncryption(ctx, room)
	if err != nil || content == nil {
		return false, err
	}
	if err = states.SetEncryptionEvent(ctx, room, content); err != nil {
		return true, fmt.Errorf("failed to remember that %s is encrypted: %w", room, err)
	}
	return true, nil
}

// Seal returns what to send for content in room: content itself, or, in
// an encrypted room once the device is up, its encryption.
func (m *Machine) Seal(ctx context.Context, room id.RoomID, evtType event.Type, content any) (event.Type, any, error) {
	d := m.up.Load()
	if d == nil {
		return evtType, content, nil
	}
	encrypted, err := m.roomEncrypted(ctx, d, room)
	if err != nil || !encrypted {
		return evtType, content, err
	}
	sealed, err := d.helper.Encrypt(ctx, room, evtType, content)
	if err != nil {
		return evtType, nil, fmt.Errorf("failed to encrypt: %w", err)
	}
	return event.EventEncrypted, sealed, nil
}

// Refusal applies the trust policy of an encrypted control room to a
// command: it returns why the command is refused, or "". An unencrypted
// command there is refused, since it proves nothing about the device that
// sent it; an encrypted one must come from a device at
// encryption.verification_level or above.
func (m *Machine) Refusal(ctx context.Context, evt *event.Event, wasEncrypted bool) (string, error) {
	d := m.up.Load()
	if d == nil {
		return "", nil
	}
	if wasEncrypted {
		if evt.Mautrix.TrustState < d.minTrust && d.minTrust == id.TrustStateCrossSignedTOFU {
			if changed, err := identityChanged(ctx, d.helper.Machine().CryptoStore, evt.Sender); err != nil {
				return "", err
			} else if changed != nil {
				return changedIdentityRefusal(m.opts.Config.Bot.CommandPrefix, evt, changed), nil
			}
		}
		return trustRefusal(d.minTrust, evt), nil
	}
	encrypted, err := m.roomEncrypted(ctx, d, evt.RoomID)
	if err != nil || !encrypted {
		return "", err
	}
	return unencryptedRefusal, nil
}

// unencryptedRefusal refuses an unencrypted command in an encrypted room.
const unencryptedRefusal = "Refused: this room is end-to-end encrypted, and this command was not. An unencrypted message says nothing about the device that sent it, " +
	"so the trust policy (encryption.verification_level) cannot be checked: send commands encrypted."

// trustRefusal says why a decrypted command's device is below minTrust, or
// "" when it is not.
func trustRefusal(minTrust id.TrustState, evt *event.Event) string {
	trust := evt.Mautrix.TrustState
	if trust >= minTrust {
		return ""
	}
	dev := "an unknown device"
	if d := evt.Mautrix.TrustSource; d != nil {
		dev = "the device " + commands.Code(d.DeviceID)
	}
	return fmt.Sprintf("Refused: this command came from %s of %s, whose trust is %s; commands here need %s or more (encryption.verification_level). "+
		"Verify that device (cross-sign it from one of your verified sessions) and send the command again.",
		dev, commands.CodeUser(evt.Sender), commands.Code(trust.String()), commands.Code(minTrust.String()))
}

// ErrIdentityUnchanged is AcceptIdentity's error when the user's
// cross-signing identity is the one first seen: there is nothing to accept.
var ErrIdentityUnchanged = errors.New("the identity has not changed since presence-router first saw it")

// ErrNoIdentity is AcceptIdentity's error for a user the bot knows no
// cross-signing identity of.
var ErrNoIdentity = errors.New("presence-router knows no cross-signing identity of this user")

// Identity is a user's cross-signing identity as the bot knows it: the
// master key first seen (trusted on first use) and the one seen now.
type Identity struct {
	First, Current id.Ed25519
}

// identityChanged returns the identity of user when their master key is
// no longer the one first seen, or nil.
func identityChanged(ctx context.Context, cs crypto.Store, user id.UserID) (*Identity, error) {
	keys, err := cs.GetCrossSigningKeys(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("failed to read the cross-signing keys of %s: %w", user, err)
	}
	master, ok := keys[id.XSUsageMaster]
	if !ok || master.Key == master.First {
		return nil, nil
	}
	return &Identity{First: master.First, Current: master.Key}, nil
}

// changedIdentityRefusal refuses a command from a device signed by a
// cross-signing identity other than the one first seen, and says how an
// admin accepts the new one.
func changedIdentityRefusal(prefix string, evt *event.Event, changed *Identity) string {
	return fmt.Sprintf("Refused: %s's cryptographic identity changed since presence-router first saw it (their cross-signing master key was %s and is now %s), "+
		"as when they reset their identity in Element. If it was them, another admin runs %s (or, on the server, %s), and commands from their devices count again.",
		commands.CodeUser(evt.Sender), commands.Code(changed.First.String()), commands.Code(changed.Current.String()),
		commands.Code(prefix+" identity accept "+string(evt.Sender)), commands.Code("presence-router -c <config> --accept-identity "+string(evt.Sender)))
}

// acceptIdentity trusts user's current master key in cs from now on, in
// place of the one first seen; it runs in the caller's transaction when ctx
// carries one.
func acceptIdentity(ctx context.Context, cs crypto.Store, user id.UserID) (*Identity, error) {
	keys, err := cs.GetCrossSigningKeys(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("failed to read the cross-signing keys of %s: %w", user, err)
	}
	master, ok := keys[id.XSUsageMaster]
	if !ok {
		return nil, ErrNoIdentity
	}
	if master.Key == master.First {
		return nil, ErrIdentityUnchanged
	}
	if err = cs.ResetMasterKeyTOFU(ctx, user, master.Key); err != nil {
		return nil, fmt.Errorf("failed to accept the identity of %s: %w", user, err)
	}
	return &Identity{First: master.First, Current: master.Key}, nil
}

// AcceptIdentity trusts user's current cross-signing identity from now on
// (encryption.verification_level cross-signed-tofu then counts it as first
// seen). The caller records it in the audit log, in the same transaction.
func (m *Machine) AcceptIdentity(ctx context.Context, user id.UserID) (*Identity, error) {
	d := m.up.Load()
	if d == nil {
		return nil, ErrOff
	}
	return acceptIdentity(ctx, d.helper.Machine().CryptoStore, user)
}

// AcceptIdentityOffline is AcceptIdentity for the command line, with the
// service stopped or running: it works on the crypto store in st, where the
// bot keeps the keys it has seen.
func AcceptIdentityOffline(ctx context.Context, st *store.Store, pickleKey string, user id.UserID) (*Identity, error) {
	cs := crypto.NewSQLCryptoStore(st.DB(), dbutil.NoopLogger, "", "", []byte(pickleKey))
	return acceptIdentity(ctx, cs, user)
}
