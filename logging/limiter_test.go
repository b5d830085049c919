package logging

import (
	"testing"
	"time"
)

func TestLimiter_OneLinePerIntervalWithACount(t *testing.T) {
	var l Limiter
	now := time.Unix(1000, 0)
	if ok, held := l.Allow(now, 10*time.Second); !ok || held != 0 {
		t.Fatalf("first warning: %v, %d", ok, held)
	}
	for i := range 500 {
		if ok, _ := l.Allow(now.Add(time.Duration(i)*time.Millisecond), 10*time.Second); ok {
			t.Fatalf("warning %d within the interval was let through", i)
		}
	}
	if ok, held := l.Allow(now.Add(11*time.Second), 10*time.Second); !ok || held != 500 {
		t.Errorf("after the interval: %v with %d held back; want true with 500", ok, held)
	}
}
