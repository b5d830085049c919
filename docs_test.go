package main

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	flag "github.com/spf13/pflag"

	"github.com/presence-router/presence-router/commands"
	"github.com/presence-router/presence-router/config"
	"github.com/presence-router/presence-router/listfile"
	"github.com/presence-router/presence-router/rules"
)

// configKeys lists the dotted YAML keys of the Config struct.
func configKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if f.Type.Kind() == reflect.Struct {
			keys = append(keys, configKeys(f.Type, prefix+name+".")...)
		} else {
			keys = append(keys, prefix+name)
		}
	}
	return keys
}

// exampleKeys lists the keys in config.example.yaml, commented-out ones
// included.
func exampleKeys(t *testing.T) []string {
	data, err := os.ReadFile("config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	keyLine := regexp.MustCompile(`^(\s*)(?:# )?([a-z_]+):(?:\s|$)`)
	var keys, stack []string
	for _, line := range strings.Split(string(data), "\n") {
		m := keyLine.FindStringSubmatch(line)
		if m == nil || (strings.HasPrefix(strings.TrimSpace(line), "#") && len(m[1]) == 0) {
			continue
		}
		depth := len(m[1]) / 2
		stack = append(stack[:min(depth, len(stack))], m[2])
		if depth > 0 {
			keys = append(keys, strings.Join(stack, "."))
		}
	}
	return keys
}

func TestDocs_ConfigKeysMatchTheCode(t *testing.T) {
	code := configKeys(reflect.TypeOf(config.Config{}), "")
	example := exampleKeys(t)
	readme, _ := os.ReadFile("README.md")
	arch := string(readme)
	for _, key := range code {
		if !slices.Contains(example, key) {
			t.Errorf("config key %s is not in config.example.yaml", key)
		}
	}
	for _, key := range example {
		if !slices.Contains(code, key) {
			t.Errorf("config.example.yaml documents %s, which the code does not read", key)
		}
	}
	for _, key := range regexp.MustCompile("`((?:homeserver|appservice|bot|router|database|logging|metrics)\\.[a-z_]+)`").FindAllStringSubmatch(arch, -1) {
		if key[1] != "homeserver.yaml" && !slices.Contains(code, key[1]) {
			t.Errorf("README names config key %s, which the code does not read", key[1])
		}
	}
}

func TestDocs_FlagsMatchTheCode(t *testing.T) {
	fs := flag.NewFlagSet("presence-router", flag.ContinueOnError)
	newFlags(fs)
	readme, _ := os.ReadFile("README.md")
	var code []string
	fs.VisitAll(func(f *flag.Flag) {
		code = append(code, "--"+f.Name)
		if f.Shorthand != "" {
			code = append(code, "-"+f.Shorthand)
		}
	})
	documented := regexp.MustCompile(`presence-router ((?:-{1,2}[a-z-]+[ =]?\S*\s?)+)`).FindAllStringSubmatch(string(readme), -1)
	seen := map[string]bool{}
	for _, m := range documented {
		for _, word := range strings.Fields(m[1]) {
			if strings.HasPrefix(word, "-") {
				name := strings.SplitN(word, "=", 2)[0]
				seen[name] = true
				if !slices.Contains(code, name) {
					t.Errorf("README uses flag %s, which does not exist", name)
				}
			}
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		if !seen["--"+f.Name] && !seen["-"+f.Shorthand] {
			t.Errorf("flag --%s is not documented in README.md", f.Name)
		}
	})
}

func TestDocs_CommandsMatchTheCode(t *testing.T) {
	readme, _ := os.ReadFile("README.md")
	rows := regexp.MustCompile("(?m)^\\| `!presence [^`]+` \\|.*$").FindAllString(string(readme), -1)
	want := commands.CommandTable("!presence")
	if !slices.Equal(rows, want) {
		t.Errorf("README's command table differs from the command table in commands/table.go:\n got:\n%s\nwant:\n%s", strings.Join(rows, "\n"), strings.Join(want, "\n"))
	}
}

// TestDocs_ListsFileExampleReads: the README's example of the file that
// export writes and import reads is one that import takes, groups and all.
func TestDocs_ListsFileExampleReads(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	example := regexp.MustCompile("(?s)```yaml\n(always_send:.*?)```").FindSubmatch(readme)
	if example == nil {
		t.Fatal("README.md has no lists file example (a yaml block starting with always_send:)")
	}
	lists, err := listfile.Read(example[1])
	if err != nil || !lists.Groups || !slices.ContainsFunc(lists.Entries, func(e rules.ListEntry) bool { _, g := e.List.Group(); return g && e.UserID != "" }) {
		t.Fatalf("the README's lists file: %v, %+v; want it read, with a group and a member", err, lists)
	}
}
