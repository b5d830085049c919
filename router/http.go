package router

import (
	"bytes"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/sirupsen/logrus"
	"go.mau.fi/util/exhttp"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/logging"
	"github.com/presence-router/presence-router/rules"
)

// Prefix is the path prefix of the routing API.
const Prefix = "/_presence_router/v1/"

// DefaultMaxBodyBytes is the default request body limit: 16 MiB.
const DefaultMaxBodyBytes = 16 << 20

// MaxPollTimeout caps the change feed's long poll.
const MaxPollTimeout = 60 * time.Second

// HandlerOptions configures the routing API.
type HandlerOptions struct {
	Token        string
	MaxBodyBytes int64 // 0: DefaultMaxBodyBytes
	Log          *logrus.Entry
	Metrics      *Metrics // nil: none
	// Learn is told, without waiting, of a local user who syncs and whom a
	// group's pattern matches but who is not known yet (nil: nobody is
	// learned).
	Learn func(id.UserID)
}

// Handler serves the routing API v1 (see docs/routing-api.md).
type Handler struct {
	engine      *Engine
	token       []byte
	maxBody     int64
	log         *logrus.Entry
	metrics     *Metrics
	lastContact atomic.Int64 // unix nanoseconds
	mux         *http.ServeMux
	authWarn    logging.Limiter
	learn       func(id.UserID)
}

// authWarnInterval is how often at most a failed authentication is logged.
const authWarnInterval = 10 * time.Second

// NewHandler returns the routing API handler for engine.
func NewHandler(e *Engine, opts HandlerOptions) *Handler {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.Log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		opts.Log = logrus.NewEntry(l)
	}
	h := &Handler{engine: e, token: []byte(opts.Token), maxBody: opts.MaxBodyBytes, log: opts.Log, metrics: opts.Metrics, mux: http.NewServeMux(), learn: opts.Learn}
	h.metrics.watch(e, h)
	for _, ep := range endpoints {
		h.mux.HandleFunc(ep.method+" "+Prefix+ep.name, ep.handler(h))
	}
	return h
}

// LastContact returns when an authenticated request last arrived (zero if
// never).
func (h *Handler) LastContact() time.Time {
	ns := h.lastContact.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// statusRecorder remembers the status code for metrics.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

// ServeHTTP authenticates, then dispatches by path and method.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	endpoint := strings.TrimPrefix(r.URL.Path, Prefix)
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	defer func() { h.metrics.observe(endpoint, rec.status, time.Since(start)) }()
	if !h.authorized(rec, r) {
		return
	}
	h.lastContact.Store(time.Now().UnixNano())
	handler, pattern := h.mux.Handler(r)
	if pattern == "" {
		h.notFoundOrMethod(rec, r)
		return
	}
	handler.ServeHTTP(rec, r)
}

func (h *Handler) authorized(w http.ResponseWriter, r *http.Request) bool {
	auth := r.Header.Get("Authorization")
	token, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || token == "" {
		h.warnAuth(r, "Routing API request without a token")
		mautrix.MMissingToken.WithMessage("Missing router token: send Authorization: Bearer <router.token>").Write(w)
		return false
	}
	if subtle.ConstantTimeCompare([]byte(token), h.token) != 1 {
		h.warnAuth(r, "Routing API request with a wrong token")
		mautrix.MUnknownToken.WithMessage("Unknown router token").Write(w)
		return false
	}
	return true
}

// warnAuth logs a failed authentication, at most once per authWarnInterval
// with the count of those not logged since.
func (h *Handler) warnAuth(r *http.Request, msg string) {
	if ok, held := h.authWarn.Allow(time.Now(), authWarnInterval); ok {
		h.log.WithFields(logrus.Fields{"remote_addr": r.RemoteAddr, "not_logged_since_last": held}).Warn(msg)
	}
}

// endpoint is one endpoint of the routing API.
type endpoint struct {
	name    string // the path under Prefix, and the metrics label
	method  string
	handler func(*Handler) http.HandlerFunc
}

