package commands

import (
	"encoding/json"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"
)

// Command results, for replies and metrics.
const (
	ResultOK      = "ok"
	ResultInvalid = "invalid"
	ResultRefused = "refused"
)

// listBudget and listMaxLines bound long replies. The event carries the
// plain body and the HTML, and JSON escapes every < and > of the HTML, so
// a short line costs about seven times its Markdown: the line cap keeps a
// list of the shortest user IDs under Matrix's 65,536-byte event limit,
// the byte budget a list of the longest.
const (
	listBudget   = 15000
	listMaxLines = 400
)

// maxEventBytes is the largest reply content sent; a larger one is replaced
// by a short notice (Matrix rejects events over 65,536 bytes).
const maxEventBytes = 60000

// Reply is the answer to a command: Markdown of ours (member text goes in
// only through the functions of render.go) and the result.
type Reply struct {
	Markdown string `json:"markdown"`
	Result   string `json:"result"`
}

// Success is a reply to a command that did what it was asked.
func Success(markdown string) *Reply {
	return &Reply{Markdown: markdown, Result: ResultOK}
}

// Failure is a reply to a command that was refused or invalid (result is
// ResultInvalid or ResultRefused).
func Failure(markdown, result string) *Reply {
	return &Reply{Markdown: markdown, Result: result}
}

// Content renders the reply as an m.notice that replies to the command
// replyTo and mentions its sender (a notice of its own, mentioning nobody,
// when they are empty). A reply too large for one Matrix event
// becomes a short notice saying so.
func (r *Reply) Content(replyTo id.EventID, sender id.UserID) *event.MessageEventContent {
	content := format.RenderMarkdown(r.Markdown, true, false)
	content.MsgType = event.MsgNotice
	content.Mentions = &event.Mentions{}
	if replyTo != "" {
		content.RelatesTo = (&event.RelatesTo{}).SetReplyTo(replyTo)
	}
	if sender != "" {
		content.Mentions.UserIDs = []id.UserID{sender}
	}
	if data, err := json.Marshal(&content); err == nil && len(data) > maxEventBytes {
		short := format.RenderMarkdown("The answer is too long for one Matrix message; narrow the command down.", true, false)
		short.MsgType, short.RelatesTo, short.Mentions = event.MsgNotice, content.RelatesTo, content.Mentions
		return &short
	}
	return &content
}
