package userid

import (
	"fmt"
	"testing"

	"github.com/presence-router/presence-router/internal/patternref"
)

func TestSet_MatchesAsTheReferenceReadsEachPattern(t *testing.T) {
	patterns := []string{"@whatsapp_*:x", "@bot-??:x", "@a*b*c:x", "@*:evil.org", "@k*:x", "@s?:x", "@?:x", "@*a**:y", "@[::1]*:*", "@x:h"}
	users := []string{"@WhatsApp_1:x", "@bot-1:x", "@bot-12:x", "@abbc:x", "@acb:x", "@a:y", "@ba:y", "@me:EVIL.org", "@\u212aelvin:x",
		"@\u017fa:x", "@é:x", "@q:[::1]:8448", "@x:h", "@x:hh", "", "@", "@\xff:x"}
	set := NewSet(patterns)
	for _, user := range users {
		want := ""
		for _, p := range set.patterns { // sorted: the first match
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
