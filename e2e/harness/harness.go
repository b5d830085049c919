// Package harness brings up a real Synapse with the presence-router adapter
// and a presence-router process on loopback, for the end-to-end tests and
// for `make run`.
package harness

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"

	_ "github.com/mattn/go-sqlite3" // the sqlite3 driver, for RouterDB
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// ServerName is the test homeserver's server_name unless Options.ServerName
// or Options.Federation says otherwise.
const ServerName = "localhost"

// Options says where things are and how to configure them.
type Options struct {
	Dir    string // state directory (config, databases, logs)
	Python string // the venv's python with matrix-synapse and the adapter
	Binary string // the presence-router binary
	// Legacy loads the adapter through presence.presence_router instead of
	// modules:.
	Legacy bool
	// Admins are the bot.admins localparts.
	Admins []string
	// AdminPowerLevel, when set, is bot.admin_power_level.
	AdminPowerLevel *int
	// SynapsePort, RouterPort and MetricsPort: 0 picks a free port.
	SynapsePort, RouterPort, MetricsPort int
	// Federation gives Synapse a TLS federation listener (a self-signed
	// certificate, on FederationPort or a free port) and lets it federate
	// with loopback addresses without checking certificates. Unless
	// ServerName is set, the server name is then 127.0.0.1:<FederationPort>,
	// which other servers reach with no DNS or .well-known lookup.
	Federation     bool
	FederationPort int
	// ServerName overrides the server name (ServerName by default).
	ServerName string
	// Plain leaves presence-router out: no appservice, no adapter.
	Plain bool
	// Workers runs Synapse as a main process, a presence writer and a sync
	// worker (Workers below), on PostgreSQL (Postgres) with Redis
	// (RedisPort), each with its own log and metrics listener and the
	// adapter loaded. The caller starts and stops both servers.
	Workers   bool
	RedisPort int
	// Postgres, when set, holds presence-router's database (its own,
	// presence_router), and with Workers Synapse's too.
	Postgres *Postgres
	// Encryption turns on presence-router's end-to-end encryption, with
	// encryption.verification_level VerificationLevel ("" for the default).
	Encryption        bool
	VerificationLevel string
	// Standby runs presence-router as docs/high-availability.md shows: a
	// second process on the same PostgreSQL database (Postgres), whose
	// config (standby.yaml) is the first one's (config.yaml) with its own
	// ports, and HAProxy in front of both appservice listeners. RouterURL
	// is then HAProxy's, which Synapse uses; RouterURLs are the two
	// processes', which the adapter uses.
	Standby bool
}

// Synapse's processes in the worker deployment: the presence writer
// (stream_writers.presence) and a worker that serves /sync.
const (
	MainProcess    = "main"
	PresenceWriter = "presence_writer"
	SyncWorker     = "sync_worker"
)

// Process is one Synapse process of a stack.
type Process struct {
	Name       string
	URL        string // its client listener
	MetricsURL string // "" in the single-process stack
	Log        string // its log, a name in the state directory
	// ports of its replication and metrics listeners (0: none)
	client, replication, metrics int
	proc                         *process
}

// Stack is a running Synapse and presence-router.
type Stack struct {
	Opts       Options
	SynapseURL string
	RouterURL  string
	// RouterURLs are each presence-router process's own URL: one, or with
	// Standby two (config.yaml's and standby.yaml's).
	RouterURLs  []string
	RouterToken string
	// Processes are Synapse's processes, main first.
	Processes []*Process
	// Notes say what Prepare changed in a kept state directory (files
	// rewritten for new settings, edits kept), for the operator.
	Notes []string
	// GenerateOutput is what presence-router -g printed, when Prepare ran
	// it (a first run, or new settings).
	GenerateOutput string
	// routers are the presence-router processes (nil while stopped), as
	// RouterURLs; routerPorts and metricsPorts their listeners.
	routers                   []*process
	routerPorts, metricsPorts []int
	haproxy                   *process
}

// routerConfigs are the presence-router processes' config files.
var routerConfigs = []string{"config.yaml", "standby.yaml"}

// Path returns a path in the state directory.
func (s *Stack) Path(name string) string { return filepath.Join(s.Opts.Dir, name) }