// endpoints is the routing API, declared once: the mux, the 405 answers and
// the metrics all come from it.
var endpoints = []endpoint{
	{"users_for_states", http.MethodPost, func(h *Handler) http.HandlerFunc { return h.usersForStates }},
	{"interested_users", http.MethodGet, func(h *Handler) http.HandlerFunc { return h.interestedUsers }},
	{"changes", http.MethodGet, func(h *Handler) http.HandlerFunc { return h.changes }},
	{"rules", http.MethodGet, func(h *Handler) http.HandlerFunc { return h.rules }},
}

func (h *Handler) notFoundOrMethod(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, Prefix)
	if i := slices.IndexFunc(endpoints, func(ep endpoint) bool { return ep.name == name }); i >= 0 {
		method := endpoints[i].method
		w.Header().Set("Allow", method)
		mautrix.MUnrecognized.WithStatus(http.StatusMethodNotAllowed).WithMessage("Method " + r.Method + " is not allowed here; use " + method).Write(w)
		return
	}
	mautrix.MUnrecognized.WithMessage("Unrecognized routing API endpoint").Write(w)
}

type usersForStatesRequest struct {
	States *[]json.RawMessage `json:"states"`
}

var bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func (h *Handler) usersForStates(w http.ResponseWriter, r *http.Request) {
	known := int64(-1) // the version whose recipients the client holds
	query := r.URL.Query()
	if raw := query.Get("known_version"); raw != "" {
		v, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || v < 0 {
			mautrix.MInvalidParam.WithMessage("Query parameter known_version must be a non-negative integer").Write(w)
			return
		}
		known = v
	}
	// The group routes (by key, comma-separated) whose users the client
	// holds at known.
	knownGroups := ""
	if known >= 0 {
		knownGroups = query.Get("known_groups")
	}
	buf := bodyBuffers.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 1<<20 { // keep small buffers only
			buf.Reset()
			bodyBuffers.Put(buf)
		}
	}()
	buf.Reset()
	if r.ContentLength > 0 && r.ContentLength <= h.maxBody {
		buf.Grow(int(r.ContentLength) + 1) // +1: ReadFrom needs room to see EOF
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, h.maxBody))
	body := buf.Bytes()
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			mautrix.MTooLarge.WithMessage("Request body is over " + strconv.FormatInt(h.maxBody, 10) + " bytes").Write(w)
			return
		}
		mautrix.MNotJSON.WithMessage("Failed to read the request body").Write(w)
		return
	}
	states, errcode, msg := decodeStates(body)
	if errcode != "" {
		mautrix.RespError{ErrCode: errcode, Err: msg, StatusCode: http.StatusBadRequest}.Write(w)
		return
	}
	var routes [2]RouteJSON
	version, n, groupRoutes := h.engine.usersForStatesJSON(states, &routes)
	buf.Reset() // the states hold their own strings; the buffer now carries the answer
	var num [20]byte
	buf.WriteString(`{"version":`)
	buf.Write(strconv.AppendInt(num[:0], version, 10))
	buf.WriteString(`,"routes":[`)
	all := routes[:n]
	if groupRoutes != nil {
		all = append(all, groupRoutes...)
	}
	var lastIndices [2]int // where the last route's indices are in buf
	for r, route := range all {
		buf.Grow(32 + len(route.Users) + 8*len(route.Indices))
		if r > 0 {
			buf.WriteByte(',')
		}
		if route.Group {
			buf.WriteString(`{"group":true,"key":`)
			buf.Write(strconv.AppendQuote(num[:0], route.Key))
			if version == known && listed(knownGroups, route.Key) {
				// The client holds this route's users at this version.
				buf.WriteString(`,"known":true`)
			} else {
				buf.WriteString(`,"users":`)
				buf.Write(route.Users)
			}
		} else if route.AllRecipients && version == known {
			// The client holds this version's recipients: they are not
			// sent again (10,000 always-send users are 300 KB to decode).
			buf.WriteString(`{"all_recipients":true`)
		} else {
			buf.WriteString(`{"users":`)
			buf.Write(route.Users)
		}
		buf.WriteString(`,"states":[`)
		if r > 0 && slices.Equal(route.Indices, all[r-1].Indices) {
			// A group of the same states as the route before it (every
			// state routed to the always-send users and to one group):
			// its indices are written once and copied.
			buf.Write(append(buf.AvailableBuffer(), buf.Bytes()[lastIndices[0]:lastIndices[1]]...))
		} else {
			lastIndices[0] = buf.Len()
			buf.Write(appendIndices(buf.AvailableBuffer(), route.Indices))
			lastIndices[1] = buf.Len()
		}
		buf.WriteString(`]}`)
	}
	buf.WriteString(`]}`)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(buf.Bytes())
}

