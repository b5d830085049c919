//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/internal/loadgen"
)

// TestLoadWithCommands sends routing API traffic at 6,000 requests/s for
// 60 s (PR_LOAD_SECONDS) while an admin command arrives through Synapse
// every second: no request may fail, the rate must hold at ≥ 5,000/s, and
// every command must be applied and answered.
func TestLoadWithCommands(t *testing.T) {
	seconds := 60
	if v, err := strconv.Atoi(os.Getenv("PR_LOAD_SECONDS")); err == nil && v > 0 {
		seconds = v
	}
	e := startStack(t, false)
	base := e.stack.RouterURL + "/_presence_router/v1/"
	auth := http.Header{"Authorization": {"Bearer " + e.stack.RouterToken}, "Content-Type": {"application/json"}}
	var states strings.Builder
	for i := range 10 {
		if i > 0 {
			states.WriteByte(',')
		}
		fmt.Fprintf(&states, `{"user_id":"@user%d:localhost","state":"online"}`, i)
	}
	requests := []loadgen.Request{
		{Method: "POST", URL: base + "users_for_states", Header: auth, Body: []byte(`{"states":[` + states.String() + `]}`)},
		{Method: "GET", URL: base + "interested_users?user_id=%40dash%3Alocalhost", Header: auth},
		{Method: "POST", URL: base + "users_for_states", Header: auth, Body: []byte(`{"states":[{"user_id":"@alice:localhost","state":"online"}]}`)},
	}
	loadDone := make(chan *loadgen.Result, 1)
	go func() {
		res, err := loadgen.Run(e.ctx, loadgen.Options{Requests: requests, Concurrency: 16, Rate: 6000, Duration: time.Duration(seconds) * time.Second})
		if err != nil {
			t.Error(err)
		}
		loadDone <- res
	}()
	var commands []id.EventID
	ticker := time.NewTicker(time.Second)
	for i := 0; i < seconds; i++ {
		<-ticker.C
		ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
		resp, err := e.users["admin"].SendText(ctx, e.room, fmt.Sprintf("!presence always-send add @load%03d:localhost --force", i))
		cancel()
		if err != nil {
			t.Fatalf("command %d: %v", i, err)
		}
		commands = append(commands, resp.EventID)
	}
	ticker.Stop()
	res := <-loadDone
	if res == nil {
		t.Fatal("the load run failed")
	}
	fmt.Printf("load: routing API under commands: %s\n", res)
	t.Logf("routing API under commands: %s", res)
	if res.Errors != 0 {
		t.Errorf("%d of %d routing API requests failed: %v", res.Errors, res.Requests, res.FirstErrors)
	}
	if rps := res.RPS(); rps < 5000 {
		t.Errorf("the routing API sustained %.0f requests/s, want ≥ 5,000", rps)
	}
	for i, evt := range commands {
		reply, err := e.syncs["admin"].WaitReply(evt, 30*time.Second)
		if err != nil || reply.Reaction != "✅" {
			t.Errorf("command %d (%s): reply %+v, %v", i, evt, reply, err)
		}
	}
	status := e.command("admin", "!presence status")
	if want := fmt.Sprintf("always-send: %d users", seconds); !strings.Contains(status.Body, want) {
		t.Errorf("status lacks %q: %q", want, status.Body)
	}
	for name, s := range e.syncs {
		if n := s.SyncErrors(); n != 0 {
			t.Errorf("%s: %d /sync requests failed", name, n)
		}
	}
}
