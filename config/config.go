// Package config loads, validates and updates presence-router's YAML
// configuration file.
package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"

	"github.com/agnivade/levenshtein"
	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/userid"
)

// Placeholder is the value the example files use for every secret. The
// service refuses to run with it.
const Placeholder = "generate-with-g"

// Config is the whole configuration file.
type Config struct {
	Homeserver Homeserver `yaml:"homeserver"`
	Appservice Appservice `yaml:"appservice"`
	Bot        Bot        `yaml:"bot"`
	Router     Router     `yaml:"router"`
	Database   Database   `yaml:"database"`
	Logging    Logging    `yaml:"logging"`
	Metrics    Metrics    `yaml:"metrics"`
	Encryption Encryption `yaml:"encryption"`
}

// Encryption configures end-to-end encryption in the control room.
type Encryption struct {
	Enabled bool `yaml:"enabled"`
	// PickleKey encrypts the bot's keys in the database; -g generates it.
	PickleKey string `yaml:"pickle_key"`
	// VerificationLevel is the least trust a command's sending device
	// needs in an encrypted control room (VerificationLevels).
	VerificationLevel string `yaml:"verification_level"`
}

// VerificationLevels are encryption.verification_level's values, from the
// least trust to the most: any device; a device signed by its owner's
// cross-signing key, whichever it is; signed by the owner's key first seen
// (trust on first use, the default; an admin accepts a new key with
// `identity accept`).
var VerificationLevels = []id.TrustState{id.TrustStateUnset, id.TrustStateCrossSignedUntrusted, id.TrustStateCrossSignedTOFU}

// unreachableLevels are trust levels presence-router can never see met: it
// verifies no user's keys and no device, so no device would be obeyed.
var unreachableLevels = []id.TrustState{id.TrustStateCrossSignedVerified, id.TrustStateVerified}

// MinTrust is the trust encryption.verification_level names.
func (e Encryption) MinTrust() (id.TrustState, error) {
	for _, level := range unreachableLevels {
		if e.VerificationLevel == level.String() {
			return 0, fmt.Errorf("%q can never be met: presence-router verifies no user's keys and no device, so it would obey no device at all; use cross-signed-tofu (the default: devices signed by their owner's identity as first seen)", e.VerificationLevel)
		}
	}
	for _, level := range VerificationLevels {
		if e.VerificationLevel == level.String() {
			return level, nil
		}
	}
	names := make([]string, len(VerificationLevels))
	for i, level := range VerificationLevels {
		names[i] = level.String()
	}
	return 0, fmt.Errorf("%q is not one of %s", e.VerificationLevel, strings.Join(names, ", "))
}

// Homeserver says where the homeserver is.
type Homeserver struct {
	Address string `yaml:"address"`
	Domain  string `yaml:"domain"`
}

// Appservice holds the appservice registration values and listener.
type Appservice struct {
	Address     string `yaml:"address"`
	Hostname    string `yaml:"hostname"`
	Port        uint16 `yaml:"port"`
	ID          string `yaml:"id"`
	BotUsername string `yaml:"bot_username"`
	ASToken     string `yaml:"as_token"`
	HSToken     string `yaml:"hs_token"`
}

// Bot configures the control room and who may command the bot.
type Bot struct {
	ControlRoom     string      `yaml:"control_room"`
	CommandPrefix   string      `yaml:"command_prefix"`
	Admins          []id.UserID `yaml:"admins"`
	AdminPowerLevel *int        `yaml:"admin_power_level"`
}

// Router configures the routing API.
type Router struct {
	Token     string `yaml:"token"`
	TokenFile string `yaml:"token_file"`
	Listen    string `yaml:"listen"`
}

// Database configures storage: SQLite (the embedded default) or
// PostgreSQL.
type Database struct {
	Type string `yaml:"type"` // sqlite or postgres
	Path string `yaml:"path"` // the SQLite file
	URI  string `yaml:"uri"`  // postgres://user:password@host:port/dbname?sslmode=...
}

// Database types.
const (
	DatabaseSQLite   = "sqlite"
	DatabasePostgres = "postgres"
)

