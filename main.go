// Command presence-router is a Matrix appservice that keeps Synapse's
// presence routing lists (always-send and blacklist) live: admins change them
// by chat command in a control room, and the Synapse adapter module asks the
// routing API where presence goes.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"github.com/sirupsen/logrus"
	flag "github.com/spf13/pflag"
	"go.mau.fi/util/exhttp"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/bot"
	"github.com/presence-router/presence-router/config"
	"github.com/presence-router/presence-router/encryption"
	"github.com/presence-router/presence-router/follower"
	"github.com/presence-router/presence-router/importer"
	"github.com/presence-router/presence-router/learner"
	"github.com/presence-router/presence-router/listfile"
	"github.com/presence-router/presence-router/logging"
	"github.com/presence-router/presence-router/router"
	"github.com/presence-router/presence-router/rules"
	"github.com/presence-router/presence-router/store"
	"github.com/presence-router/presence-router/userid"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

// cliFlags are the command-line flags.
type cliFlags struct {
	configPath, registrationPath, importPath *string
	dataDir, acceptIdentity                  *string
	generate, showVersion, dryRun            *bool
}

func newFlags(fs *flag.FlagSet) cliFlags {
	return cliFlags{
		configPath:       fs.StringP("config", "c", "config.yaml", "Path to the configuration file."),
		generate:         fs.BoolP("generate-registration", "g", false, "Write an appservice registration with fresh tokens (and put the tokens into the config file), then exit."),
		registrationPath: fs.StringP("registration", "r", "registration.yaml", "Where -g writes the appservice registration."),
		importPath:       fs.String("import-synapse-config", "", "Import always_send_to_users and blacklisted_users from a Synapse homeserver.yaml that uses the stock example presence router, then exit."),
		showVersion:      fs.Bool("version", false, "Print the version and exit."),
		dryRun:           fs.Bool("dry-run", false, "With import: say what the file would change, and change nothing."),
		acceptIdentity:   fs.String("accept-identity", "", "Trust this user's new cross-signing identity in the encrypted control room (after they reset it in their client), as the chat command identity accept does, for when no other admin can run it; recorded in history; then exit."),
		dataDir:          fs.String("data-dir", "", "Run as the container image does, with config.yaml, registration.yaml and the database in this directory: the first start writes a config to edit, the next one the registration, then it runs."),
	}
}

// serverTimeouts bound how long a connection may hold a listener's
// resources.
type serverTimeouts struct {
	// ReadHeader and Read bound reading a request's headers and all of it.
	ReadHeader, Read time.Duration
	// Write bounds writing the answer, counted from the end of the request's
	// headers: above the change feed's longest poll (60 s).
	Write time.Duration
	// Idle closes a kept-alive connection that sends no new request.
	Idle time.Duration
}

var defaultServerTimeouts = serverTimeouts{
	ReadHeader: 10 * time.Second,
	Read:       30 * time.Second,
	Write:      router.MaxPollTimeout + 30*time.Second,
	Idle:       90 * time.Second,
}

// newHTTPServer returns a server for handler whose requests' contexts derive
// from base (cancelled at shutdown, so that long polls end at once).
func newHTTPServer(handler http.Handler, base context.Context, t serverTimeouts) *http.Server {
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Read,
		WriteTimeout:      t.Write,
		IdleTimeout:       t.Idle,
		BaseContext:       func(net.Listener) context.Context { return base },
	}
}

func main() {
	f := newFlags(flag.CommandLine)
	flag.Parse()
	configPath, registrationPath, importPath := f.configPath, f.registrationPath, f.importPath
	generate, showVersion := f.generate, f.showVersion

	if *showVersion {
		fmt.Println("presence-router", versionString())
		return
	}
	var err error
	if *f.dataDir != "" {
		var run bool
		if *configPath, run, err = containerStart(*f.dataDir, os.Stdout); err != nil || !run {
			if err != nil {
				fmt.Fprintln(os.Stderr, "presence-router:", err)
				os.Exit(1)
			}
			return
		}
	}
	args := flag.Args()
	switch {
	case len(args) > 0 && args[0] == "export":
		err = runExportLists(*configPath)
	case len(args) > 0 && args[0] == "import":
		if len(args) != 2 {
			err = errors.New("import takes one file: presence-router import -c config.yaml FILE [--dry-run]")
		} else {
			err = runImportLists(*configPath, args[1], *f.dryRun)
		}
	case len(args) > 0:
		err = fmt.Errorf("unknown command %q: the commands are export and import (see --help)", args[0])
	case *generate:
		err = generateRegistration(*configPath, *registrationPath)
	case *importPath != "":
		err = runImport(*configPath, *importPath)
	case *f.acceptIdentity != "":
		err = runAcceptIdentity(*configPath, *f.acceptIdentity)
	default:
		err = run(*configPath)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "presence-router:", err)
		os.Exit(1)
	}
}

