// Package benchdata makes the inputs the benchmarks share.
package benchdata

import (
	"fmt"

	"maunium.net/go/mautrix/id"
)

// Patterns returns n blacklist patterns, a bridge-like mix: prefixes
// (@bridge<i>_*:example.org), suffixes (@*_bot<i>:example.org, one in ten)
// and patterns with ? (@bot-??<i>:example.org, one in ten), which compile to
// regular expressions.
func Patterns(n int) []id.UserID {
	out := make([]id.UserID, n)
	for i := range out {
		p := fmt.Sprintf("@bridge%d_*:example.org", i)
		switch i % 10 {
		case 7:
			p = fmt.Sprintf("@*_bot%d:example.org", i)
		case 9:
			p = fmt.Sprintf("@bot-??%d:example.org", i)
		}
		out[i] = id.UserID(p)
	}
	return out
}