// Key is the config key that names the database: database.path or
// database.uri.
func (d Database) Key() string {
	if d.Type == DatabasePostgres {
		return "database.uri"
	}
	return "database.path"
}

// Logging configures the log stream.
type Logging struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Metrics configures the Prometheus listener.
type Metrics struct {
	Enabled bool   `yaml:"enabled"`
	Listen  string `yaml:"listen"`
}

// Default returns the configuration every unset key falls back to.
func Default() Config {
	return Config{
		Appservice: Appservice{
			Hostname:    "127.0.0.1",
			Port:        29330,
			ID:          "presence-router",
			BotUsername: "presence",
		},
		Bot:        Bot{CommandPrefix: "!presence"},
		Database:   Database{Type: DatabaseSQLite, Path: "presence-router.db"},
		Logging:    Logging{Level: "info", Format: "text"},
		Metrics:    Metrics{Listen: "127.0.0.1:9330"},
		Encryption: Encryption{VerificationLevel: id.TrustStateCrossSignedTOFU.String()},
	}
}

// Load reads and parses the file at path on top of Default. It does not
// validate; call Validate.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read config: %w", err)
	}
	cfg := Default()
	if err = yaml.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("failed to parse config %s: %w", path, err)
	}
	return &cfg, nil
}

// KeyError is a validation error that names the offending key.
type KeyError struct {
	Key string
	Msg string
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Msg }

