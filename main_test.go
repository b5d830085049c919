package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.mau.fi/util/exhttp"
	"maunium.net/go/mautrix"

	"github.com/presence-router/presence-router/e2e/harness"
	"github.com/presence-router/presence-router/internal/testdb"
	"github.com/presence-router/presence-router/router"
)

func TestRun_BrokenConfigNamesTheKey(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port
	dir := t.TempDir()
	base := func(hs, token, db string, port int) string {
		return "homeserver: {address: \"" + hs + "\", domain: example.org}\n" +
			"appservice: {address: \"http://127.0.0.1:1\", hostname: 127.0.0.1, port: " + itoa(port) + ", as_token: " + token + ", hs_token: bbbbbbbbbbbbbbbb}\n" +
			"bot: {control_room: \"#c:example.org\", admins: [\"@admin:example.org\"]}\n" +
			"router: {token: cccccccccccccccc}\n" +
			"database: {path: \"" + db + "\"}\n"
	}
	goodDB := filepath.Join(dir, "ok.db")
	tests := []struct {
		name, config, key string
	}{
		{"missing homeserver", base("", "aaaaaaaaaaaaaaaa", goodDB, 1), "homeserver.address"},
		{"placeholder token", base("http://127.0.0.1:8008", "generate-with-g", goodDB, 1), "appservice.as_token"},
		{"unreadable database path", base("http://127.0.0.1:8008", "aaaaaaaaaaaaaaaa", filepath.Join(dir, "missing", "x.db"), 1), "database.path"},
		{"port in use", base("http://127.0.0.1:8008", "aaaaaaaaaaaaaaaa", goodDB, busyPort), "appservice.port"},
		{"unreadable token file", strings.Replace(base("http://127.0.0.1:8008", "aaaaaaaaaaaaaaaa", goodDB, 1), "router: {token: cccccccccccccccc}", "router: {token_file: \""+filepath.Join(dir, "no-such-token")+"\"}", 1), "router.token_file"},
		{"admin power level 0", strings.Replace(base("http://127.0.0.1:8008", "aaaaaaaaaaaaaaaa", goodDB, 1), "admins: [", "admin_power_level: 0, admins: [", 1), "bot.admin_power_level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "config.yaml")
			if err := os.WriteFile(path, []byte(tt.config), 0o600); err != nil {
				t.Fatal(err)
			}
			// A config that should be refused but is not would run the
			// service until a signal: give it 10 s.
			result := make(chan error, 1)
			go func() { result <- run(path) }()
			var err error
			select {
			case err = <-result:
			case <-time.After(10 * time.Second):
				t.Fatalf("run started with a config that must be refused; want a one-line error naming %s", tt.key)
			}
			if err == nil || !strings.Contains(err.Error(), tt.key) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("run = %v; want a one-line error naming %s", err, tt.key)
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// configWithPlaceholders is a config for -g: its tokens still to make.
const configWithPlaceholders = "homeserver: {address: \"http://127.0.0.1:8008\", domain: example.org}\n" +
	"appservice: {address: \"http://127.0.0.1:29330\", port: 29330, as_token: generate-with-g, hs_token: generate-with-g}\n" +
	"bot: {control_room: \"#c:example.org\", admins: [\"@admin:example.org\"]}\n" +
	"router: {token: generate-with-g}\n"

func TestGenerate_WritesPrivateFiles(t *testing.T) {
	dir := t.TempDir()
	configPath := filepath.Join(dir, "config.yaml")
	regPath := filepath.Join(dir, "registration.yaml")
	cfg := configWithPlaceholders
	if err := os.WriteFile(configPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, configPath+".tmp"); err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout, _ = os.Open(os.DevNull)
	err := generateRegistration(configPath, regPath)
	os.Stdout = stdout
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{configPath, regPath} {
		info, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v; want 0600 (it holds tokens)", filepath.Base(path), info.Mode().Perm())
		}
	}
	if data, _ := os.ReadFile(victim); len(data) != 0 {
		t.Errorf("-g wrote through a planted config.yaml.tmp symlink")
	}
	if data, _ := os.ReadFile(configPath); strings.Contains(string(data), "generate-with-g") {
		t.Errorf("the config still holds placeholders: %s", data)
	}
}

func TestHTTPServer_ClosesIdleConnections(t *testing.T) {
	timeouts := defaultServerTimeouts
	timeouts.Idle = 300 * time.Millisecond
	timeouts.ReadHeader = 300 * time.Millisecond
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	srv.Config = newHTTPServer(srv.Config.Handler, context.Background(), timeouts)
	srv.Start()
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	closedWithin := func(conn net.Conn, limit time.Duration) bool {
		_ = conn.SetReadDeadline(time.Now().Add(limit))
		buf := make([]byte, 4096)
		for {
			if _, err := conn.Read(buf); err != nil {
				return err == io.EOF
			}
		}
	}
	t.Run("a connection that never sends a request", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if !closedWithin(conn, 5*time.Second) {
			t.Error("an idle, unauthenticated connection stayed open")
		}
	})
	t.Run("a kept-alive connection after a request", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if !closedWithin(conn, 5*time.Second) {
			t.Error("a kept-alive connection stayed open after the idle timeout")
		}
	})
	if defaultServerTimeouts.Idle <= 0 || defaultServerTimeouts.Read <= 0 || defaultServerTimeouts.Write <= router.MaxPollTimeout {
		t.Errorf("default timeouts %+v: idle and read must be set, write above the long poll's %s", defaultServerTimeouts, router.MaxPollTimeout)
	}
}

