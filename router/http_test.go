package router

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"
)

const testToken = "router-test-token"

func newTestHandler() *Handler {
	e := NewEngine("", 42, []id.UserID{"@dash:x"}, []id.UserID{"@alice:x"}, nil)
	return NewHandler(e, HandlerOptions{Token: testToken, MaxBodyBytes: 1024})
}

func do(h http.Handler, method, path, token, body string) (*httptest.ResponseRecorder, map[string]any) {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &out)
	return rec, out
}

func TestHandler_Errors(t *testing.T) {
	tests := []struct {
		name, method, path, token, body string
		status                          int
		errcode                         string
	}{
		{"no token", "GET", Prefix + "rules", "", "", 401, "M_MISSING_TOKEN"},
		{"wrong token", "GET", Prefix + "rules", "nope", "", 401, "M_UNKNOWN_TOKEN"},
		{"wrong token before a bad body", "POST", Prefix + "users_for_states", "nope", "{", 401, "M_UNKNOWN_TOKEN"},
		{"malformed JSON", "POST", Prefix + "users_for_states", testToken, "{", 400, "M_NOT_JSON"},
		{"not an object", "POST", Prefix + "users_for_states", testToken, "[1]", 400, "M_BAD_JSON"},
		{"states missing", "POST", Prefix + "users_for_states", testToken, "{}", 400, "M_BAD_JSON"},
		{"states not a list", "POST", Prefix + "users_for_states", testToken, `{"states":{}}`, 400, "M_BAD_JSON"},
		{"known_version not a number", "POST", Prefix + "users_for_states?known_version=x", testToken, `{"states":[]}`, 400, "M_INVALID_PARAM"},
		{"known_version negative", "POST", Prefix + "users_for_states?known_version=-1", testToken, `{"states":[]}`, 400, "M_INVALID_PARAM"},
		{"state without user_id", "POST", Prefix + "users_for_states", testToken, `{"states":[{"state":"online"}]}`, 400, "M_BAD_JSON"},
		{"user_id not a string", "POST", Prefix + "users_for_states", testToken, `{"states":[{"user_id":5}]}`, 400, "M_BAD_JSON"},
		{"user_id not a user ID", "POST", Prefix + "users_for_states", testToken, `{"states":[{"user_id":"alice"}]}`, 400, "M_INVALID_PARAM"},
		{"body too large", "POST", Prefix + "users_for_states", testToken, `{"states":[` + strings.Repeat(`{"user_id":"@a:x"},`, 100) + `{"user_id":"@a:x"}]}`, 413, "M_TOO_LARGE"},
		{"interested_users without user_id", "GET", Prefix + "interested_users", testToken, "", 400, "M_INVALID_PARAM"},
		{"changes with a bad since", "GET", Prefix + "changes?since=abc", testToken, "", 400, "M_INVALID_PARAM"},
		{"changes with a negative timeout", "GET", Prefix + "changes?since=1&timeout=-5", testToken, "", 400, "M_INVALID_PARAM"},
		{"wrong method", "GET", Prefix + "users_for_states", testToken, "", 405, "M_UNRECOGNIZED"},
		{"unknown endpoint", "GET", Prefix + "nope", testToken, "", 404, "M_UNRECOGNIZED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, out := do(newTestHandler(), tt.method, tt.path, tt.token, tt.body)
			if rec.Code != tt.status || out["errcode"] != tt.errcode || out["error"] == "" {
				t.Errorf("= %d %v; want %d %s", rec.Code, out, tt.status, tt.errcode)
			}
		})
	}
}

