package router

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/rules"
)

func users(prefix string, n int) []id.UserID {
	out := make([]id.UserID, n)
	for i := range out {
		out[i] = id.UserID(fmt.Sprintf("@%s%07d:example.org", prefix, i))
	}
	return out
}

// BenchmarkEngine_UsersForStates evaluates batches against a 1,000,000-entry
// blacklist, with 10 and 10,000 always-send users.
func BenchmarkEngine_UsersForStates(b *testing.B) {
	blacklist := users("blocked", 1_000_000)
	for _, nAlways := range []int{10, 10_000} {
		e := NewEngine("", 1, users("dash", nAlways), blacklist, nil)
		for _, nStates := range []int{1, 100, 5000} {
			batch := make([]State, nStates)
			for i := range batch {
				if i%10 == 0 {
					batch[i] = State{UserID: blacklist[i]}
				} else {
					batch[i] = State{UserID: id.UserID(fmt.Sprintf("@user%d:example.org", i))}
				}
			}
			b.Run(fmt.Sprintf("always=%d/states=%d", nAlways, nStates), func(b *testing.B) {
				for b.Loop() {
					var routes [2]RouteJSON
					e.usersForStatesJSON(batch, &routes)
				}
			})
		}
	}
}

// BenchmarkEngine_Apply applies one change to a 1,000,000-entry blacklist.
func BenchmarkEngine_Apply(b *testing.B) {
	e := NewEngine("", 1, users("dash", 10_000), users("blocked", 1_000_000), nil)
	version := int64(1)
	for b.Loop() {
		version++
		if version%2 == 0 {
			e.Apply(rules.Update{Version: version, AddBlacklist: []id.UserID{"@new:example.org"}})
		} else {
			e.Apply(rules.Update{Version: version, RemoveBlacklist: []id.UserID{"@new:example.org"}})
		}
	}
}

// BenchmarkHandler compares the routing API's handlers with a bare handler
// that writes a fixed JSON body, in the same run; the ratio is reported as
// ns/op of each (compare them, not absolute numbers).
func BenchmarkHandler(b *testing.B) {
	e := NewEngine("", 1, users("dash", 10), users("blocked", 1000), nil)
	h := NewHandler(e, HandlerOptions{Token: testToken})
	bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"version":1,"all":false,"users":[]}`))
	})
	body := func(n int) string {
		return `{"states":[` + strings.TrimSuffix(strings.Repeat(`{"user_id":"@alice:example.org"},`, n), ",") + `]}` // as the adapter writes it
	}
	cases := []struct {
		name    string
		handler http.Handler
		method  string
		path    string
		body    string
	}{
		{"bare", bare, "GET", "/", ""},
		{"interested_users", h, "GET", Prefix + "interested_users?user_id=@dash0000001:example.org", ""},
		{"users_for_states_10", h, "POST", Prefix + "users_for_states", body(10)},
		{"users_for_states_100", h, "POST", Prefix + "users_for_states", body(100)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				req := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
				req.Header.Set("Authorization", "Bearer "+testToken)
				rec := httptest.NewRecorder()
				c.handler.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d", rec.Code)
				}
			}
		})
	}
}
