package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const validConfig = `
homeserver: {address: "http://127.0.0.1:8008", domain: example.org}
appservice: {address: "http://127.0.0.1:29330", port: 29330, as_token: aaaaaaaaaaaaaaaa, hs_token: bbbbbbbbbbbbbbbb}
bot: {control_room: "#control:example.org", admins: ["@admin:example.org"]}
router: {token: cccccccccccccccc}
`

func load(t *testing.T, text string) *Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestValidate_NamesTheBrokenKey(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		key    string
	}{
		{"missing homeserver", func(c *Config) { c.Homeserver.Address = "" }, "homeserver.address"},
		{"homeserver not a URL", func(c *Config) { c.Homeserver.Address = "localhost:8008" }, "homeserver.address"},
		{"missing domain", func(c *Config) { c.Homeserver.Domain = "" }, "homeserver.domain"},
		{"placeholder as_token", func(c *Config) { c.Appservice.ASToken = Placeholder }, "appservice.as_token"},
		{"placeholder hs_token", func(c *Config) { c.Appservice.HSToken = "" }, "appservice.hs_token"},
		{"placeholder router token", func(c *Config) { c.Router.Token = Placeholder }, "router.token"},
		{"both router token and file", func(c *Config) { c.Router.TokenFile = "/x" }, "router.token"},
		{"control room neither ID nor alias", func(c *Config) { c.Bot.ControlRoom = "control" }, "bot.control_room"},
		{"no admins", func(c *Config) { c.Bot.Admins = nil }, "bot.admins"},
		{"invalid admin", func(c *Config) { c.Bot.Admins[0] = "admin" }, "bot.admins[0]"},
		{"bad log level", func(c *Config) { c.Logging.Level = "loud" }, "logging.level"},
		{"bad log format", func(c *Config) { c.Logging.Format = "xml" }, "logging.format"},
		{"empty database path", func(c *Config) { c.Database.Path = "" }, "database.path"},
		{"unknown database type", func(c *Config) { c.Database.Type = "mysql" }, "database.type"},
		{"encryption on with a placeholder pickle key", func(c *Config) { c.Encryption.Enabled, c.Encryption.PickleKey = true, Placeholder }, "encryption.pickle_key"},
		{"unknown verification level", func(c *Config) { c.Encryption.VerificationLevel = "trusted" }, "encryption.verification_level"},
		{"a verification level the bot can never see met", func(c *Config) { c.Encryption.VerificationLevel = "cross-signed-verified" }, "encryption.verification_level"},
		{"verified, which the bot can never see met either", func(c *Config) { c.Encryption.VerificationLevel = "verified" }, "encryption.verification_level"},
		{"postgres without a URI", func(c *Config) { c.Database.Type = DatabasePostgres }, "database.uri"},
		{"postgres with a file path for URI", func(c *Config) { c.Database.Type, c.Database.URI = DatabasePostgres, "/var/lib/pr.db" }, "database.uri"},
		{"postgres URI of another scheme", func(c *Config) {
			c.Database.Type, c.Database.URI = DatabasePostgres, "mysql://pr@localhost/pr"
		}, "database.uri"},
		{"admin power level 0", func(c *Config) { zero := 0; c.Bot.AdminPowerLevel = &zero }, "bot.admin_power_level"},
		{"negative admin power level", func(c *Config) { n := -10; c.Bot.AdminPowerLevel = &n }, "bot.admin_power_level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := load(t, validConfig)
			if err := cfg.Validate(); err != nil {
				t.Fatalf("valid config rejected: %v", err)
			}
			tt.change(cfg)
			err := cfg.Validate()
			var keyErr *KeyError
			if !errors.As(err, &keyErr) || keyErr.Key != tt.key {
				t.Fatalf("err = %v, want one naming %s", err, tt.key)
			}
		})
	}
}

