package router

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestStateCapacity_BoundedByWhatTheBodyCanHold(t *testing.T) {
	tests := []struct {
		name string
		body []byte
		max  int
	}{
		{"nothing but braces", bytes.Repeat([]byte("{"), 16<<20), (16 << 20) / minStateBytes},
		{"one state", []byte(`{"states":[{"user_id":"@a:b"}]}`), 2},
		{"many small states", bytes.Repeat([]byte(`{"user_id":"@a:b"},`), 1000), 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := stateCapacity(tt.body)
			if got > tt.max || got > maxStateCapacity {
				t.Errorf("stateCapacity = %d; want at most %d (and %d)", got, tt.max, maxStateCapacity)
			}
		})
	}
}

func TestPlainJSONString_AgreesWithAByteLoop(t *testing.T) {
	reference := func(s string) bool {
		for i := 0; i < len(s); i++ {
			if s[i] < 0x20 || s[i] == '\\' {
				return false
			}
		}
		return utf8.ValidString(s)
	}
	for _, s := range []string{"", "@a:x", "@abcdefgh:example.org", "@a\\b:example.org", "@abcdefg\x01:example.org", "@abc\x1f", "\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f", "@é:exemple.org", "@\xff\xfe:x.org.....", "        ", "!!!!!!!!\\"} {
		if got, want := plainJSONString(s), reference(s); got != want {
			t.Errorf("plainJSONString(%q) = %v; want %v", s, got, want)
		}
	}
}

func FuzzPlainJSONString(f *testing.F) {
	f.Add("@abcdefgh:example.org")
	f.Fuzz(func(t *testing.T, s string) {
		want := utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == '\\' })
		if got := plainJSONString(s); got != want {
			t.Fatalf("plainJSONString(%q) = %v; want %v", s, got, want)
		}
	})
}