// appendIndices appends indices to b, comma-separated.
func appendIndices(b []byte, indices []int) []byte {
	for i, idx := range indices {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(idx), 10)
	}
	return b
}

// decodeStates parses a users_for_states body. It returns an errcode and
// message when the body is not acceptable. The usual body, as Synapse's
// adapter sends it, is read in one streaming pass; anything unusual takes
// the slower path, which accepts and rejects exactly as documented.
func decodeStates(body []byte) ([]State, string, string) {
	if states, ok := decodeStatesFast(body); ok {
		return states, "", ""
	}
	return decodeStatesStrict(body)
}

var emptyReader = bytes.NewReader(nil)

// decoders are reused; duplicate names are caught by decodeStatesFast
// itself, which is cheaper than the tokenizer's own bookkeeping.
var decoders = sync.Pool{New: func() any { return jsontext.NewDecoder(emptyReader, jsontext.AllowDuplicateNames(true)) }}

var (
	statesName = []byte(`"states"`)
	userIDName = []byte(`"user_id"`)
	openBrace  = []byte(`{`)
)

// decodeStatesFast reads {"states":[{"user_id":"@a:b",...},...],...} with a
// streaming tokenizer, skipping every other value. It gives up (ok false)
// on anything it does not expect, including names that encoding/json would
// match case-insensitively, so it never accepts a body that
// decodeStatesStrict would read differently.
func decodeStatesFast(body []byte) (states []State, ok bool) {
	if states, ok = decodeAdapterBody(body); ok {
		return states, true
	}
	d := decoders.Get().(*jsontext.Decoder)
	defer func() {
		d.Reset(emptyReader) // drop the body
		decoders.Put(d)
	}()
	// A *bytes.Buffer is parsed in place, without a copy.
	d.Reset(bytes.NewBuffer(body), jsontext.AllowDuplicateNames(true))
	if tok, err := d.ReadToken(); err != nil || tok.Kind() != '{' {
		return nil, false
	}
	found := false
	for d.PeekKind() == '"' {
		name, err := d.ReadValue()
		if err != nil {
			return nil, false
		}
		switch {
		case bytes.Equal(name, statesName):
			if found {
				return nil, false
			}
			found = true
			if states, ok = readStates(d, string(body), stateCapacity(body)); !ok {
				return nil, false
			}
		case bytes.EqualFold(name, statesName) || bytes.IndexByte(name, '\\') >= 0:
			return nil, false
		default:
			if d.SkipValue() != nil {
				return nil, false
			}
		}
	}
	if tok, err := d.ReadToken(); err != nil || tok.Kind() != '}' {
		return nil, false
	}
	if _, err := d.ReadToken(); err != io.EOF || !found {
		return nil, false
	}
	return states, true
}

// minStateBytes is the size of the smallest state a body can hold,
// {"user_id":"@a:b"}.
const minStateBytes = len(`{"user_id":"@a:b"}`)

// maxStateCapacity bounds the states reserved before any is read; a larger
// batch grows as it is read.
const maxStateCapacity = 1 << 16