// FreePort returns a free TCP port on 127.0.0.1.
//
// A port is handed out once per process: the kernel may give a port that
// was just closed to the next caller, and two listeners of one stack then
// collide ("address already in use").
func FreePort() (int, error) {
	handedOutLock.Lock()
	defer handedOutLock.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("failed to find a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if !handedOut[port] {
			handedOut[port] = true
			return port, nil
		}
	}
	return 0, errors.New("failed to find a free port not handed out before")
}

var (
	handedOutLock sync.Mutex
	handedOut     = map[int]bool{}
)

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Prepare writes the configs (unless they exist) and the registration.
func Prepare(opts Options) (*Stack, error) {
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("failed to create %s: %w", opts.Dir, err)
	}
	s := &Stack{Opts: opts}
	var err error
	if s.Opts.SynapsePort == 0 {
		if s.Opts.SynapsePort, err = FreePort(); err != nil {
			return nil, err
		}
	}
	if s.Opts.RouterPort == 0 {
		if s.Opts.RouterPort, err = FreePort(); err != nil {
			return nil, err
		}
	}
	if s.Opts.MetricsPort == 0 {
		if s.Opts.MetricsPort, err = FreePort(); err != nil {
			return nil, err
		}
	}
	if s.Opts.Federation && s.Opts.FederationPort == 0 {
		if s.Opts.FederationPort, err = FreePort(); err != nil {
			return nil, err
		}
	}
	if s.Opts.ServerName == "" {
		s.Opts.ServerName = ServerName
		if s.Opts.Federation {
			s.Opts.ServerName = fmt.Sprintf("127.0.0.1:%d", s.Opts.FederationPort)
		}
	}
	s.SynapseURL = fmt.Sprintf("http://127.0.0.1:%d", s.Opts.SynapsePort)
	if err = s.planProcesses(); err != nil {
		return nil, err
	}
	s.RouterURL = fmt.Sprintf("http://127.0.0.1:%d", s.Opts.RouterPort)
	s.routerPorts, s.metricsPorts = []int{s.Opts.RouterPort}, []int{s.Opts.MetricsPort}
	if s.Opts.Standby {
		if s.Opts.Postgres == nil {
			return nil, errors.New("an active and a standby presence-router need PostgreSQL")
		}
		// RouterPort is HAProxy's; each process has a port of its own.
		s.routerPorts = nil
		for range 2 {
			port, err := FreePort()
			if err != nil {
				return nil, err
			}
			s.routerPorts = append(s.routerPorts, port)
		}
		metrics, err := FreePort()
		if err != nil {
			return nil, err
		}
		s.metricsPorts = append(s.metricsPorts, metrics)
	}
	for _, port := range s.routerPorts {
		s.RouterURLs = append(s.RouterURLs, fmt.Sprintf("http://127.0.0.1:%d", port))
	}
	if s.Opts.Federation {
		if err = writeSelfSignedCert(s.Path("tls.crt"), s.Path("tls.key")); err != nil {
			return nil, err
		}
	}
	if pg := s.Opts.Postgres; pg != nil {
		names := []string{"presence_router"}
		if s.Opts.Workers {
			names = append(names, "synapse")
		}
		for _, name := range names {
			if err = pg.EnsureDatabase(context.Background(), name); err != nil {
				return nil, err
			}
		}
	}
	if s.Opts.Plain {
		return s, s.writeSynapseConfig("")
	}
	tokenFile := s.Path("router-token")
	if data, err := os.ReadFile(tokenFile); err == nil {
		s.RouterToken = strings.TrimSpace(string(data))
	} else {
		s.RouterToken = randomHex(24)
		if err = os.WriteFile(tokenFile, []byte(s.RouterToken+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("failed to write token file: %w", err)
		}
	}
	regenerate := false
	if _, err = os.Stat(s.Path("config.yaml")); err == nil {
		// Kept from an earlier run: brought in line with these options.
		if regenerate, err = s.updateRouterConfig(); err != nil {
			return nil, err
		}
	} else if err = s.writeRouterConfig(tokenFile); err != nil {
		return nil, err
	}
	if _, err = os.Stat(s.Path("registration.yaml")); err != nil || regenerate {
		out, err := exec.Command(opts.Binary, "-c", s.Path("config.yaml"), "-g", "-r", s.Path("registration.yaml")).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("presence-router -g failed: %w\n%s", err, out)
		}
		s.GenerateOutput = string(out)
	}
	if s.Opts.Standby {
		if err = s.writeStandbyConfigs(); err != nil {
			return nil, err
		}
	}
	if err = s.writeSynapseConfig(tokenFile); err != nil {
		return nil, err
	}
	return s, nil
}

