package bot

import (
	"context"
	"fmt"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/presence-router/presence-router/commands"
)

// isListedAdmin reports whether user is in bot.admins.
func (b *Bot) isListedAdmin(user id.UserID) bool {
	_, ok := b.admins[user]
	return ok
}

// mayCommand decides whether sender may run cmd: help is open to everyone
// in the control room; everything else needs bot.admins, or a power level of
// at least bot.admin_power_level in the control room. The power levels are
// read from the homeserver for every such check, so a demotion or a
// promotion counts from the next command on. It returns the reason for a
// refusal.
func (b *Bot) mayCommand(ctx context.Context, sender id.UserID, cmd *commands.Command) (bool, string) {
	if cmd == nil || cmd.Open() || b.isListedAdmin(sender) {
		return true, ""
	}
	need := b.cfg.Bot.AdminPowerLevel
	if need == nil {
		return false, fmt.Sprintf("%s is not a presence-router admin: only users in bot.admins may use this command.", commands.CodeUser(sender))
	}
	plCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pl, err := b.readPowerLevels(plCtx, b.ControlRoom())
	if err != nil {
		b.log.WithError(err).Warn("Failed to read the control room's power levels")
		return false, "Could not read this room's power levels to check your permission; try again later."
	}
	b.checkPowerLevelFloor(pl)
	if level := pl.GetUserLevel(sender); level < *need {
		return false, fmt.Sprintf("%s is not a presence-router admin: only users in bot.admins or with power level %d or more in this room may use this command (yours is %d).", commands.CodeUser(sender), *need, level)
	}
	return true, ""
}

// readPowerLevels reads a room's power levels from the homeserver. It does
// not use mautrix's state store, which would keep the first answer.
func (b *Bot) readPowerLevels(ctx context.Context, room id.RoomID) (*event.PowerLevelsEventContent, error) {
	var pl event.PowerLevelsEventContent
	if err := b.intent().StateEvent(ctx, room, event.StatePowerLevels, "", &pl); err != nil {
		return nil, fmt.Errorf("failed to read the power levels of %s: %w", room, err)
	}
	return &pl, nil
}

// checkPowerLevelFloor warns when bot.admin_power_level lets every member
// of the control room command: it is at or below the room's users_default.
func (b *Bot) checkPowerLevelFloor(pl *event.PowerLevelsEventContent) {
	need := b.cfg.Bot.AdminPowerLevel
	if need == nil || *need > pl.UsersDefault {
		b.setProblem(problemPowerLevel, "")
		return
	}
	msg := fmt.Sprintf("bot.admin_power_level (%d) is at or below the control room's default power level (users_default %d): every member of the room may change the lists. Raise bot.admin_power_level or the room's users_default.", *need, pl.UsersDefault)
	b.lock.RLock()
	known := b.problems[problemPowerLevel] == msg
	b.lock.RUnlock()
	if !known {
		b.log.Warn(msg)
		b.setProblem(problemPowerLevel, msg)
	}
}
