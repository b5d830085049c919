// Package bot is presence-router's Matrix side: it takes appservice
// transactions into a durable inbox, keeps the bot joined to the control
// room, checks permissions, runs chat commands against the store and the
// router, and replies.
package bot

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/commands"
	"github.com/presence-router/presence-router/config"
	"github.com/presence-router/presence-router/encryption"
	"github.com/presence-router/presence-router/logging"
	"github.com/presence-router/presence-router/router"
	"github.com/presence-router/presence-router/rules"
	"github.com/presence-router/presence-router/store"
)

// Options wires a Bot to the rest of the service.
type Options struct {
	Config *config.Config
	AS     *appservice.AppService
	Store  *store.Store
	Engine *router.Engine
	// Follower applies the changes the bot commits to Engine, after any
	// that other processes committed before them.
	Follower Follower
	Log      *logrus.Entry
	// RecoveryKeyPath is where encryption writes the recovery key of the
	// bot's cross-signing keys when it makes them.
	RecoveryKeyPath string
	Metrics         *Metrics // nil: no metrics
	// LastContact returns when the adapter last called the routing API.
	LastContact func() time.Time
	// HomeserverCheckInterval is how often the bot checks that the
	// homeserver answers (0: every 5 s).
	HomeserverCheckInterval time.Duration
	// Encryption is the bot's encryption (nil: encryption.New from Config).
	Encryption encryption.Component
}

// Follower applies a change the bot committed to the router's engine
// (*follower.Follower).
type Follower interface {
	Committed(ctx context.Context, c *rules.Change) error
}

// Bot is the appservice bot. Create it with New, then Start it.
type Bot struct {
	cfg        *config.Config
	as         *appservice.AppService
	store      *store.Store
	follower   Follower
	log        *logrus.Entry
	metrics    *Metrics
	botID      id.UserID
	admins     map[id.UserID]struct{}
	runner     *commands.Runner
	enc        encryption.Component
	started    time.Time
	checkEvery time.Duration // see Options.HomeserverCheckInterval
	caughtUpTo time.Time     // the timeline was read up to here (catchUpLoop only)
	// refusals counts, by inbox item, how often the homeserver refused its
	// reply; dropped counts the replies dropped (workerLoop only).
	refusals map[int64]int
	dropped  int
	// skipped are the commands catch-up logged as skipped (catchUpLoop only).
	skipped map[id.EventID]struct{}

	// registered is set once connect has registered the bot's user: only
	// then may other goroutines send as the bot (see sender).
	registered atomic.Bool

	wakeWorker  chan struct{}
	wakeConnect chan struct{}
	wakeCatchUp chan struct{}

	lock        sync.RWMutex
	controlRoom id.RoomID         // set once the control room is resolved
	problems    map[string]string // what an operator must know, by topic
	authWarn    logging.Limiter   // rejected hs_tokens
	// undecryptable limits the log of ignored undecryptable messages.
	undecryptable logging.Limiter
	// directLimits rate-limits commands in direct chats (workerLoop only).
	directLimits directLimiter
	// parked are the inbox items waiting for their keys (workerLoop only).
	parked    map[int64]*parkedItem
	connected atomic.Bool
	// homeserverUp is whether the homeserver answered the last check.
	homeserverUp atomic.Bool
	// metricLock orders the connection metric's updates, which read both
	// connected and homeserverUp.
	metricLock sync.Mutex

	cancel context.CancelFunc
	done   sync.WaitGroup
}

// New creates a Bot. It does no I/O.
func New(opts Options) *Bot {
	admins := make(map[id.UserID]struct{}, len(opts.Config.Bot.Admins))
	for _, admin := range opts.Config.Bot.Admins {
		admins[admin] = struct{}{}
	}
	lastContact := opts.LastContact
	if lastContact == nil {
		lastContact = func() time.Time { return time.Time{} }
	}
	b := &Bot{
		cfg:         opts.Config,
		as:          opts.AS,
		store:       opts.Store,
		follower:    opts.Follower,
		log:         opts.Log,
		metrics:     opts.Metrics,
		botID:       opts.Config.BotMXID(),
		admins:      admins,
		started:     time.Now(),
		checkEvery:  cmp.Or(opts.HomeserverCheckInterval, homeserverCheckInterval),
		wakeWorker:  make(chan struct{}, 1),
		wakeConnect: make(chan struct{}, 1),
		wakeCatchUp: make(chan struct{}, 1),
		problems:    map[string]string{},
		skipped:     map[id.EventID]struct{}{},
		refusals:    map[int64]int{},
		parked:      map[int64]*parkedItem{},
	}
	b.runner = &commands.Runner{
		Prefix: opts.Config.Bot.CommandPrefix, Domain: opts.Config.Homeserver.Domain,
		Store: opts.Store, Engine: opts.Engine, Service: b, LastContact: lastContact, Started: b.started,
	}
	b.enc = opts.Encryption
	if b.enc == nil {
		b.enc = encryption.New(encryption.Options{Config: opts.Config, Store: opts.Store, Log: opts.Log, RecoveryKeyPath: opts.RecoveryKeyPath, OnProblem: opts.Metrics.countEncryptionProblem, RoomEncryption: b.readRoomEncryption})
	}
	return b
}