// writeStandbyConfigs writes the standby's config, standby.yaml: the
// active one's (with the tokens -g put there) with its own appservice port
// and metrics listener, as docs/high-availability.md says to on one host;
// and HAProxy's config, haproxy.cfg.
func (s *Stack) writeStandbyConfigs() error {
	data, err := os.ReadFile(s.Path(routerConfigs[0]))
	if err != nil {
		return fmt.Errorf("failed to read %s: %w", routerConfigs[0], err)
	}
	// -g rewrote the file (indented by four): match any indentation.
	port := regexp.MustCompile(fmt.Sprintf(`(?m)^(\s+port: )%d$`, s.routerPorts[0]))
	listen := regexp.MustCompile(fmt.Sprintf(`(?m)^(\s+listen: 127\.0\.0\.1:)%d$`, s.metricsPorts[0]))
	standby := port.ReplaceAllString(string(data), fmt.Sprintf("${1}%d", s.routerPorts[1]))
	standby = listen.ReplaceAllString(standby, fmt.Sprintf("${1}%d", s.metricsPorts[1]))
	if standby == string(data) {
		return fmt.Errorf("%s has no appservice.port %d to change", routerConfigs[0], s.routerPorts[0])
	}
	if err = os.WriteFile(s.Path(routerConfigs[1]), []byte(standby), 0o600); err != nil {
		return fmt.Errorf("failed to write %s: %w", routerConfigs[1], err)
	}
	var cfg bytes.Buffer
	if err = haproxyConfig.Execute(&cfg, map[string]any{"Port": s.Opts.RouterPort, "Backends": s.routerPorts}); err != nil {
		return fmt.Errorf("failed to render haproxy.cfg: %w", err)
	}
	return os.WriteFile(s.Path("haproxy.cfg"), cfg.Bytes(), 0o644)
}

// haproxyConfig sends Synapse's appservice traffic to whichever
// presence-router process is ready (the active one), checking each every
// second; a connection to a process that just died is retried on the other.
var haproxyConfig = template.Must(template.New("haproxy.cfg").Parse(`defaults
    mode http
    timeout connect 2s
    timeout client 90s
    timeout server 90s
    retries 3
    option redispatch

frontend presence_router
    bind 127.0.0.1:{{.Port}}
    default_backend presence_router

backend presence_router
    option httpchk GET /_matrix/mau/ready
    http-check expect status 200
    default-server inter 1s fall 2 rise 1
{{- range $i, $port := .Backends}}
    server presence_router_{{$i}} 127.0.0.1:{{$port}} check
{{- end}}
`))

// planProcesses names Synapse's processes and picks their ports.
func (s *Stack) planProcesses() error {
	main := &Process{Name: MainProcess, client: s.Opts.SynapsePort, Log: "synapse.log"}
	s.Processes = []*Process{main}
	if !s.Opts.Workers {
		main.URL = s.SynapseURL
		return nil
	}
	if s.Opts.Postgres == nil || s.Opts.RedisPort == 0 {
		return errors.New("the worker deployment needs a PostgreSQL server and a Redis port")
	}
	s.Processes = append(s.Processes, &Process{Name: PresenceWriter, Log: PresenceWriter + ".log"}, &Process{Name: SyncWorker, Log: SyncWorker + ".log"})
	for _, p := range s.Processes {
		var err error
		if p.client == 0 {
			if p.client, err = FreePort(); err != nil {
				return err
			}
		}
		if p.metrics, err = FreePort(); err != nil {
			return err
		}
		if p.Name != SyncWorker { // main and the stream writer are in instance_map
			if p.replication, err = FreePort(); err != nil {
				return err
			}
		}
		p.URL = fmt.Sprintf("http://127.0.0.1:%d", p.client)
		p.MetricsURL = fmt.Sprintf("http://127.0.0.1:%d/_synapse/metrics", p.metrics)
	}
	return nil
}

