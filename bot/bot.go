// Package bot is presence-router's Matrix side: it takes appservice
// transactions into a durable inbox, keeps the bot joined to the control
// room, checks permissions, runs chat commands against the store and the
// router, and replies.
package bot

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/config"
	"github.com/presence-router/presence-router/router"
	"github.com/presence-router/presence-router/store"
)

// Options wires a Bot to the rest of the service.
type Options struct {
	Config  *config.Config
	AS      *appservice.AppService
	Store   *store.Store
	Engine  *router.Engine
	Log     *logrus.Entry
	Metrics *Metrics // nil: no metrics
	// LastContact returns when the adapter last called the routing API.
	LastContact func() time.Time
}

// Bot is the appservice bot. Create it with New, then Start it.
type Bot struct {
	cfg         *config.Config
	as          *appservice.AppService
	store       *store.Store
	engine      *router.Engine
	log         *logrus.Entry
	metrics     *Metrics
	lastContact func() time.Time
	botID       id.UserID
	admins      map[id.UserID]struct{}
	started     time.Time
	caughtUpTo  time.Time // the timeline was read up to here (catchUpLoop only)

	wakeWorker  chan struct{}
	wakeConnect chan struct{}
	wakeCatchUp chan struct{}

	lock        sync.RWMutex
	controlRoom id.RoomID // set once the control room is resolved
	connected   atomic.Bool

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
		engine:      opts.Engine,
		log:         opts.Log,
		metrics:     opts.Metrics,
		lastContact: lastContact,
		botID:       opts.Config.BotMXID(),
		admins:      admins,
		started:     time.Now(),
		wakeWorker:  make(chan struct{}, 1),
		wakeConnect: make(chan struct{}, 1),
		wakeCatchUp: make(chan struct{}, 1),
	}
	if room := id.RoomID(opts.Config.Bot.ControlRoom); len(room) > 0 && room[0] == '!' {
		b.controlRoom = room
	}
	return b
}

// Start connects to the homeserver in the background (retrying with backoff
// while it is unreachable) and starts the command worker. It returns at once.
func (b *Bot) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	b.done.Add(3)
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
			err := b.connect(ctx)
			if err == nil {
				backoff = time.Second
				b.connected.Store(true)
				b.metrics.setConnected(true)
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

func (b *Bot) connect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	intent := b.as.BotIntent()
	if err := intent.EnsureRegistered(ctx); err != nil {
		return fmt.Errorf("failed to register bot user %s (is the registration file loaded by Synapse, and homeserver.address right?): %w", b.botID, err)
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
	b.log.WithField("room_id", room).Info("Joined the control room")
	pingCtx, pingCancel := context.WithTimeout(ctx, 10*time.Second)
	defer pingCancel()
	if _, err = intent.AppservicePing(pingCtx, b.as.Registration.ID, "presence-router-start-"+fmt.Sprint(time.Now().UnixNano())); err != nil {
		b.log.WithError(err).Warn("The homeserver could not reach presence-router: check appservice.address and that the registration's url points here")
	} else {
		b.log.Info("The homeserver reaches presence-router")
	}
	return nil
}

func (b *Bot) resolveControlRoom(ctx context.Context) (id.RoomID, error) {
	if room := b.ControlRoom(); room != "" {
		return room, nil
	}
	alias := id.RoomAlias(b.cfg.Bot.ControlRoom)
	resp, err := b.as.BotIntent().ResolveAlias(ctx, alias)
	if err != nil {
		return "", fmt.Errorf("failed to resolve control room alias %s (does it exist?): %w", alias, err)
	}
	b.setControlRoom(resp.RoomID)
	return resp.RoomID, nil
}