func TestHandler_Answers(t *testing.T) {
	h := newTestHandler()
	if !h.LastContact().IsZero() {
		t.Fatal("LastContact set before any request")
	}
	do(h, "GET", Prefix+"rules", "wrong", "")
	if !h.LastContact().IsZero() {
		t.Fatal("an unauthenticated request counted as adapter contact")
	}
	tests := []struct{ name, method, path, body, want string }{
		{"users_for_states", "POST", Prefix + "users_for_states", `{"states":[{"user_id":"@alice:x","state":"online"},{"user_id":"@bob:x","extra":1}]}`,
			`{"version":42,"routes":[{"users":["@dash:x"],"states":[1]}]}`},
		{"users_for_states with no states", "POST", Prefix + "users_for_states", `{"states":[]}`,
			`{"version":42,"routes":[{"users":["@dash:x"],"states":[]}]}`},
		{"users_for_states from a client that holds this version's recipients", "POST", Prefix + "users_for_states?known_version=42", `{"states":[{"user_id":"@alice:x"},{"user_id":"@bob:x"}]}`,
			`{"version":42,"routes":[{"all_recipients":true,"states":[1]}]}`},
		{"users_for_states from a client that holds an older version's recipients", "POST", Prefix + "users_for_states?known_version=41", `{"states":[{"user_id":"@bob:x"}]}`,
			`{"version":42,"routes":[{"users":["@dash:x"],"states":[0]}]}`},
		{"interested_users all", "GET", Prefix + "interested_users?user_id=@dash:x", "", `{"all":true,"version":42}`},
		{"interested_users none", "GET", Prefix + "interested_users?user_id=%40bob%3Ax", "", `{"all":false,"users":[],"version":42}`},
		{"changes without since resets", "GET", Prefix + "changes?timeout=0", "", `{"version":42,"push_to":[],"reset":true,"sources":[],"all_sources":false,"destinations_added":[],"destinations_removed":[],"all_interested":false}`},
		{"rules", "GET", Prefix + "rules", "", `{"always_send":["@dash:x"],"blacklist":["@alice:x"],"groups":{},"version":42}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, _ := do(h, tt.method, tt.path, testToken, tt.body)
			if rec.Code != 200 || strings.TrimSpace(rec.Body.String()) != tt.want {
				t.Errorf("= %d %s; want %s", rec.Code, rec.Body.String(), tt.want)
			}
		})
	}
	if h.LastContact().IsZero() {
		t.Error("LastContact not set by authenticated requests")
	}
}

func FuzzUsersForStatesDecode(f *testing.F) {
	for _, seed := range []string{`{"states":[]}`, `{"states":[{"user_id":"@a:x"}]}`, `{`, `{"states":null}`, `{"states":[{"user_id":"@a:x","state":1}]}`, `[]`,
		`{"states":[{"user_id":"@a:x"},{"user_id":"@b\u0041:x"}]}`, `{"states":[{"user_id":"@a:x"},{"user_id":"@b:x"}]}x`, "{\"states\":[{\"user_id\":\"@a\xff:x\"}]}"} {
		f.Add(seed)
	}
	h := newTestHandler()
	f.Fuzz(func(t *testing.T, body string) {
		if fast, ok := decodeStatesFast([]byte(body)); ok {
			strict, errcode, _ := decodeStatesStrict([]byte(body))
			if errcode != "" || !slices.Equal(fast, strict) {
				t.Fatalf("the fast path read %q as %v; the strict one as %v (%s)", body, fast, strict, errcode)
			}
		}
		rec, out := do(h, "POST", Prefix+"users_for_states", testToken, body)
		if rec.Code >= 500 {
			t.Fatalf("status %d for %q", rec.Code, body)
		}
		if rec.Code != 200 && out["errcode"] == nil {
			t.Fatalf("error without errcode for %q: %s", body, rec.Body.String())
		}
	})
}

// The fast path reads the usual body; everything unusual is left to the
// strict path, so both always agree.
func TestDecodeStates_FastPathAgreesOrGivesUp(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		wantFast bool
	}{
		{"the adapter's body", `{"states":[{"user_id":"@a:x"},{"user_id":"@b:y"}]}`, true},
		{"the adapter's empty body", `{"states":[]}`, true},
		{"an escape in a user ID", `{"states":[{"user_id":"@a\u0041:x"}]}`, false},
		{"invalid UTF-8 in a user ID", "{\"states\":[{\"user_id\":\"@a\xff:x\"}]}", false},
		{"a control character in a user ID", "{\"states\":[{\"user_id\":\"@a\x01:x\"}]}", false},
		{"trailing garbage", `{"states":[{"user_id":"@a:x"}]}]`, false},
		{"a body with every field", `{"states":[{"user_id":"@a:x","state":"online","status_msg":null,"last_active_ts":1}]}`, true},
		{"unknown top-level fields", `{"v":{"nested":[1,2,{"x":"y"}]},"states":[]}`, true},
		{"no states", `{"states":[]}`, true},
		{"whitespace around every token", "{ \"states\" : [ { \"state\" : \"online\" ,\n\t\"user_id\" : \"@a:x\" } , {\"user_id\":\"@bob:y\"} ] }", true},
		{"a name in another case", `{"states":[{"USER_ID":"@a:x"}]}`, false},
		{"both cases of a name", `{"states":[{"user_id":"@a:x","User_Id":"@b:x"}]}`, false},
		{"an escaped name", `{"st\u0061tes":[{"user_id":"@a:x"}]}`, false},
		{"duplicate states", `{"states":[],"states":[{"user_id":"@a:x"}]}`, false},
		{"duplicate user_id", `{"states":[{"user_id":"@a:x","user_id":"@b:x"}]}`, false},
		{"an escaped user ID", `{"states":[{"user_id":"@\u0061:x"}]}`, false},
		{"trailing garbage", `{"states":[]} x`, false},
		{"null states", `{"states":null}`, false},
		{"a state that is not an object", `{"states":[1]}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fast, ok := decodeStatesFast([]byte(tt.body))
			if ok != tt.wantFast {
				t.Fatalf("fast path ok = %v, want %v", ok, tt.wantFast)
			}
			strict, errcode, _ := decodeStatesStrict([]byte(tt.body))
			if ok && (errcode != "" || !slices.Equal(fast, strict)) {
				t.Errorf("fast %v, strict %v (%s)", fast, strict, errcode)
			}
		})
	}
}