func keyErr(key, format string, args ...any) error {
	return &KeyError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// IsPlaceholder reports whether a secret is unset or still the example's.
func IsPlaceholder(secret string) bool {
	s := strings.TrimSpace(secret)
	return s == "" || s == Placeholder || strings.Contains(strings.ToLower(s), "generate")
}

// ValidateForRegistration checks what generating a registration needs: it
// allows placeholder tokens, which -g replaces.
func (c *Config) ValidateForRegistration() error {
	return c.validate(false)
}

// Validate checks every key and returns the first problem as a *KeyError,
// naming the key and the fix.
func (c *Config) Validate() error {
	return c.validate(true)
}

func (c *Config) validate(secrets bool) error {
	if c.Homeserver.Address == "" {
		return keyErr("homeserver.address", "not configured: set it to the URL presence-router uses to reach Synapse, e.g. http://127.0.0.1:8008")
	}
	if err := checkURL(c.Homeserver.Address); err != nil {
		return keyErr("homeserver.address", "%v", err)
	}
	if c.Homeserver.Domain == "" {
		return keyErr("homeserver.domain", "not configured: set it to the homeserver's server_name, e.g. example.org")
	}
	if c.Appservice.Address == "" {
		return keyErr("appservice.address", "not configured: set it to the URL Synapse uses to reach presence-router, e.g. http://127.0.0.1:29330")
	}
	if err := checkURL(c.Appservice.Address); err != nil {
		return keyErr("appservice.address", "%v", err)
	}
	if c.Appservice.Port == 0 {
		return keyErr("appservice.port", "not configured: set the port presence-router listens on")
	}
	if c.Appservice.ID == "" {
		return keyErr("appservice.id", "must not be empty")
	}
	if c.Appservice.BotUsername == "" {
		return keyErr("appservice.bot_username", "must not be empty")
	}
	if _, err := userid.Parse(string(c.BotMXID())); err != nil {
		return keyErr("appservice.bot_username", "%q does not make a valid user ID: %v", c.Appservice.BotUsername, err)
	}
	if secrets {
		if IsPlaceholder(c.Appservice.ASToken) {
			return keyErr("appservice.as_token", "is a placeholder: run presence-router -c CONFIG -g -r registration.yaml to generate tokens")
		}
		if IsPlaceholder(c.Appservice.HSToken) {
			return keyErr("appservice.hs_token", "is a placeholder: run presence-router -c CONFIG -g -r registration.yaml to generate tokens")
		}
		if c.Router.TokenFile == "" && IsPlaceholder(c.Router.Token) {
			return keyErr("router.token", "is a placeholder: set a random secret (or router.token_file), or run -g to generate one")
		}
	}
	if c.Router.Token != "" && c.Router.TokenFile != "" {
		return keyErr("router.token", "set either router.token or router.token_file, not both")
	}
	if c.Router.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Router.Listen); err != nil {
			return keyErr("router.listen", "must be host:port: %v", err)
		}
	}
	if c.Bot.ControlRoom == "" {
		return keyErr("bot.control_room", "not configured: set the room ID (!abc:example.org) or alias (#presence:example.org) of the control room")
	}
	if !strings.HasPrefix(c.Bot.ControlRoom, "!") && !strings.HasPrefix(c.Bot.ControlRoom, "#") {
		return keyErr("bot.control_room", "%q is neither a room ID (!...) nor an alias (#...)", c.Bot.ControlRoom)
	}
	if strings.TrimSpace(c.Bot.CommandPrefix) == "" || strings.ContainsAny(c.Bot.CommandPrefix, " \t\n") {
		return keyErr("bot.command_prefix", "must be one word, e.g. !presence")
	}
	if pl := c.Bot.AdminPowerLevel; pl != nil && *pl < 1 {
		return keyErr("bot.admin_power_level", "is %d: it must be at least 1 (at 0 or below, every member of the control room, or anyone who can join it, could change the lists); leave it unset to allow only bot.admins", *pl)
	}
	if len(c.Bot.Admins) == 0 && c.Bot.AdminPowerLevel == nil {
		return keyErr("bot.admins", "no admins: list at least one user ID in bot.admins or set bot.admin_power_level")
	}
	for i, admin := range c.Bot.Admins {
		if _, err := userid.Parse(string(admin)); err != nil {
			return keyErr(fmt.Sprintf("bot.admins[%d]", i), "%q is not a valid user ID: %v", admin, err)
		}
	}
	switch c.Database.Type {
	case DatabaseSQLite:
		if c.Database.Path == "" {
			return keyErr("database.path", "not configured: set the path of the SQLite database file")
		}
	case DatabasePostgres:
		u, err := url.Parse(c.Database.URI)
		if c.Database.URI == "" {
			return keyErr("database.uri", "not configured: with database.type postgres, set a URI such as postgres://presence:PASSWORD@localhost/presence_router?sslmode=disable")
		} else if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
			return keyErr("database.uri", "is not a postgres://user:password@host/dbname URI")
		}
	default:
		return keyErr("database.type", "%q is not one of sqlite, postgres", c.Database.Type)
	}
	switch strings.ToLower(c.Logging.Level) {
	case "trace", "debug", "info", "warn", "warning", "error":
	default:
		return keyErr("logging.level", "%q is not one of trace, debug, info, warn, error", c.Logging.Level)
	}
	switch c.Logging.Format {
	case "text", "json":
	default:
		return keyErr("logging.format", "%q is not one of text, json", c.Logging.Format)
	}
	if c.Metrics.Enabled {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			return keyErr("metrics.listen", "must be host:port: %v", err)
		}
	}
	if _, err := c.Encryption.MinTrust(); err != nil {
		return keyErr("encryption.verification_level", "%v", err)
	}
	if secrets && c.Encryption.Enabled && IsPlaceholder(c.Encryption.PickleKey) {
		return keyErr("encryption.pickle_key", "is a placeholder: run presence-router -c CONFIG -g -r registration.yaml to generate it (it encrypts the bot's keys in the database; keep it with the database)")
	}
	return nil
}

func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %w", raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q must be an http:// or https:// URL", raw)
	}
	return nil
}

// SenderLocalpart is the appservice's sender user: the bot itself, or,
// with encryption on, a user of its own that never acts (Synapse serves no
// /sync to an appservice's sender, and the bot's encryption device needs
// one).
func (c *Config) SenderLocalpart() string {
	if c.Encryption.Enabled {
		return c.Appservice.BotUsername + "-appservice"
	}
	return c.Appservice.BotUsername
}

// BotMXID returns the bot's user ID.
func (c *Config) BotMXID() id.UserID {
	return id.NewUserID(c.Appservice.BotUsername, c.Homeserver.Domain)
}