func versionString() string {
	if info, ok := debug.ReadBuildInfo(); ok && Version == "dev" {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return Version + "+" + s.Value[:12]
			}
		}
	}
	return Version
}

// loadConfig loads and validates the config, reads the router token (once:
// an unreadable router.token_file stops the start) and sets up logging.
func loadConfig(path string) (*config.Config, *logrus.Logger, string, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, nil, "", err
	}
	if err = cfg.Validate(); err != nil {
		return nil, nil, "", fmt.Errorf("invalid config %s: %w", path, err)
	}
	token, err := cfg.RouterToken()
	if err != nil {
		return nil, nil, "", fmt.Errorf("invalid config %s: %w", path, err)
	}
	log, err := logging.New(os.Stderr, cfg.Logging.Level, cfg.Logging.Format)
	if err != nil {
		return nil, nil, "", err
	}
	redactor := logging.Redact(log)
	redactor.Add(cfg.Appservice.ASToken, cfg.Appservice.HSToken, token)
	redactor.Add(store.URIPassword(cfg.Database.URI)...)
	return cfg, log, token, nil
}

// openStore opens the configured database; its errors name the key.
func openStore(ctx context.Context, cfg *config.Config, log zerolog.Logger) (*store.Store, error) {
	var st *store.Store
	var err error
	if cfg.Database.Type == config.DatabasePostgres {
		st, err = store.OpenPostgres(ctx, cfg.Database.URI, log)
	} else {
		st, err = store.Open(ctx, cfg.Database.Path, log)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.Database.Key(), err)
	}
	return st, nil
}

// withStore loads the config at configPath, opens its database, and runs
// fn with them: the one-shot commands (import, export, --accept-identity).
func withStore(configPath string, fn func(ctx context.Context, cfg *config.Config, st *store.Store) error) error {
	cfg, log, _, err := loadConfig(configPath)
	if err != nil {
		return err
	}
	ctx := context.Background()
	st, err := openStore(ctx, cfg, logging.Zerolog(log))
	if err != nil {
		return err
	}
	defer st.Close()
	return fn(ctx, cfg, st)
}

func runImport(configPath, homeserverYAML string) error {
	return withStore(configPath, func(ctx context.Context, _ *config.Config, st *store.Store) error {
		res, err := importer.Import(ctx, st, homeserverYAML)
		if err != nil {
			return err
		}
		fmt.Println(res.Summary())
		return nil
	})
}

// runExportLists is `export`: both lists with their reasons, as a lists
// file (listfile), to stdout.
func runExportLists(configPath string) error {
	return withStore(configPath, func(ctx context.Context, _ *config.Config, st *store.Store) error {
		var entries []rules.ListEntry
		var version int64
		err := st.InTxn(ctx, func(ctx context.Context) error {
			var err error
			if entries, err = st.Export(ctx); err != nil {
				return err
			}
			version, err = st.Version(ctx)
			return err
		})
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
		return listfile.Write(os.Stdout, entries, version, time.Now())
	})
}

// runImportLists is `import FILE`: the lists become what the file says, in
// one audited change (with dryRun, it only says what would change). A
// running service follows it as any other process's change.
func runImportLists(configPath, path string, dryRun bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	want, err := listfile.Read(data)
	if err != nil {
		return fmt.Errorf("import: %s: %w", path, err)
	}
	return withStore(configPath, func(ctx context.Context, _ *config.Config, st *store.Store) error {
		var res rules.Result
		err := st.InTxn(ctx, func(ctx context.Context) error {
			have, err := st.Export(ctx)
			if err != nil {
				return err
			}
			m := rules.Mutation{Sender: cliSender, Command: "import " + filepath.Base(path), DryRun: dryRun, Reasons: map[rules.Entry]string{}}
			m.Entries = importEntries(have, want)
			for _, e := range want.Entries {
				m.Reasons[rules.Entry{List: e.List, UserID: e.UserID, Action: rules.Add}] = e.Reason
			}
			res, err = st.Apply(ctx, m)
			return err
		})
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		fmt.Println(importSummary(res, dryRun))
		return nil
	})
}

