package bot

import (
	"context"
	"fmt"
	"time"
)

// homeserverCheckInterval is how often the bot asks whether the homeserver
// answers; with homeserverCheckTimeout it bounds how long /_matrix/mau/ready
// and the connection metric take to show that it stopped (or started again)
// answering.
const (
	homeserverCheckInterval = 5 * time.Second
	homeserverCheckTimeout  = 5 * time.Second
)

// problemHomeserver is the problem topic of a homeserver that does not answer.
const problemHomeserver = "homeserver"

// HomeserverAnswers reports whether the homeserver answered the bot's last
// check (false until the first one succeeds).
func (b *Bot) HomeserverAnswers() bool { return b.homeserverUp.Load() }

// homeserverLoop checks the homeserver's client API at once and then every
// checkEvery, and records the answer for HomeserverAnswers,
// Problems and the connection metric; it logs each change.
func (b *Bot) homeserverLoop(ctx context.Context) {
	ticker := time.NewTicker(b.checkEvery)
	defer ticker.Stop()
	var downSince time.Time
	for {
		checkCtx, cancel := context.WithTimeout(ctx, homeserverCheckTimeout)
		_, err := b.intent().Versions(checkCtx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil && !b.homeserverUp.Load():
			if !downSince.IsZero() {
				b.log.WithField("down_for", time.Since(downSince).Round(time.Second).String()).Info("The homeserver answers again")
			}
			downSince = time.Time{}
			b.setProblem(problemHomeserver, "")
			b.homeserverUp.Store(true)
			b.updateConnectedMetric()
		case err != nil && (b.homeserverUp.Load() || downSince.IsZero()):
			if downSince.IsZero() {
				downSince = time.Now()
			}
			b.log.WithError(err).WithField("address", b.cfg.Homeserver.Address).Warn("The homeserver does not answer; commands wait and replies are retried until it does")
			b.homeserverUp.Store(false)
			b.updateConnectedMetric()
			b.setProblem(problemHomeserver, fmt.Sprintf("The homeserver at %s does not answer (since %s): %v", b.cfg.Homeserver.Address, downSince.UTC().Format(time.RFC3339), err))
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}
