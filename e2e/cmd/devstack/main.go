// Command devstack brings up a local Synapse with the presence-router
// adapter and presence-router itself (`make run`), prints how to log in,
// and stops everything on Ctrl-C. State is kept in -dir between runs. With
// -workers (`make run-workers`), Synapse runs as a main process, a presence
// writer and a sync worker on PostgreSQL and Redis, and presence-router on
// PostgreSQL too.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/e2e/harness"
)

func main() {
	dir := flag.String("dir", "run", "State directory (kept between runs).")
	python := flag.String("python", ".venv/bin/python", "Python with matrix-synapse and the adapter.")
	binary := flag.String("binary", "bin/presence-router", "The presence-router binary.")
	synapsePort := flag.Int("synapse-port", 0, "Synapse's client port on 127.0.0.1 (0: as the last run in -dir, else 8008).")
	routerPort := flag.Int("router-port", 0, "presence-router's port on 127.0.0.1, metrics on the next port (0: as the last run, else 29330).")
	encryption := flag.String("encryption", "", "1 for an end-to-end encrypted control room, 0 for a plain one (empty: as the last run, else 0).")
	workers := flag.Bool("workers", false, "Run Synapse with workers, on PostgreSQL and Redis.")
	flag.Parse()
	st, err := loadSettings(*dir, *synapsePort, *routerPort, *encryption)
	if err == nil {
		err = run(*dir, *python, *binary, st, *workers)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
}

// settings are what a run was started with, kept in the state directory
// (devstack.json) so that the next run without flags starts the same way.
type settings struct {
	SynapsePort int  `json:"synapse_port"`
	RouterPort  int  `json:"router_port"`
	Encryption  bool `json:"encryption"`
}

// loadSettings returns the last run's settings in dir, with the flags that
// were given (non-zero, non-empty) in their place.
func loadSettings(dir string, synapsePort, routerPort int, encryption string) (settings, error) {
	st := settings{SynapsePort: 8008, RouterPort: 29330}
	if data, err := os.ReadFile(filepath.Join(dir, "devstack.json")); err == nil {
		if err = json.Unmarshal(data, &st); err != nil {
			return st, fmt.Errorf("failed to read %s: %w", filepath.Join(dir, "devstack.json"), err)
		}
	}
	if synapsePort != 0 {
		st.SynapsePort = synapsePort
	}
	if routerPort != 0 {
		st.RouterPort = routerPort
	}
	switch encryption {
	case "":
	case "1", "true", "yes", "on":
		st.Encryption = true
	case "0", "false", "no", "off":
		st.Encryption = false
	default:
		return st, fmt.Errorf("ENCRYPTION=%q: use 1 or 0", encryption)
	}
	for name, port := range map[string]int{"SYNAPSE_PORT": st.SynapsePort, "ROUTER_PORT": st.RouterPort} {
		if port < 1 || port > 65534 {
			return st, fmt.Errorf("%s=%d is not a usable port", name, port)
		}
	}
	return st, nil
}

// save keeps the settings for the next run.
func (st settings) save(dir string) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("failed to encode settings: %w", err)
	}
	return os.WriteFile(filepath.Join(dir, "devstack.json"), append(data, '\n'), 0o600)
}

func run(dir, python, binary string, st settings, workers bool) error {
	absDir, _ := filepath.Abs(dir)
	absBin, _ := filepath.Abs(binary)
	absPy, _ := filepath.Abs(python)
	ctx := context.Background()
	opts := harness.Options{
		Dir: absDir, Python: absPy, Binary: absBin, Admins: []string{"admin"},
		SynapsePort: st.SynapsePort, RouterPort: st.RouterPort, MetricsPort: st.RouterPort + 1, Encryption: st.Encryption,
	}
	if workers {
		fmt.Println("Starting PostgreSQL and Redis…")
		pg, err := harness.StartPostgresIn(ctx, filepath.Join(absDir, "postgres"))
		if err != nil {
			return err
		}
		defer pg.Stop()
		redis, err := harness.StartRedis(ctx, filepath.Join(absDir, "redis.log"))
		if err != nil {
			return err
		}
		defer redis.Stop()
		opts.Workers, opts.Postgres, opts.RedisPort = true, pg, redis.Port
	}
	stack, err := harness.Prepare(opts)
	if err != nil {
		return err
	}
	defer stack.Stop()
	if err = st.save(absDir); err != nil {
		return err
	}
	for _, note := range stack.Notes {
		fmt.Println("Kept state:", note)
	}
	if stack.GenerateOutput != "" && strings.Contains(stack.GenerateOutput, "Changed in the registration") {
		fmt.Print("presence-router -g ran again:\n", stack.GenerateOutput[:strings.Index(stack.GenerateOutput, "Next steps")])
	}
	fmt.Printf("Starting Synapse (%d processes)…\n", len(stack.Processes))
	if err = stack.StartSynapse(ctx); err != nil {
		return err
	}
	fmt.Println("Starting presence-router…")
	if err = stack.StartRouter(ctx); err != nil {
		return err
	}
	const password = "presence-admin"
	admin, err := stack.User(ctx, "admin", password)
	if err != nil {
		return err
	}
	for _, name := range []string{"alice", "dash"} {
		if _, err = stack.User(ctx, name, "password-"+name); err != nil {
			return err
		}
	}
	alias := "#control:" + harness.ServerName
	room, warning, err := ensureControlRoom(ctx, admin, alias, stack.BotID(), st.Encryption)
	if err != nil {
		return err
	}
	botState := fmt.Sprintf("the bot %s is in it", stack.BotID())
	if !waitJoined(ctx, admin, room, stack.BotID(), 30*time.Second) {
		botState = fmt.Sprintf("the bot %s has not joined it yet: %s says why", stack.BotID(), stack.Path("presence-router.log"))
	}
	encryption := "off (make run ENCRYPTION=1 for an encrypted control room)"
	if st.Encryption {
		encryption = "on: the control room is encrypted. Use a client that encrypts (Element) and set up its\n" +
			"                 security key, so that your device is cross-signed: the bot takes commands from devices\n" +
			"                 their owner cross-signed (encryption.verification_level: cross-signed-tofu).\n" +
			"                 The bot's recovery key, written once when it made its keys: " + stack.Path("presence-router-recovery-key.txt")
	}
	if warning != "" {
		encryption += "\n  ⚠️  " + warning
	}
	fmt.Printf(`
presence-router is running.

  Homeserver:    %s   (server name %q)
  Log in as:     admin / %s   (also alice / password-alice, dash / password-dash)
  Control room:  %s   (%s)
  Encryption:    %s
  Try:           !presence help
                 !presence always-send add @dash:%s Support dashboard
                 !presence explain @alice:%s
  Routing API:   %s/_presence_router/v1/rules  (Authorization: Bearer $(cat %s))
  Metrics:       %s
  Logs:          %s, %s
  Configs:       %s, %s (kept between runs; SYNAPSE_PORT=, ROUTER_PORT=, ENCRYPTION= change them)
%s
Press Ctrl-C to stop everything.
`, stack.SynapseURL, harness.ServerName, password, alias, botState, encryption, harness.ServerName, harness.ServerName,
		stack.RouterURL, stack.Path("router-token"), stack.MetricsURL(), stack.Path("synapse.log"), stack.Path("presence-router.log"),
		stack.Path("homeserver.yaml"), stack.Path("config.yaml"), processes(stack))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	fmt.Println("\nStopping…")
	return nil
}

