// Package importer reads the lists of Synapse's stock example presence
// router from a homeserver.yaml and adds them to the store.
package importer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/rules"
	"github.com/presence-router/presence-router/store"
	"github.com/presence-router/presence-router/userid"
)

// Sender is the audit log's sender for imported entries.
const Sender id.UserID = "presence-router --import-synapse-config"

// Lists are the two lists found in a homeserver.yaml.
type Lists struct {
	AlwaysSend []id.UserID
	Blacklist  []id.UserID
	// Source says where they were found, e.g. "presence.presence_router.config".
	Source string
}

// Result says what an import did.
type Result struct {
	Lists
	Change    *rules.Change
	Unchanged int
}

// Summary is a one-paragraph report for the operator.
func (r *Result) Summary() string {
	version := "no change was needed"
	added := 0
	if r.Change != nil {
		version = fmt.Sprintf("version %d", r.Change.Version)
		added = len(r.Change.Entries)
	}
	return fmt.Sprintf("Imported from %s: %d always-send and %d blacklisted users (%d added, %d already present; %s).",
		r.Source, len(r.AlwaysSend), len(r.Blacklist), added, r.Unchanged, version)
}

type stockConfig struct {
	AlwaysSend []any `yaml:"always_send_to_users"`
	Blacklist  []any `yaml:"blacklisted_users"`
}

type homeserverYAML struct {
	Presence struct {
		PresenceRouter struct {
			Module string    `yaml:"module"`
			Config yaml.Node `yaml:"config"`
		} `yaml:"presence_router"`
	} `yaml:"presence"`
	Modules []struct {
		Module string    `yaml:"module"`
		Config yaml.Node `yaml:"config"`
	} `yaml:"modules"`
}

// Read parses path and returns the lists of the first stock-router config it
// finds: the legacy presence.presence_router block, then modules entries
// with either key. Every user ID is validated; any bad one is an error.
func Read(path string) (*Lists, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", path, err)
	}
	var hs homeserverYAML
	if err = yaml.Unmarshal(data, &hs); err != nil {
		return nil, fmt.Errorf("failed to parse %s: %w", path, err)
	}
	type candidate struct {
		source string
		node   *yaml.Node
	}
	candidates := []candidate{{"presence.presence_router.config", &hs.Presence.PresenceRouter.Config}}
	for i := range hs.Modules {
		candidates = append(candidates, candidate{fmt.Sprintf("modules[%d] (%s).config", i, hs.Modules[i].Module), &hs.Modules[i].Config})
	}
	for _, c := range candidates {
		if c.node.Kind != yaml.MappingNode {
			continue
		}
		var sc stockConfig
		if err = c.node.Decode(&sc); err != nil {
			return nil, fmt.Errorf("failed to read %s in %s: %w", c.source, path, err)
		}
		if sc.AlwaysSend == nil && sc.Blacklist == nil {
			continue
		}
		lists := &Lists{Source: c.source}
		var problems []string
		lists.AlwaysSend, problems = validate(c.source+".always_send_to_users", sc.AlwaysSend, problems)
		lists.Blacklist, problems = validate(c.source+".blacklisted_users", sc.Blacklist, problems)
		if len(problems) > 0 {
			return nil, fmt.Errorf("failed to import %s: %s; nothing was imported", path, strings.Join(problems, "; "))
		}
		return lists, nil
	}
	return nil, fmt.Errorf("failed to import %s: no always_send_to_users or blacklisted_users found in presence.presence_router.config or any modules entry", path)
}

func validate(key string, values []any, problems []string) ([]id.UserID, []string) {
	users := make([]id.UserID, 0, len(values))
	for i, v := range values {
		s, ok := v.(string)
		if !ok {
			problems = append(problems, fmt.Sprintf("%s[%d] is not a string", key, i))
			continue
		}
		if userid.IsPattern(s) {
			problems = append(problems, fmt.Sprintf("%s[%d] %q: patterns (* or ?) are not something the stock router reads; add them with !presence blacklist add", key, i, s))
			continue
		}
		user, err := userid.Parse(s)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s[%d] %q: %v", key, i, s, err))
			continue
		}
		users = append(users, user)
	}
	return users, problems
}

// Import reads path and adds its lists to st in one change with an audit
// entry. On any error nothing is imported.
func Import(ctx context.Context, st *store.Store, path string) (*Result, error) {
	lists, err := Read(path)
	if err != nil {
		return nil, err
	}
	if len(lists.AlwaysSend)+len(lists.Blacklist) == 0 {
		return nil, errors.New("failed to import: the lists are empty")
	}
	m := rules.Mutation{
		Sender:  Sender,
		Command: "--import-synapse-config " + path,
		Reason:  "imported from " + lists.Source,
	}
	for _, user := range lists.AlwaysSend {
		m.Entries = append(m.Entries, rules.Entry{List: rules.AlwaysSend, UserID: user, Action: rules.Add})
	}
	for _, user := range lists.Blacklist {
		m.Entries = append(m.Entries, rules.Entry{List: rules.Blacklist, UserID: user, Action: rules.Add})
	}
	res, err := st.Apply(ctx, m)
	if err != nil {
		return nil, fmt.Errorf("failed to import: %w", err)
	}
	return &Result{Lists: *lists, Change: res.Change, Unchanged: len(res.Unchanged)}, nil
}
