package harness

import (
	"os"
	"strings"
	"testing"
)

// A kept state directory keeps an operator's edits of a generated file
// until what is generated changes, and then keeps them in a .bak copy.
func TestWriteGenerated_KeepsEditsUntilTheSettingsChange(t *testing.T) {
	s := &Stack{Opts: Options{Dir: t.TempDir()}}
	path := s.Path("homeserver.yaml")
	read := func() string { data, _ := os.ReadFile(path); return string(data) }
	steps := []struct {
		name      string
		edit      string // appended to the file before the step
		generated string
		want      string
		wantNote  string
	}{
		{"first run writes it", "", "port: 1\n", "port: 1\n", ""},
		{"same settings, no edit: unchanged", "", "port: 1\n", "port: 1\n", ""},
		{"an edit is kept", "# mine\n", "port: 1\n", "port: 1\n# mine\n", "kept your edited"},
		{"new settings replace it, the edit goes to .bak", "", "port: 2\n", "port: 2\n", ".bak"},
		{"new settings without an edit", "", "port: 3\n", "port: 3\n", "rewrote"},
	}
	for _, step := range steps {
		s.Notes = nil
		if step.edit != "" {
			if err := os.WriteFile(path, []byte(read()+step.edit), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.writeGenerated("homeserver.yaml", []byte(step.generated)); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if got := read(); got != step.want {
			t.Errorf("%s: file %q, want %q", step.name, got, step.want)
		}
		if notes := strings.Join(s.Notes, " "); step.wantNote == "" && notes != "" || !strings.Contains(notes, step.wantNote) {
			t.Errorf("%s: notes %q, want %q", step.name, notes, step.wantNote)
		}
	}
	if bak, _ := os.ReadFile(path + ".bak"); string(bak) != "port: 1\n# mine\n" {
		t.Errorf(".bak holds %q, want the edited file", bak)
	}
	first, err := s.synapseSecrets()
	if err != nil {
		t.Fatal(err)
	}
	again, _ := s.synapseSecrets()
	if first["MacaroonSecret"] == "" || first["MacaroonSecret"] != again["MacaroonSecret"] {
		t.Errorf("secrets %v then %v: made once, kept after", first, again)
	}
}
