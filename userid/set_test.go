package userid

import (
	"fmt"
	"slices"
	"testing"

	"github.com/presence-router/presence-router/internal/patternref"
)

func TestSet_MatchesAsTheReferenceReadsEachPattern(t *testing.T) {
	patterns := []string{"@whatsapp_*:x", "@bot-??:x", "@a*b*c:x", "@*:evil.org", "@k*:x", "@s?:x", "@?:x", "@*a**:y", "@[::1]*:*", "@x:h"}
	users := []string{"@WhatsApp_1:x", "@bot-1:x", "@bot-12:x", "@abbc:x", "@acb:x", "@a:y", "@ba:y", "@me:EVIL.org", "@\u212aelvin:x",
		"@\u017fa:x", "@é:x", "@q:[::1]:8448", "@x:h", "@x:hh", "", "@", "@\xff:x"}
	set := NewSet(patterns)
	sorted := slices.Sorted(slices.Values(patterns))
	for _, user := range users {
		want := ""
		for _, p := range sorted { // the first match in sorted order
			if patternref.Match(p, user) {
				want = p
				break
			}
		}
		if got, ok := set.Match(user); got != want || ok != (want != "") {
			t.Errorf("Match(%q) = %q, %v; want %q", user, got, ok, want)
		}
	}
}

func TestSet_EmptyAndDuplicates(t *testing.T) {
	if _, ok := NewSet(nil).Match("@a:b"); ok {
		t.Error("an empty set matched")
	}
	if s := NewSet([]string{"@a*:b", "@a*:b", "@a**:b"}); s.Len() != 2 {
		t.Errorf("Len = %d, want 2 (duplicates dropped; @a**:b is spelled apart)", s.Len())
	}
}

func BenchmarkSet_Match(b *testing.B) {
	patterns := make([]string, 1000)
	for i := range patterns {
		patterns[i] = fmt.Sprintf("@%c%c??%d:*", 'a'+i%26, 'a'+i/26%26, i)
	}
	set := NewSet(patterns)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		set.Match(fmt.Sprintf("@user%d:example.org", i%1000))
	}
}

// Patterns added and removed one by one leave the set matching as one
// built from what remains.
func TestSet_AddAndRemoveMatchAsANewSet(t *testing.T) {
	users := []string{"@bot-12:x", "@whatsapp_1:x", "@a:y", "@ab:y", "@abc:y"}
	steps := []struct {
		add, remove string
	}{
		{add: "@bot-??:x"}, {add: "@whatsapp_*:x"}, {add: "@a*:y"}, {add: "@a**:y"}, {add: "@ab?:y"},
		{remove: "@a*:y"}, {remove: "@bot-??:x"}, {add: "@bot-??:x"}, {remove: "@a**:y"}, {remove: "@nothing:x"},
	}
	set := NewSet(nil)
	var have []string
	for i, step := range steps {
		if step.add != "" {
			set.Add(step.add)
			if !slices.Contains(have, step.add) {
				have = append(have, step.add)
			}
		} else {
			set.Remove(step.remove)
			have = slices.DeleteFunc(have, func(p string) bool { return p == step.remove })
		}
		fresh := NewSet(have)
		for _, user := range users {
			got, gotOK := set.Match(user)
			want, wantOK := fresh.Match(user)
			if got != want || gotOK != wantOK {
				t.Errorf("step %d: Match(%q) = %q, %v; a new set of %v says %q, %v", i, user, got, gotOK, have, want, wantOK)
			}
		}
		if set.Len() != len(have) {
			t.Errorf("step %d: Len %d, want %d", i, set.Len(), len(have))
		}
	}
}