// importEntries are the entries that make the lists (have) what a file
// says (want): each wanted entry added (a group's entry before its
// members), each other one removed. A file that says nothing of groups
// leaves them as they are; a group the file lacks is deleted by its entry
// alone (the store removes its members).
func importEntries(have []rules.ListEntry, want listfile.Lists) []rules.Entry {
	var entries []rules.Entry
	wanted := map[rules.Entry]bool{}
	for _, e := range want.Entries {
		add := rules.Entry{List: e.List, UserID: e.UserID, Action: rules.Add}
		wanted[add] = true
		entries = append(entries, add)
	}
	for _, e := range have {
		name, group := e.List.Group()
		switch {
		case wanted[rules.Entry{List: e.List, UserID: e.UserID, Action: rules.Add}]:
		case group && !want.Groups:
		case group && e.UserID != "" && !wanted[rules.GroupEntry(name, rules.Add)]:
			// Its group goes: deleting it removes its members.
		default:
			entries = append(entries, rules.Entry{List: e.List, UserID: e.UserID, Action: rules.Remove})
		}
	}
	return entries
}

// importSummary says what an import changed (or would change).
func importSummary(res rules.Result, dryRun bool) string {
	var added, removed [4]int // always-send, blacklist, groups, group members
	if res.Change != nil {
		for _, e := range res.Change.Entries {
			i := 0
			switch _, group := e.List.Group(); {
			case group && e.UserID == "":
				i = 2
			case group:
				i = 3
			case e.List == rules.Blacklist:
				i = 1
			}
			if e.Action == rules.Add {
				added[i]++
			} else {
				removed[i]++
			}
		}
	}
	kept := 0
	for _, e := range res.Unchanged {
		if e.Action == rules.Add {
			kept++
		}
	}
	prefix := "Imported:"
	if dryRun {
		prefix = "Dry run: the import would change"
	}
	text := fmt.Sprintf("%s always-send +%d -%d, blacklist +%d -%d, groups +%d -%d, group members +%d -%d; %d entries already as the file says.",
		prefix, added[0], removed[0], added[1], removed[1], added[2], removed[2], added[3], removed[3], kept)
	switch {
	case dryRun:
		text += " Nothing was changed."
	case res.Change != nil:
		text += fmt.Sprintf(" Version %d (in history; a running presence-router follows it).", res.Change.Version)
	default:
		text += " Nothing to change."
	}
	return text
}

// cliSender is the sender of what the command line records in history.
const cliSender = id.UserID("(command line)")

// runAcceptIdentity is --accept-identity: the user's current cross-signing
// identity, as the bot last saw it, is trusted from now on, and that is
// recorded in history, in one transaction. It works with the service
// running or stopped.
func runAcceptIdentity(configPath, user string) error {
	userID, err := userid.Parse(user)
	if err != nil {
		return fmt.Errorf("--accept-identity: %w", err)
	}
	return withStore(configPath, func(ctx context.Context, cfg *config.Config, st *store.Store) error {
		if !cfg.Encryption.Enabled {
			return errors.New("--accept-identity: encryption.enabled is off: commands are not checked against identities, so there is none to accept")
		}
		var identity *encryption.Identity
		var change *rules.Change
		err := st.InTxn(ctx, func(ctx context.Context) error {
			var err error
			if identity, err = encryption.AcceptIdentityOffline(ctx, st, cfg.Encryption.PickleKey, userID); err != nil {
				return err
			}
			change, err = st.Record(ctx, rules.Mutation{Sender: cliSender,
				Command: fmt.Sprintf("accepted the new identity of %s (cross-signing master key %s, first seen %s)", userID, identity.Current, identity.First)})
			return err
		})
		switch {
		case errors.Is(err, encryption.ErrIdentityUnchanged):
			return fmt.Errorf("--accept-identity: %s's identity has not changed since presence-router first saw it: nothing to accept", userID)
		case errors.Is(err, encryption.ErrNoIdentity):
			return fmt.Errorf("--accept-identity: presence-router has seen no cross-signing identity of %s (their keys reach it when they share the encrypted control room)", userID)
		case err != nil:
			return fmt.Errorf("--accept-identity: %w", err)
		}
		fmt.Printf("Accepted %s's new identity: cross-signing master key %s (first seen was %s). Compare it with what their client shows. Commands from devices it signs count again. Recorded in history as version %d.\n",
			userID, identity.Current, identity.First, change.Version)
		return nil
	})
}

