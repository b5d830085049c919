// Command devstack brings up a local Synapse with the presence-router
// adapter and presence-router itself (`make run`), prints how to log in,
// and stops everything on Ctrl-C. State is kept in -dir between runs. With
// -workers (`make run-workers`), Synapse runs as a main process, a presence
// writer and a sync worker on PostgreSQL and Redis, and presence-router on
// PostgreSQL too.
package main

import (
	"context"
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

	"github.com/presence-router/presence-router/e2e/harness"
)

func main() {
	dir := flag.String("dir", "run", "State directory (kept between runs).")
	python := flag.String("python", ".venv/bin/python", "Python with matrix-synapse and the adapter.")
	binary := flag.String("binary", "bin/presence-router", "The presence-router binary.")
	synapsePort := flag.Int("synapse-port", 8008, "Synapse's client port on 127.0.0.1.")
	routerPort := flag.Int("router-port", 29330, "presence-router's port on 127.0.0.1 (metrics on the next port).")
	workers := flag.Bool("workers", false, "Run Synapse with workers, on PostgreSQL and Redis.")
	flag.Parse()
	if err := run(*dir, *python, *binary, *synapsePort, *routerPort, *workers); err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
}

func run(dir, python, binary string, synapsePort, routerPort int, workers bool) error {
	absDir, _ := filepath.Abs(dir)
	absBin, _ := filepath.Abs(binary)
	absPy, _ := filepath.Abs(python)
	ctx := context.Background()
	opts := harness.Options{
		Dir: absDir, Python: absPy, Binary: absBin, Admins: []string{"admin"},
		SynapsePort: synapsePort, RouterPort: routerPort, MetricsPort: routerPort + 1,
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
	if _, err = admin.ResolveAlias(ctx, "#control:"+harness.ServerName); err != nil {
		resp, err := admin.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomAliasName: "control", Name: "presence-router control", Invite: nil})
		if err != nil {
			return fmt.Errorf("failed to create the control room: %w", err)
		}
		for attempt := 0; ; attempt++ {
			if _, err = admin.InviteUser(ctx, resp.RoomID, &mautrix.ReqInviteUser{UserID: stack.BotID()}); err == nil || attempt > 50 {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil && !errors.Is(err, mautrix.MForbidden) {
			return fmt.Errorf("failed to invite the bot: %w", err)
		}
	}
	fmt.Printf(`
presence-router is running.

  Homeserver:    %s   (server name %q)
  Log in as:     admin / %s   (also alice / password-alice, dash / password-dash)
  Control room:  %s   (the bot %s is in it)
  Try:           !presence help
                 !presence always-send add @dash:%s Support dashboard
                 !presence explain @alice:%s
  Routing API:   %s/_presence_router/v1/rules  (Authorization: Bearer $(cat %s))
  Metrics:       %s
  Logs:          %s, %s
%s
Press Ctrl-C to stop everything.
`, stack.SynapseURL, harness.ServerName, password, alias, stack.BotID(), harness.ServerName, harness.ServerName,
		stack.RouterURL, stack.Path("router-token"), stack.MetricsURL(), stack.Path("synapse.log"), stack.Path("presence-router.log"), processes(stack))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	fmt.Println("\nStopping…")
	return nil
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
	fmt.Fprintf(&sb, "  Configs:       %s, %s, %s (presence-router on PostgreSQL: %s)\n",
		stack.Path("homeserver.yaml"), stack.Path(harness.PresenceWriter+".yaml"), stack.Path(harness.SyncWorker+".yaml"), stack.Path("config.yaml"))
	return sb.String()
}