// Problem topics.
const (
	problemControlRoom = "control_room"
	problemPowerLevel  = "admin_power_level"
)

// setProblem records (or, with an empty text, clears) a problem an operator
// must know about; it shows in status and in /_matrix/mau/ready.
func (b *Bot) setProblem(topic, text string) {
	b.lock.Lock()
	defer b.lock.Unlock()
	if text == "" {
		delete(b.problems, topic)
	} else {
		b.problems[topic] = text
	}
}

// Problems returns what an operator must know about, sorted.
func (b *Bot) Problems() []string {
	b.lock.RLock()
	defer b.lock.RUnlock()
	out := make([]string, 0, len(b.problems))
	for _, text := range b.problems {
		out = append(out, text)
	}
	slices.Sort(out)
	return out
}

// Start starts the bot's four loops in the background and returns at once:
// connecting to the homeserver (retrying with backoff while it is
// unreachable), checking that the homeserver answers, catching up on
// undelivered commands, and the command worker.
func (b *Bot) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	// mautrix makes the bot's intent on first use, unlocked: make it here,
	// before the loops use it at once.
	b.intent()
	b.done.Add(4)
	go func() {
		defer b.done.Done()
		b.homeserverLoop(ctx)
	}()
	go func() {
		defer b.done.Done()
		b.connectLoop(ctx)
	}()
	go func() {
		defer b.done.Done()
		b.catchUpLoop(ctx)
	}()
	go func() {
		defer b.done.Done()
		b.workerLoop(ctx)
	}()
}

// Stop stops the background work and waits for it, at most until ctx ends.
func (b *Bot) Stop(ctx context.Context) {
	if b.cancel == nil {
		return
	}
	b.cancel()
	finished := make(chan struct{})
	go func() {
		b.done.Wait()
		b.enc.Wait()
		close(finished)
	}()
	select {
	case <-finished:
	case <-ctx.Done():
		b.log.Warn("Bot did not stop in time")
	}
}

// Connected reports whether the bot is registered and in the control room.
func (b *Bot) Connected() bool {
	return b.connected.Load()
}

// setConnected records whether the bot is connected, for Connected and the
// connection metric (which is 1 only while the homeserver answers, too).
func (b *Bot) setConnected(connected bool) {
	b.connected.Store(connected)
	b.updateConnectedMetric()
}

// updateConnectedMetric sets the connection metric from connected and
// homeserverUp.
func (b *Bot) updateConnectedMetric() {
	b.metricLock.Lock()
	defer b.metricLock.Unlock()
	b.metrics.setConnected(b.connected.Load() && b.homeserverUp.Load())
}

// ControlRoom returns the control room's ID, or "" while it is unresolved.
func (b *Bot) ControlRoom() id.RoomID {
	b.lock.RLock()
	defer b.lock.RUnlock()
	return b.controlRoom
}

