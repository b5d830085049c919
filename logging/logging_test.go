package logging

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

func TestZerolog_ForwardsFieldsAndLevel(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, "debug", "json")
	if err != nil {
		t.Fatal(err)
	}
	zl := Zerolog(log)
	zl.Warn().Str("room_id", "!r:x").Msg("Joined room")
	var line map[string]any
	if err = json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("output is not one JSON line: %q", buf.String())
	}
	if line["msg"] != "Joined room" || line["level"] != "warning" || line["room_id"] != "!r:x" || line["component"] != "mautrix" {
		t.Errorf("unexpected line %v", line)
	}
}

func TestZerolog_RespectsLevel(t *testing.T) {
	var buf bytes.Buffer
	log, _ := New(&buf, "info", "text")
	zl := Zerolog(log)
	zl.Debug().Msg("hidden")
	if buf.Len() != 0 {
		t.Errorf("debug line leaked at info level: %q", buf.String())
	}
}

func TestRedactor_HidesSecrets(t *testing.T) {
	tests := []struct {
		name   string
		format string
	}{{"text", "text"}, {"json", "json"}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			log, _ := New(&buf, "info", tt.format)
			Redact(log).Add("supersecrettoken123", "short")
			log.WithField("auth", "Bearer supersecrettoken123").Info("token supersecrettoken123 used")
			zl := Zerolog(log)
			zl.Info().Str("token", "supersecrettoken123").Msg("via zerolog")
			if strings.Contains(buf.String(), "supersecrettoken123") {
				t.Errorf("secret in output: %q", buf.String())
			}
			if !strings.Contains(buf.String(), "[REDACTED]") {
				t.Errorf("no redaction marker: %q", buf.String())
			}
		})
	}
}

func TestZerologLimited_HoldsBackRepeatsAndSaysHowMany(t *testing.T) {
	log, hook := test.NewNullLogger()
	problems := 0
	z := ZerologLimited(log, 50*time.Millisecond, func() { problems++ })
	for range 10 {
		z.Warn().Msg("same")
	}
	z.Warn().Msg("other")
	z.Debug().Msg("debug is never held")
	time.Sleep(60 * time.Millisecond)
	z.Warn().Msg("same")
	var lines []string
	for _, e := range hook.AllEntries() {
		lines = append(lines, fmt.Sprintf("%s %v", e.Message, e.Data["held_back"]))
	}
	want := []string{"same <nil>", "other <nil>", "same 9"}
	if log.GetLevel() >= logrus.DebugLevel {
		want = []string{"same <nil>", "other <nil>", "debug is never held <nil>", "same 9"}
	}
	if strings.Join(lines, "|") != strings.Join(want, "|") {
		t.Errorf("lines %q, want %q", lines, want)
	}
	if problems != 12 {
		t.Errorf("%d problems counted, want 12 (every warning)", problems)
	}
}