// ensureControlRoom makes the control room (alias) if it does not exist,
// encrypted when encrypted is set, and invites the bot; an existing room is
// encrypted now if encrypted is set. It returns the room and a warning for
// the banner: an encrypted room the bot cannot read with encryption off.
func ensureControlRoom(ctx context.Context, admin *mautrix.Client, alias string, bot id.UserID, encrypted bool) (id.RoomID, string, error) {
	var room id.RoomID
	if resp, err := admin.ResolveAlias(ctx, id.RoomAlias(alias)); err == nil {
		room = resp.RoomID
	} else {
		req := &mautrix.ReqCreateRoom{Preset: "private_chat", RoomAliasName: "control", Name: "presence-router control"}
		if encrypted {
			req.InitialState = []*event.Event{{Type: event.StateEncryption, Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}}
		}
		created, err := admin.CreateRoom(ctx, req)
		if err != nil {
			return "", "", fmt.Errorf("failed to create the control room: %w", err)
		}
		room = created.RoomID
	}
	var current event.EncryptionEventContent
	isEncrypted := admin.StateEvent(ctx, room, event.StateEncryption, "", &current) == nil && current.Algorithm != ""
	warning := ""
	switch {
	case encrypted && !isEncrypted:
		if _, err := admin.SendStateEvent(ctx, room, event.StateEncryption, "", &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}); err != nil {
			return "", "", fmt.Errorf("failed to encrypt the control room: %w", err)
		}
		fmt.Println("Turned encryption on in the control room (it cannot be turned off again).")
	case !encrypted && isEncrypted:
		warning = "The control room is encrypted and ENCRYPTION is off: the bot cannot read it. Run make run ENCRYPTION=1, or remove ./run to start over."
	}
	members, err := admin.JoinedMembers(ctx, room)
	if _, joined := members.Joined[bot]; err == nil && !joined {
		for attempt := 0; ; attempt++ {
			if _, err = admin.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bot}); err == nil || attempt > 50 || errors.Is(err, mautrix.MForbidden) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil && !errors.Is(err, mautrix.MForbidden) {
			return "", "", fmt.Errorf("failed to invite the bot: %w", err)
		}
	}
	return room, warning, nil
}

// waitJoined waits at most d for user to be joined to room.
func waitJoined(ctx context.Context, cli *mautrix.Client, room id.RoomID, user id.UserID, d time.Duration) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if members, err := cli.JoinedMembers(ctx, room); err == nil {
			if _, ok := members.Joined[user]; ok {
				return true
			}
		}
	}
	return false
}

// processes describes Synapse's workers, if any: where each listens, its
// metrics and its log.
func processes(stack *harness.Stack) string {
	if len(stack.Processes) == 1 {
		return ""
	}
	var sb strings.Builder
	sb.WriteString("\n  Synapse's processes (call each directly: /sync on the sync worker, PUT /presence on any, rooms on main):\n")
	for _, p := range stack.Processes {
		fmt.Fprintf(&sb, "    %-16s %s   metrics %s   log %s\n", p.Name, p.URL, p.MetricsURL, stack.Path(p.Log))
	}
	fmt.Fprintf(&sb, "  Worker configs: %s, %s, %s (presence-router on PostgreSQL: %s)\n",
		stack.Path("homeserver.yaml"), stack.Path(harness.PresenceWriter+".yaml"), stack.Path(harness.SyncWorker+".yaml"), stack.Path("config.yaml"))
	return sb.String()
}