// stateCapacity estimates how many states body holds without reserving more
// than it can hold: every state is an object, so there are at most as many
// states as '{' (a one-byte count is vectorized), and at most one per
// minStateBytes of body. A body of nothing but '{' reserves no more than a
// well-formed one of the same size.
func stateCapacity(body []byte) int {
	return min(bytes.Count(body, openBrace), len(body)/minStateBytes, maxStateCapacity)
}

// readStates reads the states list; user IDs are cut from text, the body as
// one string, rather than each allocated on its own.
func readStates(d *jsontext.Decoder, text string, capacity int) ([]State, bool) {
	if tok, err := d.ReadToken(); err != nil || tok.Kind() != '[' {
		return nil, false
	}
	states := make([]State, 0, capacity)
	for d.PeekKind() == '{' {
		if _, err := d.ReadToken(); err != nil {
			return nil, false
		}
		var user string
		for d.PeekKind() == '"' {
			name, err := d.ReadValue()
			if err != nil {
				return nil, false
			}
			switch {
			case bytes.Equal(name, userIDName):
				if user != "" || d.PeekKind() != '"' {
					return nil, false
				}
				raw, err := d.ReadValue()
				if err != nil || bytes.IndexByte(raw, '\\') >= 0 {
					return nil, false // escapes are left to the strict path
				}
				end := int(d.InputOffset()) - 1 // the closing quote
				if user = text[end-(len(raw)-2) : end]; !plausibleUserID(user) {
					return nil, false
				}
			case bytes.EqualFold(name, userIDName) || bytes.IndexByte(name, '\\') >= 0:
				return nil, false
			default:
				if d.SkipValue() != nil {
					return nil, false
				}
			}
		}
		if tok, err := d.ReadToken(); err != nil || tok.Kind() != '}' || user == "" {
			return nil, false
		}
		states = append(states, State{UserID: id.UserID(user)})
	}
	if tok, err := d.ReadToken(); err != nil || tok.Kind() != ']' {
		return nil, false
	}
	return states, true
}

// decodeAdapterBody reads the body exactly as the adapter writes it,
// {"states":[{"user_id":"@a:x"},{"user_id":"@b:x"}]}, with no tokenizer: a
// string search per state. Anything else (other fields, white space,
// escapes, a control character, invalid UTF-8, an implausible user ID)
// gives up, and the tokenizer or the strict path reads it.
func decodeAdapterBody(body []byte) ([]State, bool) {
	const open, stateOpen, next, end = `{"states":[`, `{"user_id":"`, `"},`, `"}]}`
	text := string(body) // one copy; the user IDs are cut from it
	if !plainJSONString(text) {
		return nil, false
	}
	rest, ok := strings.CutPrefix(text, open)
	if !ok {
		return nil, false
	}
	if rest == "]}" {
		return []State{}, true
	}
	states := make([]State, 0, stateCapacity(body))
	for {
		if rest, ok = strings.CutPrefix(rest, stateOpen); !ok {
			return nil, false
		}
		quote := strings.IndexByte(rest, '"')
		if quote < 0 {
			return nil, false
		}
		user := rest[:quote]
		if !plausibleUserID(user) {
			return nil, false
		}
		states = append(states, State{UserID: id.UserID(user)})
		rest = rest[quote:]
		if after, ok := strings.CutPrefix(rest, next); ok {
			rest = after
			continue
		}
		if rest == end {
			return states, true
		}
		return nil, false
	}
}

// plainJSONString reports whether s reads the same inside JSON quotes as
// it is: no escape, no control character, valid UTF-8. It looks at eight
// bytes at a time.
func plainJSONString(s string) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(s); i += 8 {
		w := binary.LittleEndian.Uint64([]byte(s[i : i+8]))
		backslash := w ^ (ones * '\\')
		// A byte below 0x20, or equal to a backslash, sets its high bit here
		// (a byte with the high bit set is left to utf8.ValidString).
		if ((w-ones*0x20)&^w|(backslash-ones)&^backslash)&highs != 0 {
			return false
		}
	}
	for ; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '\\' {
			return false
		}
	}
	return utf8.ValidString(s)
}

