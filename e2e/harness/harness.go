// Package harness brings up a real Synapse with the presence-router adapter
// and a presence-router process on loopback, for the end-to-end tests and
// for `make run`.
package harness

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// ServerName is the test homeserver's server_name.
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
}

// Stack is a running Synapse and presence-router.
type Stack struct {
	Opts        Options
	SynapseURL  string
	RouterURL   string
	RouterToken string
	synapse     *exec.Cmd
	router      *exec.Cmd
}

// Path returns a path in the state directory.
func (s *Stack) Path(name string) string { return filepath.Join(s.Opts.Dir, name) }

// FreePort returns a free TCP port on 127.0.0.1.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("failed to find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

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
	s.SynapseURL = fmt.Sprintf("http://127.0.0.1:%d", s.Opts.SynapsePort)
	s.RouterURL = fmt.Sprintf("http://127.0.0.1:%d", s.Opts.RouterPort)
	tokenFile := s.Path("router-token")
	if data, err := os.ReadFile(tokenFile); err == nil {
		s.RouterToken = strings.TrimSpace(string(data))
	} else {
		s.RouterToken = randomHex(24)
		if err = os.WriteFile(tokenFile, []byte(s.RouterToken+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("failed to write token file: %w", err)
		}
	}
	if err = s.writeRouterConfig(tokenFile); err != nil {
		return nil, err
	}
	if _, err = os.Stat(s.Path("registration.yaml")); err != nil {
		out, err := exec.Command(opts.Binary, "-c", s.Path("config.yaml"), "-g", "-r", s.Path("registration.yaml")).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("presence-router -g failed: %w\n%s", err, out)
		}
	}
	if err = s.writeSynapseConfig(tokenFile); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Stack) writeRouterConfig(tokenFile string) error {
	path := s.Path("config.yaml")
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	var admins strings.Builder
	for _, a := range s.Opts.Admins {
		fmt.Fprintf(&admins, "    - \"@%s:%s\"\n", a, ServerName)
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
  path: %s
logging:
  level: debug
  format: text
metrics:
  enabled: true
  listen: 127.0.0.1:%d
`, s.SynapseURL, ServerName, s.RouterURL, s.Opts.RouterPort, ServerName, admins.String(), tokenFile, s.Path("presence-router.db"), s.Opts.MetricsPort)
	return os.WriteFile(path, []byte(cfg), 0o600)
}

// MetricsURL is where presence-router serves /metrics.
func (s *Stack) MetricsURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d/metrics", s.Opts.MetricsPort)
}

func (s *Stack) writeSynapseConfig(tokenFile string) error {
	// push is left to its default, auto: the main process writes presence.
	adapterConfig := fmt.Sprintf("url: %s\ntoken_file: %s\ntimeout: 5\npoll_timeout: 20000", s.RouterURL, tokenFile)
	indent := func(text, prefix string) string { return prefix + strings.ReplaceAll(text, "\n", "\n"+prefix) }
	presence := "presence:\n  enabled: true\n"
	modules := "modules:\n  - module: presence_router_adapter.PresenceRouterAdapter\n    config:\n" + indent(adapterConfig, "      ") + "\n"
	if s.Opts.Legacy {
		presence += "  presence_router:\n    module: presence_router_adapter.PresenceRouterAdapter\n    config:\n" + indent(adapterConfig, "      ") + "\n"
		modules = ""
	}
	limit := "{per_second: 1000, burst_count: 1000}"
	cfg := fmt.Sprintf(`server_name: %s
pid_file: %s
report_stats: false
listeners:
  - port: %d
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: %s
media_store_path: %s
signing_key_path: %s
trusted_key_servers: []
suppress_key_server_warning: true
enable_registration: true
enable_registration_without_verification: true
registration_shared_secret: %s
macaroon_secret_key: %s
form_secret: %s
app_service_config_files:
  - %s
%s%src_message: %s
rc_registration: %s
rc_room_creation: %s
rc_presence:
  per_user: %s
rc_login:
  address: %s
  account: %s
  failed_attempts: %s
rc_joins:
  local: %s
  remote: %s
rc_joins_per_room: %s
rc_invites:
  per_room: %s
  per_user: %s
  per_issuer: %s
rc_admin_redaction: %s
rc_3pid_validation: %s
`, ServerName, s.Path("homeserver.pid"), s.Opts.SynapsePort, s.Path("homeserver.db"), s.Path("media"), s.Path("signing.key"),
		randomHex(16), randomHex(16), randomHex(16), s.Path("registration.yaml"), presence, modules,
		limit, limit, limit, limit, limit, limit, limit, limit, limit, limit, limit, limit, limit, limit, limit)
	return os.WriteFile(s.Path("homeserver.yaml"), []byte(cfg), 0o600)
}

func startProcess(name string, logPath string, args ...string) (*exec.Cmd, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("failed to open %s: %w", logPath, err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err = cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("failed to start %s: %w", name, err)
	}
	go func() {
		_ = cmd.Wait()
		_ = logFile.Close()
	}()
	return cmd, nil
}

func stopProcess(cmd *exec.Cmd, sig syscall.Signal) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if syscall.Kill(cmd.Process.Pid, 0) != nil || (cmd.ProcessState != nil) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
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

// StartSynapse starts Synapse and waits for /health.
func (s *Stack) StartSynapse(ctx context.Context) error {
	var err error
	s.synapse, err = startProcess(s.Opts.Python, s.Path("synapse.log"), "-m", "synapse.app.homeserver", "-c", s.Path("homeserver.yaml"))
	if err != nil {
		return err
	}
	waitCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err = WaitHTTP(waitCtx, s.SynapseURL+"/health"); err != nil {
		return fmt.Errorf("synapse did not start: %w\n%s", err, s.Tail("synapse.log", 40))
	}
	return nil
}

// StartRouter starts presence-router and waits for /_matrix/mau/live.
func (s *Stack) StartRouter(ctx context.Context) error {
	var err error
	s.router, err = startProcess(s.Opts.Binary, s.Path("presence-router.log"), "-c", s.Path("config.yaml"))
	if err != nil {
		return err
	}
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err = WaitHTTP(waitCtx, s.RouterURL+"/_matrix/mau/live"); err != nil {
		return fmt.Errorf("presence-router did not start: %w\n%s", err, s.Tail("presence-router.log", 40))
	}
	return nil
}

// StopRouter stops presence-router (SIGTERM, then SIGKILL).
func (s *Stack) StopRouter() { stopProcess(s.router, syscall.SIGTERM); s.router = nil }

// KillRouter kills presence-router with SIGKILL.
func (s *Stack) KillRouter() { stopProcess(s.router, syscall.SIGKILL); s.router = nil }

// Stop stops everything it started.
func (s *Stack) Stop() {
	s.StopRouter()
	stopProcess(s.synapse, syscall.SIGTERM)
	s.synapse = nil
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
		cli.UserID, cli.AccessToken = login.UserID, login.AccessToken
		return cli, nil
	} else if err != nil {
		return nil, fmt.Errorf("failed to register %s: %w", localpart, err)
	}
	cli.UserID, cli.AccessToken = resp.UserID, resp.AccessToken
	return cli, nil
}

// logContextWarnings are what Synapse logs when a module loses or leaks a
// logging context.
var logContextWarnings = []string{"Expected logging context", "from sentinel context", "Re-starting finished log context", "Called stop on logcontext"}

// LogContextWarnings returns the lines of a Synapse log in the state
// directory that say a logging context was lost or leaked.
func (s *Stack) LogContextWarnings(name string) ([]string, error) {
	data, err := os.ReadFile(s.Path(name))
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", name, err)
	}
	var found []string
	for _, line := range strings.Split(string(data), "\n") {
		for _, warning := range logContextWarnings {
			if strings.Contains(line, warning) {
				found = append(found, line)
				break
			}
		}
	}
	return found, nil
}

// BotID is the bot's user ID.
func BotID() id.UserID { return id.NewUserID("presence", ServerName) }
