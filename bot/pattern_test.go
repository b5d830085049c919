package bot

import (
	"strings"
	"testing"
)

func TestBot_PatternsListedApartAndExplained(t *testing.T) {
	tb := newTestBot(t, "", nil)
	tb.deliver(t, "t0", hsToken, message("$0", testAdmin, "!presence always-send add @puppet_desk:test @dash:test"))
	tb.replies(t, 1)
	tb.deliver(t, "t1", hsToken, message("$1", testAdmin, "!presence blacklist add @puppet_*:test @ceo:test bridges"))
	if reply := body(tb.replies(t, 2)[1]); !strings.Contains(reply, "@puppet_*:test") || !strings.Contains(reply, "The pattern matches 1 of the 2 always-send users") {
		t.Fatalf("add: %q", reply)
	}
	tb.deliver(t, "t2", hsToken, message("$2", testAdmin, "!presence blacklist list"))
	list := body(tb.replies(t, 3)[2])
	if !strings.Contains(list, "1 user and 1 pattern") || strings.Index(list, "Patterns") > strings.Index(list, "Users") {
		t.Errorf("list does not show the pattern apart: %q", list)
	}
	tb.deliver(t, "t3", hsToken, message("$3", testAdmin, "!presence explain @PUPPET_7:test"))
	if explain := body(tb.replies(t, 4)[3]); !strings.Contains(explain, "blacklisted by the pattern `@puppet_*:test`") {
		t.Errorf("explain does not name the pattern: %q", explain)
	}
	tb.deliver(t, "t4", hsToken, message("$4", testAdmin, "!presence history"))
	if history := body(tb.replies(t, 5)[4]); !strings.Contains(history, "@puppet_*:test") {
		t.Errorf("history does not record the pattern: %q", history)
	}
	_, _, blacklist := tb.engine.Rules()
	if len(blacklist) != 2 || tb.engine.Explain("@puppet_9:test").Pattern != "@puppet_*:test" {
		t.Errorf("engine after the change: %v", blacklist)
	}
}