func TestExampleConfig_ParsesAndNeedsOnlyTokens(t *testing.T) {
	data, err := os.ReadFile("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := load(t, string(data))
	if err = cfg.ValidateForRegistration(); err != nil {
		t.Fatalf("example config is invalid: %v", err)
	}
	if err = cfg.Validate(); err == nil || !strings.Contains(err.Error(), "-g") {
		t.Fatalf("example config must be refused for its placeholder tokens, naming the fix: %v", err)
	}
}

func TestSetSecrets_KeepsCommentsAndSetsValues(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	_ = os.WriteFile(path, []byte("# top comment\nappservice:\n  as_token: old # inline\n"), 0o600)
	if err := SetSecrets(path, map[string]string{"appservice.as_token": "new", "router.token": "tok"}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	var out struct {
		Appservice struct {
			AsToken string `yaml:"as_token"`
		}
		Router struct{ Token string }
	}
	if err := yaml.Unmarshal(data, &out); err != nil || out.Appservice.AsToken != "new" || out.Router.Token != "tok" {
		t.Fatalf("config after SetSecrets = %q (%v)", data, err)
	}
	if !strings.Contains(string(data), "# top comment") {
		t.Errorf("comments lost: %q", data)
	}
}

func TestWriteSecretFile_PrivateAndNeverThroughALink(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Someone plants symlinks at the names a naive writer would use.
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{path + ".tmp", filepath.Join(dir, ".config.yaml.tmp")} {
		if err := os.Symlink(victim, name); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteSecretFile(path, []byte("secret")); err != nil {
		t.Fatal(err)
	}
	info, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 || !info.Mode().IsRegular() {
		t.Errorf("%s has mode %v; want a regular file with 0600", path, info.Mode())
	}
	if data, _ := os.ReadFile(path); string(data) != "secret" {
		t.Errorf("content = %q", data)
	}
	if data, _ := os.ReadFile(victim); string(data) != "untouched" {
		t.Errorf("the write went through a planted symlink: victim holds %q", data)
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".config.yaml.tmp-*"))
	if len(leftovers) != 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}

func TestWriteSecretFile_ReplacingASymlinkDoesNotWriteItsTarget(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "registration.yaml")
	if err := os.Symlink(victim, path); err != nil {
		t.Fatal(err)
	}
	if err := WriteSecretFile(path, []byte("secret")); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(victim); string(data) != "untouched" {
		t.Errorf("the symlink's target was written: %q", data)
	}
}

func TestEncryption_VerificationLevelsInOrderOfTrust(t *testing.T) {
	for i, level := range VerificationLevels {
		got, err := Encryption{VerificationLevel: level.String()}.MinTrust()
		if err != nil || got != level {
			t.Errorf("%q = %v, %v", level.String(), got, err)
		}
		if i > 0 && level <= VerificationLevels[i-1] {
			t.Errorf("%s is listed after %s but is not more trust", level, VerificationLevels[i-1])
		}
	}
	if got, _ := Default().Encryption.MinTrust(); got.String() != "cross-signed-tofu" {
		t.Errorf("the default verification level is %s, want cross-signed-tofu", got)
	}
}

func TestSenderLocalpart_IsNotTheBotWithEncryption(t *testing.T) {
	cfg := Default()
	cfg.Appservice.BotUsername = "presence"
	if got := cfg.SenderLocalpart(); got != "presence" {
		t.Errorf("without encryption the sender is %q, want the bot", got)
	}
	cfg.Encryption.Enabled = true
	if got := cfg.SenderLocalpart(); got == "presence" {
		t.Error("with encryption the bot is the appservice's sender, which Synapse serves no /sync")
	}
}

func TestMissingKeys_NamesWhatANewerVersionAdded(t *testing.T) {
	example := []byte("homeserver:\n  address: x\n  domain: y\nencryption:\n  enabled: false\n  pickle_key: z\nlogging:\n  level: info\nrouter:\n  token: t\n")
	tests := []struct {
		name, config string
		want         []string
	}{
		{"everything set", "homeserver: {address: a, domain: b}\nencryption: {enabled: true, pickle_key: k}\nlogging: {level: debug}\nrouter: {token: t}\n", nil},
		{"a whole section missing", "homeserver: {address: a, domain: b}\nlogging: {level: debug}\nrouter: {token: t}\n", []string{"encryption"}},
		{"one key of a section missing", "homeserver: {address: a}\nencryption: {enabled: true, pickle_key: k}\nlogging: {level: debug}\nrouter: {token: t}\n", []string{"homeserver.domain"}},
		{"another form of a key stands for it", "homeserver: {address: a, domain: b}\nencryption: {enabled: true, pickle_key: k}\nlogging: {level: debug}\nrouter: {token_file: /f}\n", nil},
		{"an empty file", "", []string{"homeserver", "encryption", "logging", "router"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := MissingKeys([]byte(tt.config), example)
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("MissingKeys = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestUnknownKeys_NamesEachWithTheNearestKnownKey(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []UnknownKey
	}{
		{"every key known", "homeserver: {address: x, domain: y}\nbot:\n  admins: ['@a:b']\nrouter: {token_file: t}\n", nil},
		{"a typo in a section", "bot:\n  admin: ['@a:b']\n", []UnknownKey{{Key: "bot.admin", Line: 2, Nearest: "bot.admins"}}},
		{"a typo of a section", "databse:\n  path: x\n", []UnknownKey{{Key: "databse", Line: 1, Nearest: "database"}}},
		{"a key like no other", "homeserver:\n  colour: blue\n", []UnknownKey{{Key: "homeserver.colour", Line: 2}}},
		{"a key in the wrong section", "bot: {token_file: /t}\n", []UnknownKey{{Key: "bot.token_file", Line: 1, Nearest: "router.token_file"}}},
		{"several, in file order", "encryption: {enable: true}\nlogging: {levle: debug}\n", []UnknownKey{
			{Key: "encryption.enable", Line: 1, Nearest: "encryption.enabled"}, {Key: "logging.levle", Line: 2, Nearest: "logging.level"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := UnknownKeys([]byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("UnknownKeys = %+v, want %+v", got, tt.want)
			}
		})
	}
	// The example config has no key this version does not know.
	example, err := os.ReadFile("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := UnknownKeys(example); len(got) != 0 {
		t.Errorf("config.example.yaml has unknown keys: %+v", got)
	}
}
