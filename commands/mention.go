package commands

import (
	"net/url"
	"strings"

	"golang.org/x/net/html"
)

// htmlToText turns a formatted body into command text: user pills (links
// to matrix.to or matrix: user URIs) become the user ID, line breaks become
// newlines, reply fallbacks are dropped, and other markup is stripped.
func htmlToText(formatted string) string {
	var sb strings.Builder
	tokenizer := html.NewTokenizer(strings.NewReader(formatted))
	skipDepth := 0 // inside an <mx-reply> or a pill's text
	for {
		switch tokenizer.Next() {
		case html.ErrorToken:
			return sb.String()
		case html.TextToken:
			if skipDepth == 0 {
				sb.Write(tokenizer.Text())
			}
		case html.StartTagToken, html.SelfClosingTagToken:
			name, hasAttr := tokenizer.TagName()
			switch string(name) {
			case "br":
				sb.WriteByte('\n')
			case "p", "div":
				sb.WriteByte(' ')
			case "mx-reply":
				skipDepth++
			case "a":
				href := ""
				for hasAttr {
					var key, val []byte
					key, val, hasAttr = tokenizer.TagAttr()
					if string(key) == "href" {
						href = string(val)
					}
				}
				if user, ok := userFromLink(href); ok && skipDepth == 0 {
					sb.WriteString(user)
					skipDepth++
				} else if skipDepth > 0 {
					skipDepth++
				}
			}
		case html.EndTagToken:
			name, _ := tokenizer.TagName()
			if (string(name) == "a" || string(name) == "mx-reply") && skipDepth > 0 {
				skipDepth--
			}
		}
	}
}

// userFromLink extracts a user ID from a matrix.to link
// (https://matrix.to/#/@alice:example.org, percent-encoded or with ?via=)
// or a matrix: URI (matrix:u/alice:example.org). It does not validate it.
func userFromLink(link string) (string, bool) {
	switch {
	case strings.HasPrefix(link, "https://matrix.to/#/"), strings.HasPrefix(link, "http://matrix.to/#/"):
		rest := link[strings.Index(link, "#/")+2:]
		rest, _, _ = strings.Cut(rest, "?")
		decoded, err := url.PathUnescape(rest)
		if err != nil || !strings.HasPrefix(decoded, "@") {
			return "", false
		}
		return decoded, true
	case strings.HasPrefix(link, "matrix:u/"):
		rest, _, _ := strings.Cut(link[len("matrix:u/"):], "?")
		decoded, err := url.PathUnescape(rest)
		if err != nil || decoded == "" {
			return "", false
		}
		return "@" + decoded, true
	}
	return "", false
}