func TestMain(m *testing.M) { testdb.Main(m, "main's tests") }

// startApp starts the service as run does, on the database at location
// (testdb's), with its own free port; it returns the app and its base URL.
func startApp(t *testing.T, location string) (*app, string) {
	t.Helper()
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	db := "database: {path: \"" + location + "\"}\n"
	if testdb.OnPostgres() {
		db = "database: {type: postgres, uri: \"" + location + "\"}\n"
	}
	// A homeserver that answers the bot's health check and nothing else.
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_matrix/client/versions" {
			exhttp.WriteJSONResponse(w, http.StatusOK, map[string]any{"versions": []string{"v1.11"}})
			return
		}
		mautrix.MUnrecognized.WithMessage("not in this test").Write(w)
	}))
	t.Cleanup(hs.Close)
	cfg := "homeserver: {address: \"" + hs.URL + "\", domain: example.org}\n" +
		"appservice: {address: \"http://127.0.0.1:1\", hostname: 127.0.0.1, port: " + itoa(port) + ", as_token: aaaaaaaaaaaaaaaa, hs_token: bbbbbbbbbbbbbbbb}\n" +
		"bot: {control_room: \"#c:example.org\", admins: [\"@admin:example.org\"]}\n" +
		"router: {token: cccccccccccccccc}\n" + db + "logging: {level: warn}\n"
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err = os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c, log, token, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	log.SetOutput(io.Discard)
	a, err := newApp(path, c, log, token)
	if err != nil {
		t.Fatal(err)
	}
	if err = a.start(); err != nil {
		a.stop()
		a.close()
		return nil, err.Error()
	}
	t.Cleanup(func() { a.stop(); a.close() })
	return a, "http://127.0.0.1:" + itoa(port)
}

// readiness is GET /_matrix/mau/ready: the status and the answer.
func readiness(t *testing.T, base string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(base + "/_matrix/mau/ready")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

// On SQLite a second long-running process on the same database is refused
// at start, saying what to use instead.
func TestRun_SecondProcessOnOneSQLiteDatabaseIsRefused(t *testing.T) {
	if testdb.OnPostgres() {
		t.Skip("SQLite only: on PostgreSQL a second process stands by (TestRun_StandbyTakesOverOnPostgres)")
	}
	location := testdb.NewLocation(t)
	if a, msg := startApp(t, location); a == nil {
		t.Fatalf("the first process did not start: %s", msg)
	}
	a, msg := startApp(t, location)
	if a != nil {
		t.Fatal("a second process started on the same SQLite database")
	}
	for _, want := range []string{"database.path", "another presence-router process", "PostgreSQL"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the refusal %q does not say %q", msg, want)
		}
	}
}

