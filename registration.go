package main

import (
	"fmt"
	"os"
	"regexp"

	"go.mau.fi/util/random"
	"maunium.net/go/mautrix/appservice"

	"github.com/presence-router/presence-router/config"
)

// registrationFor builds the appservice registration from the config.
func registrationFor(cfg *config.Config) *appservice.Registration {
	reg := appservice.CreateRegistration()
	reg.ID = cfg.Appservice.ID
	reg.URL = cfg.Appservice.Address
	reg.AppToken = cfg.Appservice.ASToken
	reg.ServerToken = cfg.Appservice.HSToken
	reg.SenderLocalpart = cfg.SenderLocalpart()
	rateLimited := false
	reg.RateLimited = &rateLimited
	botRegex := "^" + regexp.QuoteMeta(string(cfg.BotMXID())) + "$"
	reg.Namespaces.UserIDs.Register(regexp.MustCompile(botRegex), true)
	return reg
}

// generateRegistration writes a registration with fresh tokens to regPath
// and stores the tokens in the config file, so both sides agree.
func generateRegistration(configPath, regPath string) error {
	cfg, err := config.Load(configPath)
	if err != nil {
		return err
	}
	if err = cfg.ValidateForRegistration(); err != nil {
		return fmt.Errorf("invalid config %s: %w", configPath, err)
	}
	secrets := map[string]string{
		"appservice.as_token": random.String(64),
		"appservice.hs_token": random.String(64),
	}
	cfg.Appservice.ASToken = secrets["appservice.as_token"]
	cfg.Appservice.HSToken = secrets["appservice.hs_token"]
	newRouterToken := cfg.Router.TokenFile == "" && config.IsPlaceholder(cfg.Router.Token)
	if newRouterToken {
		secrets["router.token"] = random.String(48)
	}
	if config.IsPlaceholder(cfg.Encryption.PickleKey) {
		// Kept once made: the bot's keys in the database are encrypted with it.
		secrets["encryption.pickle_key"] = random.String(48)
	}
	reg := registrationFor(cfg)
	regYAML, err := reg.YAML()
	if err != nil {
		return fmt.Errorf("failed to encode registration: %w", err)
	}
	var previous *appservice.Registration
	if _, statErr := os.Stat(regPath); statErr == nil {
		if previous, err = appservice.LoadRegistration(regPath); err != nil {
			previous = nil // unreadable: it is replaced all the same
		}
	}
	if err = config.WriteSecretFile(regPath, []byte(regYAML)); err != nil {
		return fmt.Errorf("failed to write registration: %w", err)
	}
	if err = config.SetSecrets(configPath, secrets); err != nil {
		return err
	}
	fmt.Printf("Wrote %s and put its tokens into %s.\n", regPath, configPath)
	if previous != nil {
		fmt.Printf("\nChanged in the registration (Synapse reads it only when it starts: restart Synapse):\n")
		for _, change := range registrationChanges(previous, reg) {
			fmt.Printf("  - %s\n", change)
		}
	}
	fmt.Printf("\nNext steps:\n")
	fmt.Printf("1. In homeserver.yaml, register the appservice:\n\n     app_service_config_files:\n       - %s\n\n", regPath)
	tokenHint := "token: <router.token from " + configPath + ">"
	if cfg.Router.TokenFile != "" {
		tokenHint = "token_file: " + cfg.Router.TokenFile
	}
	fmt.Printf("2. In homeserver.yaml, load the adapter (pip install ./adapter into Synapse's environment first):\n\n     modules:\n       - module: presence_router_adapter.PresenceRouterAdapter\n         config:\n           url: %s\n           %s\n           # push: auto (the default) pushes on the presence writer only\n\n", adapterURL(cfg), tokenHint)
	if newRouterToken {
		fmt.Printf("   router.token was a placeholder: a fresh one is now in %s.\n\n", configPath)
	}
	fmt.Printf("3. Restart Synapse, invite %s to %s, and start presence-router -c %s.\n", cfg.BotMXID(), cfg.Bot.ControlRoom, configPath)
	return nil
}

// registrationChanges says what differs between a registration and the one
// that replaces it, in words for the operator.
func registrationChanges(before, after *appservice.Registration) []string {
	changes := []string{"as_token and hs_token are new (presence-router's config has them; Synapse must load this file again)"}
	if before.SenderLocalpart != after.SenderLocalpart {
		changes = append(changes, fmt.Sprintf("sender_localpart %q → %q: encryption.enabled decides it (an encrypting bot syncs, and Synapse serves no /sync to an appservice's sender, so the bot becomes a user of the namespace and the sender another user); the bot's user ID stays the same",
			before.SenderLocalpart, after.SenderLocalpart))
	}
	if before.URL != after.URL {
		changes = append(changes, fmt.Sprintf("url %q → %q: where Synapse sends transactions", before.URL, after.URL))
	}
	if before.ID != after.ID {
		changes = append(changes, fmt.Sprintf("id %q → %q", before.ID, after.ID))
	}
	beforeUsers, afterUsers := namespaceRegexes(before.Namespaces.UserIDs), namespaceRegexes(after.Namespaces.UserIDs)
	if beforeUsers != afterUsers {
		changes = append(changes, fmt.Sprintf("user namespace %s → %s", beforeUsers, afterUsers))
	}
	return changes
}

// namespaceRegexes lists a namespace's regexes, for comparison and display.
func namespaceRegexes(list appservice.NamespaceList) string {
	regexes := make([]string, len(list))
	for i, ns := range list {
		regexes[i] = ns.Regex
	}
	return fmt.Sprint(regexes)
}

func adapterURL(cfg *config.Config) string {
	if cfg.Router.Listen != "" {
		return "http://" + cfg.Router.Listen
	}
	return cfg.Appservice.Address
}