// ListenAddress returns host:port of the appservice listener.
func (c *Config) ListenAddress() string {
	return net.JoinHostPort(c.Appservice.Hostname, fmt.Sprint(c.Appservice.Port))
}

// RouterToken returns the routing API token, reading router.token_file when
// it is set.
func (c *Config) RouterToken() (string, error) {
	if c.Router.TokenFile == "" {
		return c.Router.Token, nil
	}
	data, err := os.ReadFile(c.Router.TokenFile)
	if err != nil {
		return "", keyErr("router.token_file", "cannot be read: %v", err)
	}
	token := strings.TrimSpace(string(data))
	if IsPlaceholder(token) {
		return "", keyErr("router.token_file", "%s is empty or holds a placeholder: write a random secret into it", c.Router.TokenFile)
	}
	return token, nil
}

// SetSecrets rewrites the config file at path in place, setting the given
// dotted keys (e.g. "appservice.as_token") and keeping comments and order.
func SetSecrets(path string, values map[string]string) error {
	anyValues := make(map[string]any, len(values))
	for key, value := range values {
		anyValues[key] = value
	}
	return SetValues(path, anyValues)
}

// SetValues rewrites the config file at path in place, readable by its
// owner only, setting the given dotted keys to their values (a string, an
// int or a bool) and keeping comments and order.
func SetValues(path string, values map[string]any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("failed to read config: %w", err)
	}
	var doc yaml.Node
	if err = yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("failed to parse config: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return errors.New("failed to update config: top level is not a mapping")
	}
	for key, value := range values {
		node := &yaml.Node{Kind: yaml.ScalarNode}
		switch v := value.(type) {
		case string:
			node.Tag, node.Value, node.Style = "!!str", v, yaml.DoubleQuotedStyle
		case int:
			node.Tag, node.Value = "!!int", strconv.Itoa(v)
		case bool:
			node.Tag, node.Value = "!!bool", strconv.FormatBool(v)
		default:
			return fmt.Errorf("failed to update config: %s is a %T, not a string, int or bool", key, value)
		}
		setKey(doc.Content[0], strings.Split(key, "."), node)
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		return fmt.Errorf("failed to encode config: %w", err)
	}
	return WriteSecretFile(path, out)
}

// WriteSecretFile replaces path with data, readable by its owner only
// (0600). It writes a temporary file created exclusively in the same
// directory (so a file or symlink planted at a predictable name is never
// followed), syncs it and renames it into place.
func WriteSecretFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("failed to create a temporary file next to %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if err = tmp.Chmod(0o600); err == nil {
		if _, err = tmp.Write(data); err == nil {
			err = tmp.Sync()
		}
	}
	if closeErr := tmp.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("failed to replace %s: %w", path, err)
	}
	return nil
}

func setKey(mapping *yaml.Node, path []string, value *yaml.Node) {
	for i := 0; i+1 < len(mapping.Content); i += 2 {
		if mapping.Content[i].Value != path[0] {
			continue
		}
		child := mapping.Content[i+1]
		if len(path) == 1 {
			*child = *value
			return
		}
		if child.Kind != yaml.MappingNode {
			child.Kind, child.Tag, child.Value, child.Content = yaml.MappingNode, "!!map", "", nil
		}
		setKey(child, path[1:], value)
		return
	}
	key := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: path[0]}
	if len(path) == 1 {
		mapping.Content = append(mapping.Content, key, value)
		return
	}
	child := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	mapping.Content = append(mapping.Content, key, child)
	setKey(child, path[1:], value)
}