// warnUnknownKeys warns about each key of the config that presence-router
// does not know (and so ignores), naming the nearest known one.
func warnUnknownKeys(log *logrus.Logger, configPath string, data []byte) {
	unknown, err := config.UnknownKeys(data)
	if err != nil {
		return // loadConfig reported it
	}
	for _, key := range unknown {
		entry := log.WithFields(logrus.Fields{"key": key.Key, "file": fmt.Sprintf("%s:%d", configPath, key.Line)})
		if key.Nearest != "" {
			entry.WithField("did_you_mean", key.Nearest).Warnf("Ignoring unknown config key %s; did you mean %s?", key.Key, key.Nearest)
		} else {
			entry.Warnf("Ignoring unknown config key %s (config.example.yaml lists the known keys)", key.Key)
		}
	}
}

func run(configPath string) error {
	cfg, log, routerToken, err := loadConfig(configPath)
	if err != nil {
		return err
	}
	log.WithField("version", versionString()).Info("Starting presence-router")
	if data, err := os.ReadFile(configPath); err == nil {
		if missing, err := config.MissingKeys(data, []byte(exampleConfig)); err == nil && len(missing) > 0 {
			log.WithField("keys", missing).Info("The config does not set these keys, which this version knows; their defaults apply (config.example.yaml says what each does). presence-router does not rewrite your config")
		}
		warnUnknownKeys(log, configPath, data)
	}
	a, err := newApp(configPath, cfg, log, routerToken)
	if err != nil {
		return err
	}
	defer a.close()
	if err = a.start(); err != nil {
		a.stop()
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case got := <-sig:
		log.WithField("signal", got.String()).Info("Stopping presence-router")
	case err = <-a.fatal:
		log.WithError(err).Error("Stopping presence-router")
	}
	a.stop()
	log.Info("Stopped")
	return err
}

// app is the service: newApp constructs it (no listener, no network),
// start starts it, stop stops it, close releases the database.
type app struct {
	// configPath is the config file's path (the recovery key goes beside
	// it on PostgreSQL).
	configPath string
	cfg        *config.Config
	log        *logrus.Logger
	store      *store.Store
	engine     *router.Engine
	follower   *follower.Follower
	learner    *learner.Learner
	routing    *router.Handler
	as         *appservice.AppService
	bot        *bot.Bot
	registry   *prometheus.Registry

	servers []*http.Server
	// requests is cancelled at stop, so that change-feed long polls return
	// at once.
	requests       context.Context
	cancelRequests context.CancelFunc
	stopWatch      context.CancelFunc
	// standby is set while another process is active on the database:
	// this one serves the routing API and the change feed, and waits to
	// take over. active is its hold once it is the active process.
	standby atomic.Bool
	// activeLock orders a take-over against stop: active is set, and the
	// bot started, only while stopped is not.
	activeLock sync.Mutex
	active     *store.Active
	stopped    bool
	// fatal receives why the process must stop (the active lock was
	// lost).
	fatal chan error
}

func newApp(configPath string, cfg *config.Config, log *logrus.Logger, routerToken string) (*app, error) {
	// Synapse's logs name the program that made each request.
	mautrix.DefaultUserAgent = "presence-router/" + versionString() + " " + mautrix.DefaultUserAgent
	zlog := logging.Zerolog(log)
	ctx := context.Background()
	st, err := openStore(ctx, cfg, zlog)
	if err != nil {
		return nil, err
	}
	a := &app{configPath: configPath, cfg: cfg, log: log, store: st, fatal: make(chan error, 1)}
	a.standby.Store(true) // until start makes it the active process
	if err = a.construct(ctx, zlog, routerToken); err != nil {
		_ = st.Close()
		return nil, err
	}
	return a, nil
}

