// Package listfile reads and writes the lists as a YAML file: what
// `presence-router export` writes and `presence-router import` reads. A
// file written by Write and read by Read gives back the same entries and
// reasons.
package listfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/rules"
	"github.com/presence-router/presence-router/userid"
)

// file is the YAML document.
type file struct {
	AlwaysSend []item `yaml:"always_send"`
	Blacklist  []item `yaml:"blacklist"`
}

// item is one entry of a list.
type item struct {
	User   string `yaml:"user"`
	Reason string `yaml:"reason,omitempty"`
}

// Write writes entries (of both lists) as the file, with a header saying
// where they came from.
func Write(w io.Writer, entries []rules.ListEntry, version int64, at time.Time) error {
	f := file{AlwaysSend: []item{}, Blacklist: []item{}}
	for _, e := range entries {
		it := item{User: string(e.UserID), Reason: e.Reason}
		if e.List == rules.Blacklist {
			f.Blacklist = append(f.Blacklist, it)
		} else {
			f.AlwaysSend = append(f.AlwaysSend, it)
		}
	}
	var body bytes.Buffer
	enc := yaml.NewEncoder(&body)
	enc.SetIndent(2)
	if err := enc.Encode(&f); err != nil {
		return fmt.Errorf("failed to encode the lists: %w", err)
	}
	header := fmt.Sprintf("# presence-router's lists at version %d, exported %s.\n"+
		"# `presence-router import -c config.yaml FILE` makes the lists what this file says (--dry-run first shows what would change).\n",
		version, at.UTC().Format(time.RFC3339))
	if _, err := io.WriteString(w, header); err != nil {
		return fmt.Errorf("failed to write the lists: %w", err)
	}
	if _, err := w.Write(body.Bytes()); err != nil {
		return fmt.Errorf("failed to write the lists: %w", err)
	}
	return nil
}

// Read parses a file: every entry checked as a command checks it (patterns
// on the blacklist only), duplicates refused. An error names the line.
func Read(data []byte) ([]rules.ListEntry, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("not a lists file: %w", err)
	}
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("not a lists file: %w", err)
	}
	lines := itemLines(&doc)
	var out []rules.ListEntry
	seen := map[rules.ListEntry]bool{}
	for _, list := range []struct {
		name  rules.List
		items []item
	}{{rules.AlwaysSend, f.AlwaysSend}, {rules.Blacklist, f.Blacklist}} {
		for i, it := range list.items {
			line := lines[string(list.name)][i]
			user, err := parseUser(list.name, it.User)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", line, err)
			}
			key := rules.ListEntry{List: list.name, UserID: user}
			if seen[key] {
				return nil, fmt.Errorf("line %d: %s is on the %s list twice", line, user, list.name)
			}
			seen[key] = true
			out = append(out, rules.ListEntry{List: list.name, UserID: user, Reason: it.Reason})
		}
	}
	return out, nil
}

// parseUser checks one entry's user as a command would.
func parseUser(list rules.List, s string) (id.UserID, error) {
	if s == "" {
		return "", errors.New("an entry without user")
	}
	if !userid.IsPattern(s) {
		return userid.Parse(s)
	}
	if list != rules.Blacklist {
		return "", fmt.Errorf("%q: patterns are for the blacklist only", s)
	}
	user, err := userid.ParsePattern(s)
	if errors.Is(err, userid.ErrTooBroad) {
		// Written by export after a command that said --force.
		return id.UserID(strings.ToLower(s)), nil
	}
	return user, err
}

// itemLines maps each list's items to their lines in the document.
func itemLines(doc *yaml.Node) map[string][]int {
	lines := map[string][]int{}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return lines
	}
	root := doc.Content[0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		for _, n := range root.Content[i+1].Content {
			lines[root.Content[i].Value] = append(lines[root.Content[i].Value], n.Line)
		}
	}
	return lines
}
