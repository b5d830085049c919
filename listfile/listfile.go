// Package listfile reads and writes the lists as a YAML file: what
// `presence-router export` writes and `presence-router import` reads. A
// file written by Write and read by Read gives back the same entries and
// reasons: always-send, the blacklist and the groups with their members.
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
	AlwaysSend []item      `yaml:"always_send"`
	Blacklist  []item      `yaml:"blacklist"`
	Groups     []groupItem `yaml:"groups"`
}

// item is one entry of a list.
type item struct {
	User   string `yaml:"user"`
	Reason string `yaml:"reason,omitempty"`
}

// groupItem is one group: its name, the reason it was created for, and its
// members (user IDs and patterns).
type groupItem struct {
	Name    string `yaml:"name"`
	Reason  string `yaml:"reason,omitempty"`
	Members []item `yaml:"members"`
}

// Lists is what a file says.
type Lists struct {
	// Entries are the always-send and blacklist entries, and each group's
	// entry (no user; rules.GroupEntry's list) followed by its members.
	Entries []rules.ListEntry
	// Groups: the file lists the groups (a file without a groups key, as
	// written before groups existed, says nothing of them).
	Groups bool
}

// Write writes entries (of every list but the known users, as
// store.Export reads them: a group's entry before its members) as the
// file, with a header saying where they came from.
func Write(w io.Writer, entries []rules.ListEntry, version int64, at time.Time) error {
	f := file{AlwaysSend: []item{}, Blacklist: []item{}, Groups: []groupItem{}}
	groups := map[rules.GroupName]int{} // index in f.Groups
	for _, e := range entries {
		it := item{User: string(e.UserID), Reason: e.Reason}
		name, isGroup := e.List.Group()
		switch {
		case isGroup:
			i, ok := groups[name]
			if !ok {
				i, groups[name] = len(f.Groups), len(f.Groups)
				f.Groups = append(f.Groups, groupItem{Name: string(name), Members: []item{}})
			}
			if e.UserID == "" {
				f.Groups[i].Reason = e.Reason
			} else {
				f.Groups[i].Members = append(f.Groups[i].Members, it)
			}
		case e.List == rules.Blacklist:
			f.Blacklist = append(f.Blacklist, it)
		case e.List == rules.AlwaysSend:
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

// Read parses a file: every entry checked as a command checks it
// (patterns on the blacklist and in groups only, group names as `group
// create` takes them), duplicates refused. An error names the line.
func Read(data []byte) (Lists, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return Lists{}, fmt.Errorf("not a lists file: %w", err)
	}
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return Lists{}, fmt.Errorf("not a lists file: %w", err)
	}
	lines := itemLines(&doc)
	var out Lists
	_, out.Groups = lines["groups"]
	seen := map[rules.ListEntry]bool{}
	add := func(list rules.List, it item, line int) error {
		user, err := parseUser(list, it.User)
		if err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
		key := rules.ListEntry{List: list, UserID: user}
		if seen[key] {
			return fmt.Errorf("line %d: %s is on the %s list twice", line, user, list)
		}
		seen[key] = true
		out.Entries = append(out.Entries, rules.ListEntry{List: list, UserID: user, Reason: it.Reason})
		return nil
	}
	for _, list := range []struct {
		name  rules.List
		items []item
	}{{rules.AlwaysSend, f.AlwaysSend}, {rules.Blacklist, f.Blacklist}} {
		for i, it := range list.items {
			if err := add(list.name, it, lines[string(list.name)][i]); err != nil {
				return Lists{}, err
			}
		}
	}
	memberLines := groupMemberLines(&doc)
	for i, g := range f.Groups {
		line := lines["groups"][i]
		name, err := rules.ParseGroupName(g.Name)
		if err != nil {
			return Lists{}, fmt.Errorf("line %d: %w", line, err)
		}
		group := rules.ListEntry{List: rules.GroupList(name)}
		if seen[group] {
			return Lists{}, fmt.Errorf("line %d: the group %s is listed twice", line, name)
		}
		seen[group] = true
		out.Entries = append(out.Entries, rules.ListEntry{List: group.List, Reason: g.Reason})
		for j, it := range g.Members {
			if err := add(group.List, it, memberLines[i][j]); err != nil {
				return Lists{}, err
			}
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
	if _, group := list.Group(); list != rules.Blacklist && !group {
		return "", fmt.Errorf("%q: patterns are for the blacklist and groups only", s)
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
		key := root.Content[i].Value
		lines[key] = []int{} // present, even when empty
		for _, n := range root.Content[i+1].Content {
			lines[key] = append(lines[key], n.Line)
		}
	}
	return lines
}

// groupMemberLines maps each group's members to their lines, by the
// group's and the member's index.
func groupMemberLines(doc *yaml.Node) [][]int {
	var out [][]int
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return out
	}
	root := doc.Content[0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value != "groups" {
			continue
		}
		for _, g := range root.Content[i+1].Content {
			var lines []int
			for k := 0; k+1 < len(g.Content); k += 2 {
				if g.Content[k].Value == "members" {
					for _, m := range g.Content[k+1].Content {
						lines = append(lines, m.Line)
					}
				}
			}
			out = append(out, lines)
		}
	}
	return out
}
