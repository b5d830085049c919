// Command devstack brings up a local Synapse with the presence-router
// adapter and presence-router itself (`make run`), prints how to log in,
// and stops everything on Ctrl-C. State is kept in -dir between runs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
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
	flag.Parse()
	if err := run(*dir, *python, *binary, *synapsePort, *routerPort); err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
}

func run(dir, python, binary string, synapsePort, routerPort int) error {
	absDir, _ := filepath.Abs(dir)
	absBin, _ := filepath.Abs(binary)
	absPy, _ := filepath.Abs(python)
	ctx := context.Background()
	stack, err := harness.Prepare(harness.Options{
		Dir: absDir, Python: absPy, Binary: absBin, Admins: []string{"admin"},
		SynapsePort: synapsePort, RouterPort: routerPort, MetricsPort: routerPort + 1,
	})
	if err != nil {
		return err
	}
	defer stack.Stop()
	fmt.Println("Starting Synapse…")
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

Press Ctrl-C to stop everything.
`, stack.SynapseURL, harness.ServerName, password, alias, stack.BotID(), harness.ServerName, harness.ServerName,
		stack.RouterURL, stack.Path("router-token"), stack.MetricsURL(), stack.Path("synapse.log"), stack.Path("presence-router.log"))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	fmt.Println("\nStopping…")
	return nil
}
