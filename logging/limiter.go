package logging

import (
	"sync"
	"time"
)

// Limiter lets one warning through per interval and counts the ones it held
// back, so that a flood of bad requests cannot flood the log. The zero
// value is ready to use.
type Limiter struct {
	lock sync.Mutex
	last time.Time
	held int
}

// Allow reports whether a warning may be logged now and, if so, how many
// were held back since the last one.
func (l *Limiter) Allow(now time.Time, interval time.Duration) (bool, int) {
	l.lock.Lock()
	defer l.lock.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < interval {
		l.held++
		return false, 0
	}
	held := l.held
	l.last, l.held = now, 0
	return true, held
}
