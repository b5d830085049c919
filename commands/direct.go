package commands

import (
	"context"
	"fmt"
	"strings"

	"github.com/presence-router/presence-router/rules"
)

// The verbs of a direct chat with the bot: any local user, about their own
// presence.
const (
	VerbHide   Verb = "hide"
	VerbUnhide Verb = "unhide"
)

// selfService ends the command text of a change a user made to their own
// presence in a direct chat: history shows it.
const selfService = " (self-service)"

func directSpecs() []*commandSpec {
	return []*commandSpec{
		{verb: VerbHide, direct: true, directOnly: true, parse: noArguments, run: (*Runner).hide,
			summary: "in a direct chat with the bot, any local user: stop routing your own presence (you go on the blacklist); people who share a room with you still see it"},
		{verb: VerbUnhide, direct: true, directOnly: true, parse: noArguments, run: (*Runner).unhide,
			summary: "in a direct chat with the bot: route your presence again, unless an admin hid it"},
	}
}

// Direct reports whether cmd may be sent in a direct chat with the bot
// (hide, unhide, explain).
func (c *Command) Direct() bool { return specFor(c.Verb, c.List).direct }

// DirectOnly reports whether cmd works in a direct chat only (hide,
// unhide): it is about its sender, whom the control room does not serve.
func (c *Command) DirectOnly() bool { return specFor(c.Verb, c.List).directOnly }

// DirectHelp is the reply to a command that a direct chat does not take.
func DirectHelp(prefix string) string {
	return fmt.Sprintf("In a direct chat, presence-router takes %s, %s and %s (about yourself) only; the other commands are for its admins, in the control room. Nothing was changed.",
		Code(prefix+" hide"), Code(prefix+" unhide"), Code(prefix+" explain"))
}

// hide puts the sender on the blacklist, as themselves.
func (r *Runner) hide(ctx context.Context, origin Origin, _ *Command) (*Reply, *rules.Change, error) {
	user := origin.Sender
	if ex := r.Engine.Explain(user); ex.Blacklisted && ex.Pattern != "" {
		return Success(fmt.Sprintf("Your presence is already hidden: the blacklist's pattern %s matches you (version %d). Nothing was changed.", CodeUser(ex.Pattern), ex.Version)), nil, nil
	}
	res, err := r.Store.Apply(ctx, rules.Mutation{EventID: origin.EventID, Sender: user, Command: r.Prefix + " hide" + selfService,
		Entries: []rules.Entry{{List: rules.Blacklist, UserID: user, Action: rules.Add}}})
	if err != nil {
		return nil, nil, err
	}
	if res.Change == nil {
		return Success("Your presence is already hidden (you are on the blacklist). Nothing was changed."), nil, nil
	}
	return Success(fmt.Sprintf("Your presence is no longer routed by presence-router: nobody receives it through always-send or a group. "+
		"People who share a room with you still see it (no presence router can hide that). %s undoes this. Version %d.",
		Code(r.Prefix+" unhide"), res.Change.Version)), res.Change, nil
}

// unhide takes the sender off the blacklist, when they put themselves on
// it.
func (r *Runner) unhide(ctx context.Context, origin Origin, _ *Command) (*Reply, *rules.Change, error) {
	user := origin.Sender
	by, listed, err := r.Store.RuleAddedBy(ctx, rules.Blacklist, user)
	if err != nil {
		return nil, nil, err
	}
	ex := r.Engine.Explain(user)
	switch {
	case listed && by != user:
		return Failure(fmt.Sprintf("An admin (%s) put you on the blacklist: only an admin can take you off it. Nothing was changed.", CodeUser(by)), ResultRefused), nil, nil
	case !listed && ex.Pattern != "":
		return Failure(fmt.Sprintf("The blacklist's pattern %s, which an admin added, hides your presence: only an admin can change that. Nothing was changed.", CodeUser(ex.Pattern)), ResultRefused), nil, nil
	case !listed:
		return Success("Your presence is not hidden: nothing to do."), nil, nil
	}
	res, err := r.Store.Apply(ctx, rules.Mutation{EventID: origin.EventID, Sender: user, Command: r.Prefix + " unhide" + selfService,
		Entries: []rules.Entry{{List: rules.Blacklist, UserID: user, Action: rules.Remove}}})
	if err != nil || res.Change == nil {
		return Success("Your presence is not hidden: nothing to do."), nil, err
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "Your presence is routed again. Version %d.", res.Change.Version)
	sb.WriteString(r.stillHidden(res.Change.Entries))
	return Success(sb.String()), res.Change, nil
}