func (a *app) construct(ctx context.Context, zlog zerolog.Logger, routerToken string) error {
	engine, err := follower.Load(ctx, a.store, a.cfg.Homeserver.Domain)
	if err != nil {
		return err
	}
	a.engine = engine
	a.follower = follower.New(a.store, engine, a.log.WithField("component", "follower"))
	version, alwaysSend, blacklist := engine.Rules()
	a.log.WithFields(logrus.Fields{"version": version, "always_send": len(alwaysSend), "blacklist": len(blacklist)}).Info("Loaded rules")

	a.registry = prometheus.NewRegistry()
	a.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.learner = learner.New(a.store, a.follower.Committed, a.cfg.BotMXID(), a.log.WithField("component", "learner"))
	a.routing = router.NewHandler(a.engine, router.HandlerOptions{
		Token:   routerToken,
		Log:     a.log.WithField("component", "router"),
		Metrics: router.NewMetrics(a.registry),
		Learn:   a.learner.Learn,
	})
	a.as, err = appservice.CreateFull(appservice.CreateOpts{
		Registration:     registrationFor(a.cfg),
		HomeserverDomain: a.cfg.Homeserver.Domain,
		HomeserverURL:    a.cfg.Homeserver.Address,
		HostConfig:       appservice.HostConfig{Hostname: a.cfg.Appservice.Hostname, Port: a.cfg.Appservice.Port},
	})
	if err != nil {
		return fmt.Errorf("failed to create appservice: %w", err)
	}
	a.as.Log = zlog
	// Our own loops retry with backoff; mautrix's retries would block them.
	a.as.DefaultHTTPRetries = 1
	a.bot = bot.New(bot.Options{
		Config: a.cfg, AS: a.as, Store: a.store, Engine: a.engine, Follower: a.follower, RecoveryKeyPath: a.recoveryKeyPath(),
		Log:         a.log.WithField("component", "bot"),
		Metrics:     bot.NewMetrics(a.registry),
		LastContact: a.routing.LastContact,
	})
	return nil
}

// recoveryKeyPath is where the bot's recovery key is written: beside the
// SQLite database, or, on PostgreSQL, beside the config.
func (a *app) recoveryKeyPath() string {
	dir := filepath.Dir(a.configPath)
	if a.cfg.Database.Type != config.DatabasePostgres {
		dir = filepath.Dir(a.cfg.Database.Path)
	}
	return filepath.Join(dir, "presence-router-recovery-key.txt")
}

// appserviceMux serves what Synapse and operators ask of the appservice
// listener: transactions (our own handler, which stores before it
// answers), mautrix's ping and user/room queries, liveness and readiness.
func (a *app) appserviceMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /_matrix/app/v1/transactions/{txnID}", func(w http.ResponseWriter, r *http.Request) {
		if a.standby.Load() {
			// The load balancer sends transactions to the active process;
			// Synapse retries this one there.
			exhttp.WriteJSONResponse(w, http.StatusServiceUnavailable, map[string]any{"errcode": "M_UNKNOWN", "error": standbyReason})
			return
		}
		a.bot.HandleTransaction(w, r)
	})
	for _, pattern := range []string{"POST /_matrix/app/v1/ping", "GET /_matrix/app/v1/users/{userID}", "GET /_matrix/app/v1/rooms/{roomAlias}"} {
		mux.Handle(pattern, a.as.Router)
	}
	mux.HandleFunc("GET /_matrix/mau/live", func(w http.ResponseWriter, r *http.Request) {
		exhttp.WriteJSONResponse(w, http.StatusOK, map[string]any{"ok": true})
	})
	mux.HandleFunc("GET /_matrix/mau/ready", func(w http.ResponseWriter, r *http.Request) {
		pingCtx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := a.store.Ping(pingCtx); err != nil {
			exhttp.WriteJSONResponse(w, http.StatusServiceUnavailable, map[string]any{"ok": false, "store": err.Error()})
			return
		}
		if a.standby.Load() {
			exhttp.WriteJSONResponse(w, http.StatusServiceUnavailable, map[string]any{
				"ok": false, "active": false, "version": a.engine.Version(), "reason": standbyReason,
			})
			return
		}
		status, answers := http.StatusOK, a.bot.HomeserverAnswers()
		if !answers {
			// The bot can neither receive nor answer commands.
			status = http.StatusServiceUnavailable
		}
		exhttp.WriteJSONResponse(w, status, map[string]any{
			"ok": answers, "active": true, "version": a.engine.Version(), "homeserver_answers": answers,
			"bot_connected": a.bot.Connected(), "control_room": a.bot.ControlRoom(), "problems": a.bot.Problems(),
		})
	})
	if a.cfg.Router.Listen == "" {
		mux.Handle("/_presence_router/", a.routing)
	}
	return mux
}

