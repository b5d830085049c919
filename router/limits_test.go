package router

import (
	"bytes"
	"testing"
	"time"
)

func TestStateCapacity_BoundedByWhatTheBodyCanHold(t *testing.T) {
	tests := []struct {
		name string
		body []byte
		max  int
	}{
		{"nothing but braces", bytes.Repeat([]byte("{"), 16<<20), (16 << 20) / minStateBytes},
		{"one state", []byte(`{"states":[{"user_id":"@a:b"}]}`), 2},
		{"many small states", bytes.Repeat([]byte(`{"user_id":"@a:b"},`), 1000), 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := stateCapacity(tt.body)
			if got > tt.max || got > maxStateCapacity {
				t.Errorf("stateCapacity = %d; want at most %d (and %d)", got, tt.max, maxStateCapacity)
			}
		})
	}
}

func TestWarnLimiter_OneLinePerIntervalWithACount(t *testing.T) {
	var l warnLimiter
	now := time.Unix(1000, 0)
	if ok, held := l.allow(now, 10*time.Second); !ok || held != 0 {
		t.Fatalf("first warning: %v, %d", ok, held)
	}
	for i := range 500 {
		if ok, _ := l.allow(now.Add(time.Duration(i)*time.Millisecond), 10*time.Second); ok {
			t.Fatalf("warning %d within the interval was let through", i)
		}
	}
	if ok, held := l.allow(now.Add(11*time.Second), 10*time.Second); !ok || held != 500 {
		t.Errorf("after the interval: %v with %d held back; want true with 500", ok, held)
	}
}
