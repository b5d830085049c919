package importer

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/store"
)

func writeYAML(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "homeserver.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "pr.db"), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func TestRead_FindsTheStockRouterLists(t *testing.T) {
	tests := []struct {
		name           string
		yaml           string
		wantSource     string
		wantAlwaysSend []id.UserID
		wantBlacklist  []id.UserID
	}{
		{
			name: "legacy presence_router block",
			yaml: `presence:
  presence_router:
    module: my_module.ExamplePresenceRouter
    config:
      always_send_to_users: ["@dash:example.org"]
      blacklisted_users: ["@ceo:example.org", "@cfo:example.org"]
`,
			wantSource:     "presence.presence_router.config",
			wantAlwaysSend: []id.UserID{"@dash:example.org"},
			wantBlacklist:  []id.UserID{"@ceo:example.org", "@cfo:example.org"},
		},
		{
			name: "modules entry, only one list",
			yaml: `modules:
  - module: other.Module
    config: {unrelated: true}
  - module: my_module.ExamplePresenceRouter
    config:
      blacklisted_users: ["@ceo:example.org"]
`,
			wantSource:     "modules[1] (my_module.ExamplePresenceRouter).config",
			wantAlwaysSend: []id.UserID{},
			wantBlacklist:  []id.UserID{"@ceo:example.org"},
		},
		{
			name: "the legacy block wins over modules",
			yaml: `presence:
  presence_router:
    config:
      always_send_to_users: ["@legacy:example.org"]
modules:
  - module: my_module.ExamplePresenceRouter
    config:
      always_send_to_users: ["@module:example.org"]
`,
			wantSource:     "presence.presence_router.config",
			wantAlwaysSend: []id.UserID{"@legacy:example.org"},
			wantBlacklist:  []id.UserID{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lists, err := Read(writeYAML(t, tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if lists.Source != tt.wantSource || !slices.Equal(lists.AlwaysSend, tt.wantAlwaysSend) || !slices.Equal(lists.Blacklist, tt.wantBlacklist) {
				t.Fatalf("got %+v", lists)
			}
		})
	}
}

func TestRead_RejectsWholeFileOnAnyBadEntry(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr []string
	}{
		{"not YAML", "presence: [", []string{"failed to parse"}},
		{"no lists anywhere", "presence:\n  enabled: true\nmodules: []\n", []string{"no always_send_to_users or blacklisted_users found"}},
		{"an invalid user ID", "presence:\n  presence_router:\n    config:\n      always_send_to_users: [\"@ok:example.org\", \"nobody\"]\n",
			[]string{`always_send_to_users[1] "nobody"`, "nothing was imported"}},
		{"a number instead of a user ID", "presence:\n  presence_router:\n    config:\n      blacklisted_users: [42]\n",
			[]string{"blacklisted_users[0] is not a string", "nothing was imported"}},
		{"a list that is a string", "presence:\n  presence_router:\n    config:\n      blacklisted_users: \"@a:example.org\"\n",
			[]string{"failed to read presence.presence_router.config"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Read(writeYAML(t, tt.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
	if _, err := Read(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "failed to read") {
		t.Errorf("missing file: %v", err)
	}
}

func TestImport_AddsOnceAndReportsWhatWasAlreadyThere(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	path := writeYAML(t, "presence:\n  presence_router:\n    config:\n      always_send_to_users: [\"@dash:example.org\"]\n      blacklisted_users: [\"@ceo:example.org\"]\n")

	first, err := Import(ctx, st, path)
	if err != nil {
		t.Fatal(err)
	}
	if first.Change == nil || len(first.Change.Entries) != 2 || first.Unchanged != 0 {
		t.Fatalf("first import: %+v", first)
	}
	if !strings.Contains(first.Summary(), "2 added, 0 already present; version 1") {
		t.Errorf("summary: %s", first.Summary())
	}

	second, err := Import(ctx, st, path)
	if err != nil {
		t.Fatal(err)
	}
	if second.Change != nil || second.Unchanged != 2 || !strings.Contains(second.Summary(), "no change was needed") {
		t.Fatalf("second import changed something: %+v (%s)", second, second.Summary())
	}
	rules, err := st.LoadRules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rules.Version != 1 || !slices.Equal(rules.AlwaysSend, []id.UserID{"@dash:example.org"}) || !slices.Equal(rules.Blacklist, []id.UserID{"@ceo:example.org"}) {
		t.Fatalf("rules after two imports: %+v", rules)
	}
	history, err := st.History(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(history) != 1 || history[0].Sender != Sender {
		t.Fatalf("audit log: %+v", history)
	}
}

func TestImport_EmptyListsChangeNothing(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	path := writeYAML(t, "presence:\n  presence_router:\n    config:\n      always_send_to_users: []\n      blacklisted_users: []\n")
	if _, err := Import(ctx, st, path); err == nil || !strings.Contains(err.Error(), "the lists are empty") {
		t.Fatalf("err = %v", err)
	}
	if v, err := st.Version(ctx); err != nil || v != 0 {
		t.Fatalf("version %d, %v", v, err)
	}
}

func TestImport_RefusesPatterns(t *testing.T) {
	st := openStore(t)
	path := writeYAML(t, "presence:\n  presence_router:\n    module: x.ExamplePresenceRouter\n    config:\n      always_send_to_users: ['@dash:x.org']\n      blacklisted_users: ['@bot_*:x.org']\n")
	if _, err := Import(context.Background(), st, path); err == nil || !strings.Contains(err.Error(), "patterns") {
		t.Fatalf("import of a pattern: %v; want a refusal naming patterns", err)
	}
	if rules, _ := st.LoadRules(context.Background()); rules.Version != 0 {
		t.Errorf("a refused import changed the rules (version %d)", rules.Version)
	}
}