// Process returns Synapse's process called name (MainProcess, ...).
func (s *Stack) Process(name string) *Process {
	for _, p := range s.Processes {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// routerEncryption is the encryption section of presence-router's config
// (the pickle key made by -g).
func (s *Stack) routerEncryption() string {
	if !s.Opts.Encryption {
		return ""
	}
	level := s.Opts.VerificationLevel
	if level == "" {
		level = "cross-signed-tofu"
	}
	return fmt.Sprintf("encryption:\n  enabled: true\n  pickle_key: generate-with-g\n  verification_level: %s\n", level)
}

// SetVerificationLevel rewrites encryption.verification_level in
// presence-router's config; it counts from the next start.
func (s *Stack) SetVerificationLevel(level string) error {
	path := s.Path("config.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("failed to read %s: %w", path, err)
	}
	re := regexp.MustCompile(`(?m)^(\s*verification_level:).*$`)
	if !re.Match(data) {
		return fmt.Errorf("%s has no verification_level", path)
	}
	return os.WriteFile(path, re.ReplaceAll(data, []byte("${1} "+level)), 0o600)
}

// routerDatabase is the database section of presence-router's config.
func (s *Stack) routerDatabase() string {
	if s.Opts.Postgres != nil {
		return fmt.Sprintf("  type: postgres\n  uri: %s\n", s.Opts.Postgres.URI("presence_router"))
	}
	return fmt.Sprintf("  path: %s\n", s.Path("presence-router.db"))
}

func (s *Stack) writeRouterConfig(tokenFile string) error {
	path := s.Path("config.yaml")
	var admins strings.Builder
	for _, a := range s.Opts.Admins {
		fmt.Fprintf(&admins, "    - \"@%s:%s\"\n", a, s.Opts.ServerName)
	}
	if pl := s.Opts.AdminPowerLevel; pl != nil {
		fmt.Fprintf(&admins, "  admin_power_level: %d\n", *pl)
	}
	cfg := fmt.Sprintf(`homeserver:
  address: %s
  domain: %s
appservice:
  address: %s
  hostname: 127.0.0.1
  port: %d
  id: presence-router
  bot_username: presence
  as_token: generate-with-g
  hs_token: generate-with-g
bot:
  control_room: "#control:%s"
  command_prefix: "!presence"
  admins:
%srouter:
  token_file: %s
database:
%slogging:
  level: debug
  format: text
metrics:
  enabled: true
  listen: 127.0.0.1:%d
%s`, s.SynapseURL, s.Opts.ServerName, s.RouterURL, s.routerPorts[0], s.Opts.ServerName, admins.String(), tokenFile, s.routerDatabase(), s.metricsPorts[0], s.routerEncryption())
	return os.WriteFile(path, []byte(cfg), 0o600)
}

// RouterDB opens presence-router's database for reading (SQLite or
// PostgreSQL); queries use $1 placeholders, which both drivers take.
func (s *Stack) RouterDB() (*sql.DB, error) {
	if s.Opts.Postgres != nil {
		return sql.Open("postgres", s.Opts.Postgres.URI("presence_router"))
	}
	return sql.Open("sqlite3", "file:"+s.Path("presence-router.db")+"?mode=ro")
}

// MetricsURL is where presence-router serves /metrics.
func (s *Stack) MetricsURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d/metrics", s.Opts.MetricsPort)
}

func (s *Stack) writeSynapseConfig(tokenFile string) error {
	// push is left to its default, auto: the main process writes presence.
	url := s.RouterURL
	if s.Opts.Standby {
		url = "[" + strings.Join(s.RouterURLs, ", ") + "]"
	}
	adapterConfig := fmt.Sprintf("url: %s\ntoken_file: %s\ntimeout: 5\npoll_timeout: 20000", url, tokenFile)
	indent := func(text, prefix string) string { return prefix + strings.ReplaceAll(text, "\n", "\n"+prefix) }
	presence := "presence:\n  enabled: true\n"
	modules := "modules:\n  - module: presence_router_adapter.PresenceRouterAdapter\n    config:\n" + indent(adapterConfig, "      ") + "\n"
	if s.Opts.Legacy {
		presence += "  presence_router:\n    module: presence_router_adapter.PresenceRouterAdapter\n    config:\n" + indent(adapterConfig, "      ") + "\n"
		modules = ""
	}
	appservices := fmt.Sprintf("app_service_config_files:\n  - %s\n", s.Path("registration.yaml"))
	if s.Opts.Plain {
		appservices, modules = "", ""
	}
	federation := ""
	if s.Opts.Federation {
		// Outbound federation is always TLS; the certificate is self-signed
		// and loopback is a blocked range unless allowed.
		federation = fmt.Sprintf(`  - port: %d
    bind_addresses: ['127.0.0.1']
    type: http
    tls: true
    x_forwarded: false
    resources:
      - names: [federation]
        compress: false
`, s.Opts.FederationPort)
		federation += fmt.Sprintf("tls_certificate_path: %s\ntls_private_key_path: %s\n", s.Path("tls.crt"), s.Path("tls.key"))
		// ip_range_whitelist is not enough: Synapse 1.163 checks a server
		// name that is an IP literal against the blocklist alone. This is
		// the default blocklist less the loopback ranges.
		federation += "federation_verify_certificates: false\nip_range_blacklist: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10', '192.0.0.0/24', '169.254.0.0/16', '192.88.99.0/24', '198.18.0.0/15', '192.0.2.0/24', '198.51.100.0/24', '203.0.113.0/24', '224.0.0.0/4', 'fe80::/10', 'fc00::/7', '2001:db8::/32', 'ff00::/8', 'fec0::/10']\n"
	}
	database := fmt.Sprintf("database:\n  name: sqlite3\n  args:\n    database: %s\n", s.Path("homeserver.db"))
	if s.Opts.Workers {
		database = s.workersConfig(&federation)
		if err := s.writeWorkerConfigs(); err != nil {
			return err
		}
	}
	secrets, err := s.synapseSecrets()
	if err != nil {
		return err
	}
	var cfg bytes.Buffer
	err = synapseConfig.Execute(&cfg, map[string]any{
		"ServerName": s.Opts.ServerName, "PIDFile": s.Path("homeserver.pid"), "Port": s.Opts.SynapsePort,
		"Listeners": federation, "Database": database, "Media": s.Path("media"), "SigningKey": s.Path("signing.key"),
		"RegistrationSecret": secrets["RegistrationSecret"], "MacaroonSecret": secrets["MacaroonSecret"], "FormSecret": secrets["FormSecret"],
		"AppServices": appservices, "Presence": presence, "Modules": modules,
		"RateLimited": []string{"rc_message", "rc_registration", "rc_room_creation"},
	})
	if err != nil {
		return fmt.Errorf("failed to render homeserver.yaml: %w", err)
	}
	return s.writeGenerated("homeserver.yaml", cfg.Bytes())
}

// unlimited is the rate limit of everything the tests do in bulk.
const unlimited = "{per_second: 1000, burst_count: 1000}"

// synapseConfig is Synapse's homeserver.yaml for a stack. Listeners,
// Database, AppServices, Presence and Modules are whole YAML sections (or
// ""), each ending in a newline.
var synapseConfig = template.Must(template.New("homeserver.yaml").Parse(`server_name: "{{.ServerName}}"
pid_file: {{.PIDFile}}
report_stats: false
listeners:
  - port: {{.Port}}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
{{.Listeners}}{{.Database}}media_store_path: {{.Media}}
signing_key_path: {{.SigningKey}}
trusted_key_servers: []
suppress_key_server_warning: true
enable_registration: true
enable_registration_without_verification: true
registration_shared_secret: {{.RegistrationSecret}}
macaroon_secret_key: {{.MacaroonSecret}}
form_secret: {{.FormSecret}}
{{.AppServices}}{{.Presence}}{{.Modules}}{{range .RateLimited}}{{.}}: ` + unlimited + `
{{end}}rc_presence:
  per_user: ` + unlimited + `
rc_login:
  address: ` + unlimited + `
  account: ` + unlimited + `
  failed_attempts: ` + unlimited + `
rc_joins:
  local: ` + unlimited + `
  remote: ` + unlimited + `
rc_joins_per_room: ` + unlimited + `
rc_invites:
  per_room: ` + unlimited + `
  per_user: ` + unlimited + `
  per_issuer: ` + unlimited + `
rc_admin_redaction: ` + unlimited + `
rc_3pid_validation: ` + unlimited + `
`))

// workersConfig returns the database section of the shared config for the
// worker deployment, and adds main's extra listeners and the shared worker
// settings to extra (which follows main's client listener).
func (s *Stack) workersConfig(extra *string) string {
	main, writer := s.Process(MainProcess), s.Process(PresenceWriter)
	*extra = fmt.Sprintf(`  - port: %d
    bind_addresses: ['127.0.0.1']
    type: http
    resources:
      - names: [replication]
  - port: %d
    bind_addresses: ['127.0.0.1']
    type: metrics
`, main.replication, main.metrics) + *extra + fmt.Sprintf(`enable_metrics: true
redis:
  enabled: true
  host: 127.0.0.1
  port: %d
instance_map:
  %s:
    host: 127.0.0.1
    port: %d
  %s:
    host: 127.0.0.1
    port: %d
stream_writers:
  presence: %s
`, s.Opts.RedisPort, MainProcess, main.replication, PresenceWriter, writer.replication, PresenceWriter)
	return fmt.Sprintf(`database:
  name: psycopg2
  args:
    user: postgres
    database: synapse
    host: 127.0.0.1
    port: %d
    cp_min: 1
    cp_max: 5
`, s.Opts.Postgres.Port)
}

// writeWorkerConfigs writes each worker's own config file, <name>.yaml.
func (s *Stack) writeWorkerConfigs() error {
	for _, p := range s.Processes[1:] {
		replication := ""
		if p.replication != 0 {
			replication = fmt.Sprintf(`  - type: http
    port: %d
    bind_addresses: ['127.0.0.1']
    resources:
      - names: [replication]
`, p.replication)
		}
		cfg := fmt.Sprintf(`worker_app: synapse.app.generic_worker
worker_name: %s
worker_listeners:
  - type: http
    port: %d
    bind_addresses: ['127.0.0.1']
    resources:
      - names: [client]
%s  - type: metrics
    port: %d
    bind_addresses: ['127.0.0.1']
`, p.Name, p.client, replication, p.metrics)
		if err := os.WriteFile(s.Path(p.Name+".yaml"), []byte(cfg), 0o600); err != nil {
			return fmt.Errorf("failed to write %s.yaml: %w", p.Name, err)
		}
	}
	return nil
}

// writeSelfSignedCert writes a certificate for 127.0.0.1 and ::1 and its key,
// unless they exist.
func writeSelfSignedCert(certPath, keyPath string) error {
	if _, err := os.Stat(certPath); err == nil {
		return nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("failed to generate a TLS key: %w", err)
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("failed to create a TLS certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("failed to encode the TLS key: %w", err)
	}
	if err = os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return fmt.Errorf("failed to write the TLS certificate: %w", err)
	}
	if err = os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return fmt.Errorf("failed to write the TLS key: %w", err)
	}
	return nil
}

