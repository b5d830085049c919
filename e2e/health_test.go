//go:build e2e

package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/presence-router/presence-router/e2e/harness"
)

// readyBody is GET /_matrix/mau/ready of presence-router: the status and
// the answer.
func readyBody(url string) (int, map[string]any) {
	resp, err := http.Get(url + "/_matrix/mau/ready")
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

// metric reads one series from presence-router's metrics.
func metric(url, series string) (float64, bool) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile("(?m)^" + regexp.QuoteMeta(series) + " (\\S+)$").FindSubmatch(body)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	return v, err == nil
}

// waitFor polls cond every 200 ms for at most d and returns how long it
// took, or false.
func waitFor(d time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for time.Since(start) < d {
		if cond() {
			return time.Since(start), true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return d, false
}

// TestHealthFollowsTheHomeserver stops Synapse under a running
// presence-router: /_matrix/mau/ready turns 503 (naming the homeserver) and
// the connection metric 0 within 30 s; when Synapse is back, both recover
// by themselves and a command is answered.
func TestHealthFollowsTheHomeserver(t *testing.T) {
	e := startStack(t, false)
	if took, ok := waitFor(30*time.Second, func() bool { code, _ := readyBody(e.stack.RouterURL); return code == http.StatusOK }); !ok {
		t.Fatalf("ready is not 200 with Synapse up")
	} else {
		t.Logf("ready is 200 %s after the stack came up", took.Round(time.Millisecond))
	}
	e.stack.StopSynapse()
	var body map[string]any
	took, ok := waitFor(30*time.Second, func() bool {
		var code int
		code, body = readyBody(e.stack.RouterURL)
		return code == http.StatusServiceUnavailable
	})
	if !ok {
		t.Fatalf("ready did not turn 503 within 30 s of Synapse stopping: %v", body)
	}
	t.Logf("ready turned 503 %s after Synapse stopped: %v", took.Round(time.Millisecond), body)
	if body["homeserver_answers"] != false || !strings.Contains(strings.Join(toStrings(body["problems"]), " "), "does not answer") {
		t.Errorf("ready's body does not say the homeserver does not answer: %v", body)
	}
	if v, ok := metric(e.stack.MetricsURL(), "presence_router_bot_connected"); !ok || v != 0 {
		t.Errorf("presence_router_bot_connected = %v (found %v) while Synapse is stopped, want 0", v, ok)
	}
	if err := e.stack.StartSynapse(e.ctx); err != nil {
		t.Fatal(err)
	}
	if took, ok = waitFor(30*time.Second, func() bool { code, _ := readyBody(e.stack.RouterURL); return code == http.StatusOK }); !ok {
		t.Fatal("ready did not return to 200 within 30 s of Synapse answering again")
	}
	t.Logf("ready returned to 200 %s after Synapse answered again", took.Round(time.Millisecond))
	if v, ok := metric(e.stack.MetricsURL(), "presence_router_bot_connected"); !ok || v != 1 {
		t.Errorf("presence_router_bot_connected = %v (found %v) after Synapse returned, want 1", v, ok)
	}
	if !strings.Contains(e.stack.Tail(harness.RouterLog(0), 200), "The homeserver answers again") {
		t.Error("presence-router's log does not say the homeserver answers again")
	}
	if r := e.command("admin", "!presence status"); r.Reaction != "✅" {
		t.Errorf("status after Synapse returned: %q", r.Body)
	}
}

// toStrings turns a decoded JSON array into its strings.
func toStrings(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, item := range list {
		if s, ok := item.(string); ok {
			out = append(out, s)
		}
	}
	return out
}