func (b *Bot) setControlRoom(room id.RoomID) {
	b.lock.Lock()
	defer b.lock.Unlock()
	b.controlRoom = room
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// connectLoop registers the bot, resolves and joins the control room, and
// checks that the homeserver can reach us. It retries with backoff, and runs
// again whenever wakeConnect is signalled (e.g. the bot was invited or left).
func (b *Bot) connectLoop(ctx context.Context) {
	backoff := time.Second
	for {
		if !b.connected.Load() {
			err := b.connect(ctx, ctx)
			if err == nil {
				backoff = time.Second
				b.setConnected(true)
				signal(b.wakeWorker)
				signal(b.wakeCatchUp)
			} else if ctx.Err() == nil {
				b.log.WithError(err).WithField("retry_in", backoff.String()).Warn("Not connected to the homeserver yet")
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				case <-b.wakeConnect:
				}
				backoff = min(backoff*2, time.Minute)
				continue
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-b.wakeConnect:
		}
	}
}

// connect connects the bot; what it starts in the background (the
// encryption device's /sync) runs until life ends.
func (b *Bot) connect(ctx, life context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	intent := b.intent()
	if err := intent.EnsureRegistered(ctx); err != nil {
		return fmt.Errorf("failed to register bot user %s (is the registration file loaded by Synapse, and homeserver.address right?): %w", b.botID, err)
	}
	b.registered.Store(true)
	if err := b.enc.Start(ctx, life); err != nil {
		return err
	}
	room, err := b.resolveControlRoom(ctx)
	if err != nil {
		return err
	}
	if _, err = intent.JoinRoomByID(ctx, room); err != nil {
		if errors.Is(err, mautrix.MForbidden) {
			return fmt.Errorf("failed to join control room %s: invite %s to it: %w", b.cfg.Bot.ControlRoom, b.botID, err)
		}
		return fmt.Errorf("failed to join control room %s: %w", b.cfg.Bot.ControlRoom, err)
	}
	if err = b.store.PinControlRoom(ctx, room); err != nil {
		return err
	}
	b.log.WithField("room_id", room).Info("Joined the control room")
	if err = b.checkTombstone(ctx, b.log.WithField("room_id", room)); err != nil {
		b.log.WithError(err).Warn("Failed to check whether the control room was upgraded")
	}
	room = b.ControlRoom()
	b.checkRoomEncryption(ctx, b.log.WithField("room_id", room))
	if pl, err := b.readPowerLevels(ctx, room); err != nil {
		b.log.WithError(err).Warn("Failed to read the control room's power levels")
	} else {
		b.checkPowerLevelFloor(pl)
	}
	pingCtx, pingCancel := context.WithTimeout(ctx, 10*time.Second)
	defer pingCancel()
	if _, err = intent.AppservicePing(pingCtx, b.as.Registration.ID, "presence-router-start-"+fmt.Sprint(time.Now().UnixNano())); err != nil {
		b.log.WithError(err).Warn("The homeserver could not reach presence-router: check appservice.address and that the registration's url points here")
	} else {
		b.log.Info("The homeserver reaches presence-router")
	}
	return nil
}

// resolveControlRoom decides which room is the control room. The room the
// bot first joined is pinned in the database: when bot.control_room is an
// alias that now points elsewhere (whoever may change the alias could
// otherwise take the bot over), the bot stays in the pinned room and
// reports the conflict. Setting bot.control_room to a room ID moves the
// pin deliberately.
func (b *Bot) resolveControlRoom(ctx context.Context) (id.RoomID, error) {
	if room := b.ControlRoom(); room != "" {
		return room, nil
	}
	pinned, havePin, err := b.store.ControlRoom(ctx)
	if err != nil {
		return "", err
	}
	configured := b.cfg.Bot.ControlRoom
	if room := id.RoomID(configured); strings.HasPrefix(configured, "!") {
		if upgraded, err := b.upgradedFrom(ctx, room); err != nil {
			return "", err
		} else if havePin && upgraded {
			b.log.WithFields(logrus.Fields{"configured_room_id": room, "pinned_room_id": pinned}).
				Info("bot.control_room names a room the control room was upgraded from; staying in the pinned replacement (set bot.control_room to it)")
			b.setControlRoom(pinned)
			return pinned, nil
		}
		if havePin && pinned != room {
			b.log.WithFields(logrus.Fields{"pinned_room_id": pinned, "room_id": room}).Warn("Moving the control room to the room ID in bot.control_room")
		}
		b.setControlRoom(room)
		return room, nil
	}
	alias := id.RoomAlias(configured)
	resp, err := b.intent().ResolveAlias(ctx, alias)
	switch {
	case err != nil && !havePin:
		return "", fmt.Errorf("failed to resolve control room alias %s (does it exist?): %w", alias, err)
	case err != nil:
		b.log.WithError(err).WithFields(logrus.Fields{"alias": alias, "pinned_room_id": pinned}).Warn("Failed to resolve the control room alias; staying in the pinned control room")
	case havePin && resp.RoomID != pinned && b.wasUpgradedFrom(ctx, resp.RoomID):
		b.log.WithFields(logrus.Fields{"alias": alias, "alias_room_id": resp.RoomID, "pinned_room_id": pinned}).
			Info("bot.control_room points to a room the control room was upgraded from; staying in the pinned replacement")
	case havePin && resp.RoomID != pinned:
		msg := fmt.Sprintf("bot.control_room %s now points to %s, but the control room is pinned to %s, where presence-router stays. "+
			"Whoever changed the alias could otherwise have taken over the bot. If the move is deliberate, set bot.control_room to %s and restart.",
			alias, resp.RoomID, pinned, resp.RoomID)
		b.log.WithFields(logrus.Fields{"alias": alias, "alias_room_id": resp.RoomID, "pinned_room_id": pinned}).Error(msg)
		b.setProblem(problemControlRoom, msg)
	case !havePin:
		pinned = resp.RoomID
	}
	b.setControlRoom(pinned)
	return pinned, nil
}

// intent is the bot's way of acting on the homeserver. The bot is the
// appservice's sender user, or, with encryption on, a user of its namespace
// (Synapse serves no /sync to the sender, and the bot's encryption device
// needs one).
func (b *Bot) intent() *appservice.IntentAPI { return b.as.Intent(b.botID) }

// errNotRegistered is sender's error before connect registered the bot:
// a reply waits (it is retried once connected).
var errNotRegistered = errors.New("the bot is not registered with the homeserver yet")

// sender is the bot's intent for sending, once connect has registered the
// bot. mautrix's intent reads whether it is registered unlocked when it
// sends (to a room it does not know it is in) while connect's registration
// writes it: sending only after that write keeps them apart.
func (b *Bot) sender() (*appservice.IntentAPI, error) {
	if !b.registered.Load() {
		return nil, errNotRegistered
	}
	return b.intent(), nil
}