// start opens the listeners (a port in use fails the start), starts the bot
// and watches the database for changes committed by another process.
func (a *app) start() error {
	a.requests, a.cancelRequests = context.WithCancel(context.Background())
	if a.cfg.Router.Listen != "" {
		if err := a.serve("router.listen", a.cfg.Router.Listen, a.routing, "routing API"); err != nil {
			return err
		}
	}
	if err := a.serve("appservice.port", a.cfg.ListenAddress(), a.appserviceMux(), "appservice API"); err != nil {
		return err
	}
	if a.cfg.Metrics.Enabled {
		metricsMux := http.NewServeMux()
		metricsMux.Handle("/metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{}))
		if err := a.serve("metrics.listen", a.cfg.Metrics.Listen, metricsMux, "metrics"); err != nil {
			return err
		}
	}
	var watchCtx context.Context
	watchCtx, a.stopWatch = context.WithCancel(context.Background())
	onError := func(err error) { a.log.WithError(err).Warn("Failed to check the database for new changes") }
	wake, err := a.store.ListenChanges(watchCtx, onError)
	if err != nil {
		a.log.WithError(err).Warn("Failed to listen for changes; polling the database every 2 s instead")
	}
	go a.follower.Run(watchCtx, changePollInterval, wake, onError)
	go a.learner.Run(watchCtx)
	return a.startActive(watchCtx)
}

// changePollInterval is how often each process reads the database for
// changes that other processes committed: the only way on SQLite, and the
// fallback for PostgreSQL's notifications.
const changePollInterval = 2 * time.Second

// standbyReason is what a standby answers on /_matrix/mau/ready and to
// transactions.
const standbyReason = "standby: another presence-router process is active on this database; this one serves the routing API and takes over when it stops"

// startActive makes this process the active one (it runs the bot), or, on
// PostgreSQL while another is active, a standby that tries every second to
// take over until ctx ends. On SQLite a second process is refused.
func (a *app) startActive(ctx context.Context) error {
	active, err := a.store.TryActive(ctx)
	switch {
	case err == nil:
		a.becomeActive(active)
		return nil
	case !errors.Is(err, store.ErrActiveElsewhere):
		return fmt.Errorf("%s: %w", a.cfg.Database.Key(), err)
	case a.cfg.Database.Type != config.DatabasePostgres:
		return fmt.Errorf("%s: another presence-router process is running on this database, and SQLite allows one; stop it first, or, for an active and a standby process, use PostgreSQL (database.type: postgres, see docs/high-availability.md)", a.cfg.Database.Key())
	}
	a.log.Info("Another presence-router process is active on this database: standing by (serving the routing API; taking over when it stops)")
	go func() {
		ticker := time.NewTicker(time.Second)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
			active, err := a.store.TryActive(ctx)
			if errors.Is(err, store.ErrActiveElsewhere) || ctx.Err() != nil {
				continue
			} else if err != nil {
				a.log.WithError(err).Warn("Failed to check whether the active process is still there")
				continue
			}
			a.log.Info("The active process is gone: taking over as the active process")
			a.becomeActive(active)
			return
		}
	}()
	return nil
}

// becomeActive starts the bot under the active hold; losing the hold stops
// the process (a supervisor starts it again, then as a standby).
func (a *app) becomeActive(active *store.Active) {
	a.activeLock.Lock()
	defer a.activeLock.Unlock()
	if a.stopped {
		active.Release()
		return
	}
	a.active = active
	a.bot.Start()
	a.standby.Store(false)
	go func() {
		select {
		case <-active.Lost:
			a.fatal <- errors.New("lost the active lock (its database connection broke): stopping, so that this process does not act beside another active one; start it again and it stands by")
		case <-a.requests.Done():
		}
	}()
}

func (a *app) serve(key, addr string, handler http.Handler, what string) error {
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: failed to listen for the %s on %s: %w", key, what, addr, err)
	}
	srv := newHTTPServer(handler, a.requests, defaultServerTimeouts)
	a.servers = append(a.servers, srv)
	go func() {
		if err := srv.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.WithError(err).WithField("address", addr).Error("Listener failed")
		}
	}()
	a.log.WithField("address", addr).Infof("Serving the %s", what)
	return nil
}

// stop stops the listeners, the bot and the database watch, waiting at most
// 10 s.
func (a *app) stop() {
	stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if a.stopWatch != nil {
		a.stopWatch()
	}
	a.activeLock.Lock()
	a.stopped = true
	active := a.active
	a.activeLock.Unlock()
	if a.cancelRequests != nil {
		a.cancelRequests()
	}
	for _, srv := range a.servers {
		_ = srv.Shutdown(stopCtx)
	}
	a.bot.Stop(stopCtx)
	if active != nil {
		active.Release()
	}
}

// close releases the database.
func (a *app) close() {
	_ = a.store.Close()
}