// process is a child process started in its own process group, with its
// output in a log file.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once it has exited and been reaped
}

// CPUTime returns the CPU time (user and system) the Synapse process has
// used so far, from /proc.
func (p *Process) CPUTime() (time.Duration, error) {
	if p.proc == nil {
		return 0, errors.New("the process is not running")
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.proc.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("failed to read the process's CPU time: %w", err)
	}
	// The fields after the command name, which is in parentheses.
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("failed to read the process's CPU time: %q", data)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err = errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("failed to read the process's CPU time: %w", err)
	}
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticksPerSecond, nil
}

// startProcess starts name with args, its output appended to logPath.
func startProcess(name string, logPath string, args ...string) (*process, error) {
	return startCmd(exec.Command(name, args...), logPath)
}

// startCmd starts cmd (whose SysProcAttr may carry credentials) in its own
// process group, its output appended to logPath.
func startCmd(cmd *exec.Cmd, logPath string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("failed to open %s: %w", logPath, err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err = cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("failed to start %s: %w", cmd.Path, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// stopProcess sends sig to p's process group and waits up to 15 s for p to
// exit, then kills the group.
func stopProcess(p *process, sig syscall.Signal) {
	if p == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// WaitHTTP waits until GET url answers 200.
func WaitHTTP(ctx context.Context, url string) error {
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("failed to reach %s: %w", url, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// StartSynapse starts Synapse's processes, main first (it migrates the
// database), and waits for each one's /health.
func (s *Stack) StartSynapse(ctx context.Context) error {
	for i, p := range s.Processes {
		args := []string{"-m", "synapse.app.homeserver", "-c", s.Path("homeserver.yaml")}
		if i > 0 {
			args = []string{"-m", "synapse.app.generic_worker", "--config-path", s.Path("homeserver.yaml"), "--config-path", s.Path(p.Name + ".yaml")}
		}
		var err error
		if p.proc, err = startProcess(s.Opts.Python, s.Path(p.Log), args...); err != nil {
			return err
		}
		waitCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
		err = WaitHTTP(waitCtx, p.URL+"/health")
		cancel()
		if err != nil {
			return fmt.Errorf("synapse's %s process did not start: %w\n%s", p.Name, err, s.Tail(p.Log, 40))
		}
	}
	return nil
}

// StartRouter starts presence-router and waits for /_matrix/mau/live;
// with Standby, both processes (the first one becomes the active one) and
// HAProxy in front of them.
func (s *Stack) StartRouter(ctx context.Context) error {
	for i := range s.RouterURLs {
		if err := s.StartRouterProcess(ctx, i); err != nil {
			return err
		}
		if i == 0 && s.Opts.Standby {
			// The first one is the active one: its bot is starting.
			waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := WaitHTTP(waitCtx, s.RouterURLs[0]+"/_matrix/mau/ready")
			cancel()
			if err != nil {
				return fmt.Errorf("presence-router did not become active: %w\n%s", err, s.Tail(RouterLog(0), 40))
			}
		}
	}
	if !s.Opts.Standby || s.haproxy != nil {
		return nil
	}
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/haproxy"); err != nil {
			return errors.New("haproxy is not installed (Debian: apt-get install haproxy; `make test` does it as root)")
		}
	}
	if s.haproxy, err = startProcess(bin, s.Path("haproxy.log"), "-f", s.Path("haproxy.cfg"), "-db"); err != nil {
		return err
	}
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err = WaitHTTP(waitCtx, s.RouterURL+"/_matrix/mau/ready"); err != nil {
		return fmt.Errorf("HAProxy did not pass requests to presence-router: %w\n%s", err, s.Tail("haproxy.log", 40))
	}
	return nil
}

// RouterLog is the log of presence-router process i (0 for the only, or
// the first, process).
func RouterLog(i int) string { return []string{"presence-router.log", "standby.log"}[i] }

// StartRouterProcess starts presence-router process i (see RouterURLs) and
// waits for its /_matrix/mau/live.
func (s *Stack) StartRouterProcess(ctx context.Context, i int) error {
	if s.routers == nil {
		s.routers = make([]*process, len(s.RouterURLs))
	}
	var err error
	s.routers[i], err = startProcess(s.Opts.Binary, s.Path(RouterLog(i)), "-c", s.Path(routerConfigs[i]))
	if err != nil {
		return err
	}
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err = WaitHTTP(waitCtx, s.RouterURLs[i]+"/_matrix/mau/live"); err != nil {
		return fmt.Errorf("presence-router did not start: %w\n%s", err, s.Tail(RouterLog(i), 40))
	}
	return nil
}

// StopRouter stops presence-router (SIGTERM, then SIGKILL): every process.
func (s *Stack) StopRouter() {
	for i := range s.routers {
		s.stopRouterProcess(i, syscall.SIGTERM)
	}
}

// KillRouter kills presence-router with SIGKILL: every process.
func (s *Stack) KillRouter() {
	for i := range s.routers {
		s.stopRouterProcess(i, syscall.SIGKILL)
	}
}

// KillRouterProcess kills presence-router process i with SIGKILL.
func (s *Stack) KillRouterProcess(i int) { s.stopRouterProcess(i, syscall.SIGKILL) }

func (s *Stack) stopRouterProcess(i int, sig syscall.Signal) {
	if i < len(s.routers) {
		stopProcess(s.routers[i], sig)
		s.routers[i] = nil
	}
}

// StopSynapse stops Synapse's processes (SIGTERM), workers first;
// StartSynapse starts them again.
func (s *Stack) StopSynapse() {
	for i := len(s.Processes) - 1; i >= 0; i-- {
		stopProcess(s.Processes[i].proc, syscall.SIGTERM)
		s.Processes[i].proc = nil
	}
}

// Stop stops everything it started.
func (s *Stack) Stop() {
	stopProcess(s.haproxy, syscall.SIGTERM)
	s.haproxy = nil
	s.StopRouter()
	s.StopSynapse()
}

// Tail returns the last n lines of a log in the state directory.
func (s *Stack) Tail(name string, n int) string {
	data, err := os.ReadFile(s.Path(name))
	if err != nil {
		return fmt.Sprintf("(no %s: %v)", name, err)
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return fmt.Sprintf("--- last %d lines of %s ---\n%s\n", len(lines), name, bytes.Join(lines, []byte("\n")))
}

// User registers (or logs in) a user and returns a client for it.
func (s *Stack) User(ctx context.Context, localpart, password string) (*mautrix.Client, error) {
	cli, err := mautrix.NewClient(s.SynapseURL, "", "")
	if err != nil {
		return nil, err
	}
	resp, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: localpart, Password: password})
	if errors.Is(err, mautrix.MUserInUse) {
		login, lerr := cli.Login(ctx, &mautrix.ReqLogin{
			Type:       mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: localpart},
			Password:   password,
		})
		if lerr != nil {
			return nil, fmt.Errorf("failed to log in %s: %w", localpart, lerr)
		}
		cli.UserID, cli.AccessToken, cli.DeviceID = login.UserID, login.AccessToken, login.DeviceID
		return cli, nil
	} else if err != nil {
		return nil, fmt.Errorf("failed to register %s: %w", localpart, err)
	}
	cli.UserID, cli.AccessToken, cli.DeviceID = resp.UserID, resp.AccessToken, resp.DeviceID
	return cli, nil
}

// logContextWarnings are what Synapse logs when a module loses or leaks a
// logging context.
var logContextWarnings = []string{"Expected logging context", "from sentinel context", "Re-starting finished log context", "Called stop on logcontext"}

// synapseOwnContexts are logging contexts whose warnings are Synapse's own
// doing, never the adapter's: the appservice sender, when a transaction to
// presence-router fails (it is stopped or killed), marks the service down
// with run_in_background(_on_txn_fail) from its "as-sender-N" context, and
// that work outlives the context (synapse/appservice/scheduler.py,
// _TransactionController.send; the pattern of element-hq/synapse#12797).
var synapseOwnContexts = []string{" - as-sender-"}

// LogContextWarnings returns the lines of a Synapse log in the state
// directory that say a logging context was lost or leaked, and how many
// such lines it left out as Synapse's own (synapseOwnContexts).
func (s *Stack) LogContextWarnings(name string) (found []string, synapseOwn int, err error) {
	data, err := os.ReadFile(s.Path(name))
	if err != nil {
		return nil, 0, fmt.Errorf("failed to read %s: %w", name, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		for _, warning := range logContextWarnings {
			if !strings.Contains(line, warning) {
				continue
			}
			if slices.ContainsFunc(synapseOwnContexts, func(c string) bool { return strings.Contains(line, c) }) {
				synapseOwn++
			} else {
				found = append(found, line)
			}
			break
		}
	}
	return found, synapseOwn, nil
}

// ServerName is the stack's server name.
func (s *Stack) ServerName() string { return s.Opts.ServerName }

// UserID is the ID of a user of this stack's homeserver.
func (s *Stack) UserID(localpart string) id.UserID {
	return id.NewUserID(localpart, s.Opts.ServerName)
}

// BotID is the bot's user ID.
func (s *Stack) BotID() id.UserID { return s.UserID("presence") }

// botFor is the ID of the bot on the homeserver of user.
func botFor(user id.UserID) id.UserID { return id.NewUserID("presence", user.Homeserver()) }

func dialTCP(port int) (net.Conn, error) {
	return net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
}
