package patternref

import "testing"

func TestMatch_ReadsStarsQuestionMarksAndASCIICase(t *testing.T) {
	tests := []struct {
		pattern, user string
		want          bool
	}{
		{"*", "*0", true}, // found by FuzzPatternMatch: a * in the user ID is matched by the star
		{"@whatsapp_*:x", "@WhatsApp_1:x", true},
		{"@bot-??:x", "@bot-1:x", false},
		{"@bot-??:x", "@bot-12:x", true},
		{"@a*b*c:x", "@abbc:x", true},
		{"@a*b*c:x", "@acb:x", false},
		{"@*:x", "@a:y", false},
		{"@k*:x", "@\u212aelvin:x", false}, // the Kelvin sign is not an ASCII K
		{"@s?:x", "@\u017fa:x", false},     // nor the long s an s
		{"@?:x", "@é:x", true},             // ? is one character, however many bytes
	}
	for _, tt := range tests {
		if got := Match(tt.pattern, tt.user); got != tt.want {
			t.Errorf("Match(%q, %q) = %v; want %v", tt.pattern, tt.user, got, tt.want)
		}
	}
}