// On PostgreSQL the second process stands by: it serves the routing API,
// answers ready with 503 and a reason (so that a load balancer sends
// transactions to the active one), refuses transactions, and takes over
// within seconds when the active process stops.
func TestRun_StandbyTakesOverOnPostgres(t *testing.T) {
	if !testdb.OnPostgres() {
		t.Skip("PostgreSQL only (PR_TEST_POSTGRES=start, as make test runs it): SQLite refuses a second process")
	}
	location := testdb.NewLocation(t)
	active, activeURL := startApp(t, location)
	if active == nil {
		t.Fatalf("the first process did not start: %s", activeURL)
	}
	standby, standbyURL := startApp(t, location)
	if standby == nil {
		t.Fatalf("the second process did not start: %s", standbyURL)
	}
	// Ready once the bot's first check finds the homeserver answering.
	code, body := readiness(t, activeURL)
	for deadline := time.Now().Add(5 * time.Second); code != http.StatusOK && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		code, body = readiness(t, activeURL)
	}
	if code != http.StatusOK || body["active"] != true {
		t.Fatalf("the first process: ready %d %v, want 200 and active", code, body)
	}
	code, body = readiness(t, standbyURL)
	if code != http.StatusServiceUnavailable || body["active"] != false || !strings.Contains(fmt.Sprint(body["reason"]), "standby") {
		t.Fatalf("the second process: ready %d %v, want 503, not active, with the reason", code, body)
	}
	req, _ := http.NewRequest(http.MethodPut, standbyURL+"/_matrix/app/v1/transactions/1", strings.NewReader(`{"events":[]}`))
	req.Header.Set("Authorization", "Bearer bbbbbbbbbbbbbbbb")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("the standby answered a transaction %d, want 503", resp.StatusCode)
	}
	// The routing API answers on the standby.
	req, _ = http.NewRequest(http.MethodGet, standbyURL+"/_presence_router/v1/rules", nil)
	req.Header.Set("Authorization", "Bearer cccccccccccccccc")
	if resp, err = http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the standby's routing API: %v %v", resp, err)
	}
	resp.Body.Close()
	active.stop()
	active.close()
	start := time.Now()
	for time.Since(start) < 10*time.Second {
		if code, body = readiness(t, standbyURL); code == http.StatusOK && body["active"] == true {
			t.Logf("the standby took over %s after the active process stopped", time.Since(start).Round(time.Millisecond))
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("the standby did not take over within 10 s: ready %d %v", code, body)
}

// The container image's entrypoint, start by start, as an operator meets
// it: a config to edit, then the registration, then the service.
func TestContainerStart_FirstStartsTellTheOperatorWhatToDo(t *testing.T) {
	dir := t.TempDir()
	stdout := os.Stdout
	os.Stdout, _ = os.Open(os.DevNull) // -g's own next steps
	defer func() { os.Stdout = stdout }()
	var out strings.Builder
	steps := []struct {
		name    string
		before  func()
		run     bool
		say     []string
		errText string
	}{
		{"an empty data directory gets a config with placeholders", nil, false,
			[]string{"Wrote " + filepath.Join(dir, "config.yaml") + " with placeholders", "homeserver.address", "bot.admins", "start the container again"}, ""},
		{"an unedited config is refused", nil, false, nil, "still has the example's homeserver.domain"},
		{"an edited config gets its registration", func() {
			data, _ := os.ReadFile(filepath.Join(dir, "config.yaml"))
			_ = os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(strings.ReplaceAll(string(data), "example.org", "example.com")), 0o600)
		}, false, []string{"Wrote the appservice registration to " + filepath.Join(dir, "registration.yaml"), "app_service_config_files"}, ""},
		{"then it runs", nil, true, nil, ""},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			if step.before != nil {
				step.before()
			}
			out.Reset()
			configPath, run, err := containerStart(dir, &out)
			if step.errText != "" {
				if err == nil || !strings.Contains(err.Error(), step.errText) {
					t.Fatalf("err = %v, want %q", err, step.errText)
				}
				return
			}
			if err != nil || run != step.run {
				t.Fatalf("run %v, err %v; want run %v", run, err, step.run)
			}
			for _, want := range step.say {
				if !strings.Contains(out.String(), want) {
					t.Errorf("the start said %q; want it to say %q", out.String(), want)
				}
			}
			if run && configPath != filepath.Join(dir, "config.yaml") {
				t.Errorf("config %s", configPath)
			}
		})
	}
	data, _ := os.ReadFile(filepath.Join(dir, "config.yaml"))
	for _, want := range []string{"hostname: 0.0.0.0", "path: " + filepath.Join(dir, "presence-router.db")} {
		if !strings.Contains(string(data), want) {
			t.Errorf("the written config lacks %q", want)
		}
	}
	if info, err := os.Stat(filepath.Join(dir, "config.yaml")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("config.yaml: %v %v, want mode 0600 (it holds tokens)", info, err)
	}
}

