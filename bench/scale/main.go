// Command scale measures presence-router with large lists: 1,000,000
// blacklist entries and 10,000 always-send users by default. It seeds a
// database through the store, then reports, each with its target:
//
//   - the binary's start time, until its routing API answers at the seeded
//     version (≤ 2 s), and its resident memory (≤ 200 MB);
//   - the time to apply one change, SQLite commit and router update
//     included (≤ 5 ms, p50 and p99 over 200 changes).
//
// `list` and `history` at this size are measured by the bot package's
// TestScale_ListAndHistory (PR_SCALE=1 go test -run Scale ./bot/).
//
//	go run ./bench/scale [--blacklist 1000000] [--always-send 10000] [--binary bin/presence-router] [--quick]
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/e2e/harness"
	"github.com/presence-router/presence-router/internal/benchdata"
	"github.com/presence-router/presence-router/router"
	"github.com/presence-router/presence-router/rules"
	"github.com/presence-router/presence-router/store"
)

func main() {
	blacklist := pflag.Int("blacklist", 1_000_000, "blacklist entries")
	alwaysSend := pflag.Int("always-send", 10_000, "always-send users")
	binary := pflag.String("binary", "bin/presence-router", "the presence-router binary")
	quick := pflag.Bool("quick", false, "a short smoke run (small lists)")
	pflag.Parse()
	if *quick {
		*blacklist, *alwaysSend = 10_000, 100
	}
	if err := run(*binary, *blacklist, *alwaysSend, *quick); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// seed fills the database through the store, in changes of 100,000 users.
func seed(ctx context.Context, st *store.Store, list rules.List, prefix string, n int) error {
	const batch = 100_000
	for start := 0; start < n; start += batch {
		m := rules.Mutation{Sender: "@bench:example.org", Command: "bench seed"}
		for i := start; i < min(start+batch, n); i++ {
			m.Entries = append(m.Entries, rules.Entry{List: list, UserID: id.UserID(fmt.Sprintf("@%s%07d:example.org", prefix, i)), Action: rules.Add})
		}
		if _, err := st.Apply(ctx, m); err != nil {
			return fmt.Errorf("failed to seed: %w", err)
		}
	}
	return nil
}

func run(binary string, nBlacklist, nAlways int, quick bool) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "presence-router-scale-")
	if err != nil {
		return fmt.Errorf("failed to create a temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	dbPath := filepath.Join(dir, "scale.db")
	fmt.Printf("scale: %d blacklist entries, %d always-send users\n", nBlacklist, nAlways)

	began := time.Now()
	st, err := store.Open(ctx, dbPath, zerolog.Nop())
	if err != nil {
		return err
	}
	if err = seed(ctx, st, rules.Blacklist, "blocked", nBlacklist); err != nil {
		return err
	}
	if err = seed(ctx, st, rules.AlwaysSend, "dash", nAlways); err != nil {
		return err
	}
	version, err := st.Version(ctx)
	if err != nil {
		return err
	}
	_ = st.Close()
	info, _ := os.Stat(dbPath)
	fmt.Printf("seeded in %s; database %d MB\n", time.Since(began).Round(time.Millisecond), info.Size()>>20)

	// The binary: start time and memory.
	port, err := harness.FreePort()
	if err != nil {
		return err
	}
	hsPort, err := harness.FreePort() // nothing listens: the homeserver is down
	if err != nil {
		return err
	}
	token := strings.Repeat("b", 32)
	config := filepath.Join(dir, "config.yaml")
	cfg := fmt.Sprintf(`homeserver: {address: "http://127.0.0.1:%d", domain: example.org}
appservice: {address: "http://127.0.0.1:%d", hostname: 127.0.0.1, port: %d, id: scale, bot_username: presence, as_token: generate-with-g, hs_token: generate-with-g}
bot: {control_room: "#control:example.org", admins: ["@admin:example.org"]}
router: {token: %s}
database: {path: %s}
logging: {level: warn}
`, hsPort, port, port, token, dbPath)
	if err = os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		return fmt.Errorf("failed to write config: %w", err)
	}
	if out, err := exec.Command(binary, "-c", config, "-g", "-r", filepath.Join(dir, "registration.yaml")).CombinedOutput(); err != nil {
		return fmt.Errorf("failed to generate tokens: %w: %s", err, out)
	}
	cmd := exec.Command(binary, "-c", config)
	start := time.Now()
	if err = cmd.Start(); err != nil {
		return fmt.Errorf("failed to start %s: %w", binary, err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	url := fmt.Sprintf("http://127.0.0.1:%d%sinterested_users?user_id=%%40dash0000001%%3Aexample.org", port, router.Prefix)
	client := &http.Client{Timeout: 2 * time.Second}
	var startup time.Duration
	for {
		if answeredAt(client, url, token, version) {
			startup = time.Since(start)
			break
		}
		if time.Since(start) > 60*time.Second {
			return fmt.Errorf("the routing API did not answer at version %d within 60 s", version)
		}
		time.Sleep(5 * time.Millisecond)
	}
	rssStart, _ := memory(cmd.Process.Pid)
	for range 200 {
		answeredAt(client, url, token, version)
	}
	rss, hwm := memory(cmd.Process.Pid)
	fmt.Printf("%-44s %10s   target ≤ 2s     %s\n", "start, until the routing API answers", startup.Round(time.Millisecond), verdict(startup <= 2*time.Second))
	fmt.Printf("%-44s %7d MB   target ≤ 200 MB %s (after start %d MB, peak %d MB)\n", "resident memory after 200 requests", rss>>20, verdict(rss <= 200<<20), rssStart>>20, hwm>>20)
	_ = cmd.Process.Kill()
	_ = cmd.Wait()

	// One change at a time, in process: the SQLite commit and the router.
	st, err = store.Open(ctx, dbPath, zerolog.Nop())
	if err != nil {
		return err
	}
	defer st.Close()
	loadStart := time.Now()
	snap, err := st.LoadRules(ctx)
	if err != nil {
		return err
	}
	engine := router.NewEngine("", snap.Version, snap.AlwaysSend, snap.Blacklist, nil)
	fmt.Printf("%-44s %10s\n", "load the rules into the router, in process", time.Since(loadStart).Round(time.Millisecond))
	changes := 200
	if quick {
		changes = 20
	}
	// The cap's worth of patterns (rules.MaxPatterns) besides the exact
	// entries, less the one the pattern changes below add, as a homeserver
	// with bridges would have: prefixes, suffixes, a few with ?.
	var seed []rules.Entry
	for _, p := range benchdata.Patterns(rules.MaxPatterns - 1) {
		seed = append(seed, rules.Entry{List: rules.Blacklist, UserID: p, Action: rules.Add})
	}
	res, err := st.Apply(ctx, rules.Mutation{Sender: "@admin:example.org", Command: "seed patterns", Entries: seed})
	if err != nil {
		return err
	}
	engine.Apply(res.Change.Update())
	// Adding to the blacklist pushes to nobody; removing from it pushes to
	// every always-send user (they gain that user's presence), so the
	// change carries all their IDs. A pattern change also recompiles the
	// patterns. All four are reported.
	type kind struct {
		action rules.Action
		user   id.UserID
		name   string
	}
	kinds := []kind{
		{rules.Add, "@scale-change:example.org", "blacklist add"},
		{rules.Remove, "@scale-change:example.org", "blacklist remove"},
		{rules.Add, "@scale-puppet_*:example.org", "pattern add"},
		{rules.Remove, "@scale-puppet_*:example.org", "pattern remove"},
	}
	took := map[string][]time.Duration{}
	for i := range changes {
		k := kinds[i%len(kinds)]
		began := time.Now()
		res, err := st.Apply(ctx, rules.Mutation{Sender: "@admin:example.org", Command: k.name,
			Entries: []rules.Entry{{List: rules.Blacklist, UserID: k.user, Action: k.action}}})
		if err != nil {
			return err
		}
		if res.Change == nil {
			return fmt.Errorf("change %d changed nothing", i)
		}
		engine.Apply(res.Change.Update())
		took[k.name] = append(took[k.name], time.Since(began))
	}
	for _, k := range kinds {
		d := took[k.name]
		slices.Sort(d)
		p50, p99 := d[len(d)/2], d[len(d)*99/100]
		what := fmt.Sprintf("apply one change (%s), p50", k.name)
		fmt.Printf("%-44s %10s   target ≤ 5ms    %s (p99 %s, %d changes; SQLite commit + router; 1,000 patterns)\n", what, p50.Round(time.Microsecond), verdict(p50 <= 5*time.Millisecond), p99.Round(time.Microsecond), len(d))
	}
	return nil
}

// answeredAt reports whether the routing API answers at the version.
func answeredAt(client *http.Client, url, token string, version int64) bool {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var body struct {
		Version int64 `json:"version"`
	}
	return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&body) == nil && body.Version == version
}

// memory returns VmRSS and VmHWM of a process, in bytes.
func memory(pid int) (rss, hwm int64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			hwm = kb << 10
		}
	}
	return rss, hwm
}