// decodeStatesStrict is the reference reading of a users_for_states body,
// with an error that says what is wrong.
func decodeStatesStrict(body []byte) ([]State, string, string) {
	if !json.Valid(body) {
		return nil, "M_NOT_JSON", "Request body is not valid JSON"
	}
	var req usersForStatesRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, "M_BAD_JSON", "Request body must be an object with a states list"
	}
	if req.States == nil {
		return nil, "M_BAD_JSON", "Missing states list"
	}
	states := make([]State, len(*req.States))
	for i, raw := range *req.States {
		var s struct {
			UserID *string `json:"user_id"`
		}
		if err := json.Unmarshal(raw, &s); err != nil || s.UserID == nil {
			return nil, "M_BAD_JSON", "states[" + strconv.Itoa(i) + "] must be an object with a string user_id"
		}
		if !plausibleUserID(*s.UserID) {
			return nil, "M_INVALID_PARAM", "states[" + strconv.Itoa(i) + "].user_id is not a user ID"
		}
		states[i].UserID = id.UserID(*s.UserID)
	}
	return states, "", ""
}

// plausibleUserID is a cheap check; Synapse sends IDs it already accepted.
func plausibleUserID(s string) bool {
	return len(s) > 2 && len(s) <= 255 && s[0] == '@' && strings.IndexByte(s, ':') > 0
}

func (h *Handler) interestedUsers(w http.ResponseWriter, r *http.Request) {
	user := r.URL.Query().Get("user_id")
	if !plausibleUserID(user) {
		mautrix.MInvalidParam.WithMessage("Query parameter user_id must be a user ID").Write(w)
		return
	}
	version, all, users, learn := h.engine.interestedJSON(id.UserID(user))
	if learn && h.learn != nil {
		h.learn(id.UserID(user))
	}
	if all {
		exhttp.WriteJSONResponse(w, http.StatusOK, map[string]any{"version": version, "all": true})
		return
	}
	if users == nil {
		users = []byte("[]")
	}
	// A group's members are encoded once per change, not per answer.
	exhttp.WriteJSONResponse(w, http.StatusOK, map[string]any{"version": version, "all": false, "users": json.RawMessage(users)})
}

func (h *Handler) changes(w http.ResponseWriter, r *http.Request) {
	query := r.URL.Query()
	var since *int64
	if raw := query.Get("since"); raw != "" {
		v, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || v < 0 {
			mautrix.MInvalidParam.WithMessage("Query parameter since must be a non-negative integer").Write(w)
			return
		}
		since = &v
	}
	timeout := 30 * time.Second
	if raw := query.Get("timeout"); raw != "" {
		ms, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || ms < 0 {
			mautrix.MInvalidParam.WithMessage("Query parameter timeout must be a non-negative integer (milliseconds)").Write(w)
			return
		}
		timeout = min(time.Duration(ms)*time.Millisecond, MaxPollTimeout)
	}
	exhttp.WriteJSONResponse(w, http.StatusOK, h.engine.Changes(r.Context(), since, timeout))
}

func (h *Handler) rules(w http.ResponseWriter, r *http.Request) {
	version, alwaysSend, blacklist := h.engine.Rules()
	groups := make(map[rules.GroupName][]id.UserID)
	for _, g := range h.engine.Groups() {
		groups[g.Name] = append(slices.Clone(g.Patterns), g.Users...)
	}
	exhttp.WriteJSONResponse(w, http.StatusOK, map[string]any{"version": version, "always_send": alwaysSend, "blacklist": blacklist, "groups": groups})
}

// listed reports whether key is one of the comma-separated keys of list.
func listed(list, key string) bool {
	for list != "" {
		var item string
		item, list, _ = strings.Cut(list, ",")
		if item == key {
			return true
		}
	}
	return false
}