func TestContainerStart_AnUnusableDataDirectorySaysWhatToDo(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	_ = os.WriteFile(file, nil, 0o600)
	for name, tt := range map[string]struct{ dir, want string }{
		"missing":         {filepath.Join(t.TempDir(), "nope"), "mount a volume there"},
		"not a directory": {file, "is not a directory"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, _, err := containerStart(tt.dir, io.Discard); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// captureStdout runs fn and returns what it printed.
func captureStdout(t *testing.T, fn func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() {
		data, _ := io.ReadAll(r)
		done <- string(data)
	}()
	fn()
	os.Stdout = stdout
	w.Close()
	return <-done
}

// -g run again after encryption was turned on says what changed in the
// registration (its sender) and that Synapse must be restarted.
func TestGenerate_SaysWhatChangedInTheRegistration(t *testing.T) {
	dir := t.TempDir()
	configPath, regPath := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "registration.yaml")
	cfg := configWithPlaceholders + "encryption: {enabled: false}\n"
	if err := os.WriteFile(configPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var err error
	first := captureStdout(t, func() { err = generateRegistration(configPath, regPath) })
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(first, "Changed in the registration") {
		t.Errorf("a first -g reports changes: %s", first)
	}
	data, _ := os.ReadFile(configPath)
	if err = os.WriteFile(configPath, []byte(strings.Replace(string(data), "enabled: false", "enabled: true", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	second := captureStdout(t, func() { err = generateRegistration(configPath, regPath) })
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"restart Synapse", `sender_localpart "presence" → "presence-appservice"`, "hs_token are new"} {
		if !strings.Contains(second, want) {
			t.Errorf("-g after turning encryption on does not say %q:\n%s", want, second)
		}
	}
}

// export and import: a file imported into an empty database and exported
// again is the same file; --dry-run changes nothing; an import makes the
// lists what the file says in one change; a malformed file names its line
// and changes nothing.
func TestExportImport_RoundTripAndGuards(t *testing.T) {
	dir := t.TempDir()
	configPath, regPath := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "registration.yaml")
	cfg := configWithPlaceholders + "database: {path: \"" + filepath.Join(dir, "pr.db") + "\"}\nlogging: {level: error}\n"
	if err := os.WriteFile(configPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var err error
	captureStdout(t, func() { err = generateRegistration(configPath, regPath) })
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "lists.yaml")
	original := "always_send:\n  - user: \"@dash:example.org\"\n    reason: Support dashboard\nblacklist:\n  - user: \"@whatsapp_*:example.org\"\n    reason: WhatsApp puppets\n  - user: \"@ceo:example.org\"\n"
	if err = os.WriteFile(file, []byte(original), 0o600); err != nil {
		t.Fatal(err)
	}
	export := func() string {
		out := captureStdout(t, func() { err = runExportLists(configPath) })
		if err != nil {
			t.Fatal(err)
		}
		_, body, _ := strings.Cut(out, "--dry-run first shows what would change).\n")
		return body
	}
	run := func(dry bool) string {
		out := captureStdout(t, func() { err = runImportLists(configPath, file, dry) })
		if err != nil {
			t.Fatalf("import: %v", err)
		}
		return out
	}
	if out := run(true); !strings.Contains(out, "Dry run") || !strings.Contains(out, "always-send +1 -0, blacklist +2 -0") || export() != "always_send: []\nblacklist: []\ngroups: []\n" {
		t.Errorf("a dry run said %q and left %q", out, export())
	}
	if out := run(false); !strings.Contains(out, "Version 1") {
		t.Errorf("import: %q", out)
	}
	exported := export()
	if err = os.WriteFile(file, []byte(exported), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := run(false); !strings.Contains(out, "+0 -0") || !strings.Contains(out, "Nothing to change") {
		t.Errorf("importing the export again: %q", out)
	}
	if again := export(); again != exported {
		t.Errorf("the round trip changed the lists:\n%s\nvs\n%s", again, exported)
	}
	for _, want := range []string{"@dash:example.org", "Support dashboard", "@whatsapp_*:example.org", "WhatsApp puppets", "@ceo:example.org"} {
		if !strings.Contains(exported, want) {
			t.Errorf("the export lacks %q:\n%s", want, exported)
		}
	}
	// Groups: created with their members and reasons, exported, and
	// imported back unchanged.
	groups := "groups:\n  - name: everyone\n    reason: replaces the directory room\n    members:\n      - user: \"@*:example.org\"\n" +
		"  - name: support\n    members:\n      - user: \"@a:example.org\"\n        reason: on call\n      - user: \"@b:example.org\"\n"
	if err = os.WriteFile(file, []byte(strings.Replace(exported, "groups: []\n", groups, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := run(false); !strings.Contains(out, "always-send +0 -0, blacklist +0 -0, groups +2 -0, group members +3 -0") {
		t.Errorf("importing groups: %q", out)
	}
	exported = export()
	for _, want := range []string{"name: everyone", "reason: replaces the directory room", "@*:example.org", "name: support", "reason: on call", "@b:example.org"} {
		if !strings.Contains(exported, want) {
			t.Errorf("the export lacks %q:\n%s", want, exported)
		}
	}
	if err = os.WriteFile(file, []byte(exported), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := run(false); !strings.Contains(out, "Nothing to change") {
		t.Errorf("importing the export with groups again: %q", out)
	}
	// A file from before groups (no groups key) leaves them as they are.
	if err = os.WriteFile(file, []byte(strings.Split(exported, "groups:")[0]), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := run(false); !strings.Contains(out, "Nothing to change") || export() != exported {
		t.Errorf("a file without groups touched them: %q\n%s", out, export())
	}
	// The lists become what the file says: dash leaves, mon comes; the
	// group support loses b, everyone goes (its member with it).
	if err = os.WriteFile(file, []byte("always_send:\n  - user: \"@mon:example.org\"\ngroups:\n  - name: support\n    members:\n      - user: \"@a:example.org\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := run(false); !strings.Contains(out, "always-send +1 -1, blacklist +0 -2, groups +0 -1, group members +0 -2") || !strings.Contains(out, "Version 3") {
		t.Errorf("a replacing import: %q", out)
	}
	if got := export(); strings.Contains(got, "everyone") || strings.Contains(got, "@b:example.org") || !strings.Contains(got, "@a:example.org") {
		t.Errorf("after the replacing import:\n%s", got)
	}
	before := export()
	if err = os.WriteFile(file, []byte("always_send:\n  - user: \"@mon:example.org\"\n  - user: nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	captureStdout(t, func() { err = runImportLists(configPath, file, false) })
	if err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("a malformed file: %v, want its line named", err)
	}
	if after := export(); after != before {
		t.Errorf("a malformed file changed the lists:\n%s", after)
	}
}
