package commands

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"
)

// renderedText is what a client shows for a reply's Markdown.
func renderedText(markdown string) string {
	content := (&Reply{Markdown: markdown}).Content("$command", "@admin:test")
	if content.FormattedBody == "" {
		return content.Body
	}
	return format.HTMLToText(content.FormattedBody)
}

// renderedHTML is the HTML a client renders for a reply's Markdown.
func renderedHTML(markdown string) string {
	content := (&Reply{Markdown: markdown}).Content("$command", "@admin:test")
	if content.FormattedBody == "" {
		return ""
	}
	return content.FormattedBody
}

// hostileInputs are member texts meant to make a reply render something
// its author did not write, or take long to render.
var hostileInputs = map[string]string{
	"link":             "[click-me](https://evil.example/phish)",
	"image":            "![img](mxc://evil.example/abc)",
	"autolink":         "<https://evil.example/phish>",
	"html":             "<b>bold</b><img src=x>",
	"emphasis":         "*strong* _em_ ~~strike~~",
	"heading":          "x\n# Heading\n===",
	"list and table":   "x\n- item\n| a | b |\n|---|---|\n| 1 | 2 |",
	"entity":           "&lt;script&gt; &#x41;",
	"code fence":       "x\n```\ncode\n```",
	"backticks":        "`` ` ``",
	"rtl override":     "safe\u202Eexe.txt",
	"newlines in text": "a\r\nb\nc",
}

func TestLiteral_RendersMemberTextAsPlainText(t *testing.T) {
	for name, input := range hostileInputs {
		t.Run(name, func(t *testing.T) {
			md := "Reason: " + literal(input, MaxReasonRunes)
			html := renderedHTML(md)
			for _, tag := range []string{"<a", "<img", "<h1", "<li", "<table", "<strong", "<em", "<del", "<code", "<pre", "<b>"} {
				if strings.Contains(html, tag) {
					t.Errorf("member text %q rendered markup %s: %s", input, tag, html)
				}
			}
			text := renderedText(md)
			if strings.ContainsAny(text, "\n\r\u202E") {
				t.Errorf("rendered text keeps a line break or bidi control: %q", text)
			}
			want := "Reason: " + sanitize(input, MaxReasonRunes)
			if text != want {
				t.Errorf("rendered text = %q; want the input verbatim (folded): %q", text, want)
			}
		})
	}
}

func TestCodeUser_BacktickUserIDStaysOneCodeSpan(t *testing.T) {
	user := id.UserID("@we`ird``name:example.org")
	html := renderedHTML("User " + CodeUser(user) + " added.")
	if strings.Count(html, "<code>") != 1 || !strings.Contains(html, "<code>"+strings.ReplaceAll(string(user), "`", "`")+"</code>") {
		t.Errorf("a backtick user ID broke its code span: %s", html)
	}
	if got := renderedText("* " + CodeUser(user)); !strings.Contains(got, string(user)) {
		t.Errorf("rendered text %q does not show the user ID intact", got)
	}
}

func TestSanitize_CutsAndFolds(t *testing.T) {
	tests := []struct {
		name, in string
		max      int
		want     string
		cut      bool
	}{
		{"short text is kept", "hello world", 20, "hello world", false},
		{"newlines fold to one space", "a\n\n b\r\nc", 20, "a b c", false},
		{"bidi controls are removed", "ab\u202Ecd\u2066e\u200Ff", 20, "abcdef", false},
		{"other controls are removed", "a\x00b\x1bc\u200bd", 20, "abcd", false},
		{"cut at max runes with an ellipsis", "héllo wörld", 5, "héllo…", true},
		{"a cut at a space drops it", "abcd efgh", 5, "abcd…", true},
		{"exactly max is not cut", "abcde", 5, "abcde", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, cut := sanitizeCut(tt.in, tt.max)
			if got != tt.want || cut != tt.cut {
				t.Errorf("sanitizeCut(%q, %d) = %q, %v; want %q, %v", tt.in, tt.max, got, cut, tt.want, tt.cut)
			}
		})
	}
}

// pathological64K are 64 KB commands that made the Markdown renderer take
// seconds when they were echoed.
func pathological64K(prefix string) map[string]string {
	const size = 64 << 10
	fill := func(unit string) string { return strings.Repeat(unit, size/len(unit))[:size-len(prefix)-1] }
	return map[string]string{
		"unclosed links":      prefix + " " + fill("[a]("),
		"nested brackets":     prefix + " " + fill("["),
		"emphasis runs":       prefix + " " + fill("*_"),
		"backticks":           prefix + " " + fill("`a"),
		"link in a user arg":  prefix + " blacklist add @" + fill("[a](")[20:] + ":x.org",
		"reason of links":     prefix + " blacklist add @a:x.org " + fill("[a](")[30:],
		"many bad users":      prefix + " blacklist add " + fill("@[a]( "),
		"html entities":       prefix + " " + fill("&#x41;"),
		"angle brackets":      prefix + " " + fill("<a"),
		"one long word token": prefix + " " + fill("x"),
	}
}

// TestRender_AnyReplyToHostileInputIsFast renders the reply each 64 KB
// pathological command gets and checks it takes at most 10 ms (the best of
// five runs, so a noisy machine does not fail it; before member text was
// escaped and cut, the first input took about 3 s).
func TestRender_AnyReplyToHostileInputIsFast(t *testing.T) {
	tr := newTestRunner(t)
	n := 0
	for name, body := range pathological64K("!presence") {
		t.Run(name, func(t *testing.T) {
			n++
			rep := tr.replyFor(t, id.EventID(fmt.Sprintf("$hostile-%d", n)), body)
			best := time.Hour
			var content *event.MessageEventContent
			for range 5 {
				start := time.Now()
				content = rep.Content("$command", "@admin:test")
				best = min(best, time.Since(start))
			}
			if best > 10*time.Millisecond {
				t.Errorf("rendering the reply took %s (best of 5); want at most 10ms", best)
			}
			if strings.Contains(content.FormattedBody, "<a ") || strings.Contains(content.FormattedBody, "<img") {
				t.Errorf("the reply rendered member text as markup: %.300s", content.FormattedBody)
			}
			if len(content.Body) > 5000 {
				t.Errorf("the reply echoes %d bytes of the command; want it cut", len(content.Body))
			}
		})
	}
}

// replyFor runs a command from an admin the way the bot does, inside a
// store transaction, and returns the reply.
func (tr *testRunner) replyFor(t *testing.T, eventID id.EventID, body string) *Reply {
	t.Helper()
	cmd, err := ParseCommand(tr.Prefix, body, "")
	if err != nil {
		return Failure(err.Error(), ResultInvalid)
	}
	var rep *Reply
	err = tr.store.InTxn(context.Background(), func(ctx context.Context) error {
		var err error
		rep, _, err = tr.Run(ctx, Origin{EventID: eventID, Sender: "@admin:test"}, cmd)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestCode_EchoedFragmentsAreCut(t *testing.T) {
	long := strings.Repeat("x", 5000)
	if got := renderedText(Code(long)); len([]rune(strings.Trim(got, "`"))) > maxEchoRunes+1 {
		t.Errorf("an echoed fragment kept %d characters; want at most %d", len(got), maxEchoRunes)
	}
	user := id.UserID("@" + strings.Repeat("u", 240) + ":example.org")
	if got := renderedText(CodeUser(user)); !strings.Contains(got, string(user)) {
		t.Errorf("a 253-byte user ID was cut: %q", got)
	}
}