// MissingKeys returns the keys (dotted, in the example's order) that
// example sets and the config in data does not: keys a newer version
// added, whose defaults apply until the operator sets them. presence-router
// reports them rather than rewrite the operator's file.
func MissingKeys(data, example []byte) ([]string, error) {
	var have, want yaml.Node
	if err := yaml.Unmarshal(data, &have); err != nil {
		return nil, fmt.Errorf("failed to parse config: %w", err)
	}
	if err := yaml.Unmarshal(example, &want); err != nil {
		return nil, fmt.Errorf("failed to parse the example config: %w", err)
	}
	if len(want.Content) == 0 {
		return nil, nil
	}
	var haveRoot *yaml.Node
	if len(have.Content) > 0 {
		haveRoot = have.Content[0]
	}
	var missing []string
	var walk func(want, have *yaml.Node, prefix string)
	walk = func(want, have *yaml.Node, prefix string) {
		for i := 0; i+1 < len(want.Content); i += 2 {
			key, value := want.Content[i].Value, want.Content[i+1]
			var got *yaml.Node
			if have != nil && have.Kind == yaml.MappingNode {
				for j := 0; j+1 < len(have.Content); j += 2 {
					if have.Content[j].Value == key {
						got = have.Content[j+1]
					}
				}
			}
			switch {
			case got == nil && !hasAlternative(have, key):
				missing = append(missing, prefix+key)
			case value.Kind == yaml.MappingNode:
				walk(value, got, prefix+key+".")
			}
		}
	}
	walk(want.Content[0], haveRoot, "")
	return missing, nil
}

// hasAlternative reports whether mapping sets another form of key (key_…,
// such as router.token_file for router.token), which stands for it.
func hasAlternative(mapping *yaml.Node, key string) bool {
	if mapping == nil || mapping.Kind != yaml.MappingNode {
		return false
	}
	for j := 0; j < len(mapping.Content); j += 2 {
		if strings.HasPrefix(mapping.Content[j].Value, key+"_") {
			return true
		}
	}
	return false
}

// UnknownKey is a key in a config file that presence-router does not know.
type UnknownKey struct {
	Key     string // dotted, as written
	Line    int
	Nearest string // the known key closest in spelling ("" if none is close)
}

// UnknownKeys returns the keys in the config in data that Config has no
// field for (a typo, or a key of another version), each with the nearest
// known key. Such keys are otherwise ignored in silence.
func UnknownKeys(data []byte) ([]UnknownKey, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("failed to parse config: %w", err)
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	known := knownKeys(reflect.TypeFor[Config](), "")
	var unknown []UnknownKey
	var walk func(node *yaml.Node, prefix string)
	walk = func(node *yaml.Node, prefix string) {
		if node.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(node.Content); i += 2 {
			key := prefix + node.Content[i].Value
			if _, ok := known[key]; !ok {
				unknown = append(unknown, UnknownKey{Key: key, Line: node.Content[i].Line, Nearest: nearestKey(key, known)})
				continue
			}
			walk(node.Content[i+1], key+".")
		}
	}
	walk(doc.Content[0], "")
	return unknown, nil
}

// knownKeys lists the dotted yaml keys of t's fields, nested structs'
// keys included.
func knownKeys(t reflect.Type, prefix string) map[string]struct{} {
	keys := map[string]struct{}{}
	for field := range t.Fields() {
		name, _, _ := strings.Cut(field.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		keys[prefix+name] = struct{}{}
		if field.Type.Kind() == reflect.Struct {
			maps.Copy(keys, knownKeys(field.Type, prefix+name+"."))
		}
	}
	return keys
}

// nearestKey returns the known key most likely meant by key: a sibling
// (same section) spelled at most max(2, a third of its length) edits away,
// or else the same name in another section; "" if there is none.
func nearestKey(key string, known map[string]struct{}) string {
	cut := strings.LastIndexByte(key, '.') + 1
	section, name := key[:cut], key[cut:]
	best, bestDistance := "", max(2, len(name)/3)+1
	elsewhere := ""
	for candidate := range known {
		candidateCut := strings.LastIndexByte(candidate, '.') + 1
		candidateName := candidate[candidateCut:]
		if candidate[:candidateCut] != section {
			if candidateName == name && (elsewhere == "" || candidate < elsewhere) {
				elsewhere = candidate
			}
			continue
		}
		d := levenshtein.ComputeDistance(name, candidateName)
		if d < bestDistance || d == bestDistance && candidate < best {
			best, bestDistance = candidate, d
		}
	}
	if best == "" {
		return elsewhere
	}
	return best
}
