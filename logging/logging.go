// Package logging sets up presence-router's single log stream: logrus, with
// mautrix's zerolog output forwarded into it, and secrets redacted.
package logging

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/sirupsen/logrus"
)

// New returns a logrus logger writing to out in the given format ("text" or
// "json") at the given level.
func New(out io.Writer, level, format string) (*logrus.Logger, error) {
	log := logrus.New()
	log.SetOutput(out)
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("failed to parse logging.level: %w", err)
	}
	log.SetLevel(lvl)
	switch format {
	case "json":
		log.SetFormatter(&logrus.JSONFormatter{})
	case "text", "":
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, DisableColors: true})
	default:
		return nil, fmt.Errorf("failed to set logging.format: unknown format %q", format)
	}
	return log, nil
}

// Redactor replaces secrets in every formatted log line. Add secrets as
// they become known (tokens from the config and the registration).
type Redactor struct {
	inner   logrus.Formatter
	lock    sync.RWMutex
	secrets [][]byte
}

// Redact wraps log's formatter so that no secret reaches the output.
func Redact(log *logrus.Logger) *Redactor {
	r := &Redactor{inner: log.Formatter}
	log.SetFormatter(r)
	return r
}

// Add registers secrets to hide. Empty and very short strings are ignored.
func (r *Redactor) Add(secrets ...string) {
	r.lock.Lock()
	defer r.lock.Unlock()
	for _, s := range secrets {
		if len(s) >= 8 {
			r.secrets = append(r.secrets, []byte(s))
		}
	}
}

// Format implements logrus.Formatter.
func (r *Redactor) Format(entry *logrus.Entry) ([]byte, error) {
	out, err := r.inner.Format(entry)
	if err != nil {
		return out, err
	}
	r.lock.RLock()
	defer r.lock.RUnlock()
	for _, s := range r.secrets {
		out = bytes.ReplaceAll(out, s, []byte("[REDACTED]"))
	}
	return out, nil
}

// Zerolog returns a zerolog logger whose events are forwarded into log, with
// zerolog's fields as logrus fields.
func Zerolog(log *logrus.Logger) zerolog.Logger {
	zlvl := zerolog.TraceLevel
	switch log.GetLevel() {
	case logrus.DebugLevel:
		zlvl = zerolog.DebugLevel
	case logrus.InfoLevel:
		zlvl = zerolog.InfoLevel
	case logrus.WarnLevel:
		zlvl = zerolog.WarnLevel
	case logrus.ErrorLevel:
		zlvl = zerolog.ErrorLevel
	case logrus.FatalLevel, logrus.PanicLevel:
		zlvl = zerolog.FatalLevel
	}
	return zerolog.New(&bridge{log: log}).Level(zlvl).With().Timestamp().Logger()
}

// ZerologLimited is Zerolog for a library that anyone can make log (the
// encryption device logs every bad to-device message it is sent): a
// warning or error whose message was logged less than interval ago is held
// back, and the next one logged says how many were (held_back). Every
// warning or error, logged or held, calls onProblem (for a metric).
func ZerologLimited(log *logrus.Logger, interval time.Duration, onProblem func()) zerolog.Logger {
	z := Zerolog(log)
	b := &bridge{log: log, interval: interval, onProblem: onProblem, limiters: map[string]*Limiter{}}
	return z.Output(b)
}

// maxLimiters bounds the distinct messages a limited bridge tracks; past
// it, it starts over.
const maxLimiters = 1000

type bridge struct {
	log *logrus.Logger
	// With interval set, warnings and errors are limited per message.
	interval  time.Duration
	onProblem func()
	lock      sync.Mutex
	limiters  map[string]*Limiter
}

// allow applies the per-message limit: whether to log, and how many of the
// same message were held back since it was last logged.
func (b *bridge) allow(level zerolog.Level, msg string) (bool, int) {
	if b.interval == 0 || level < zerolog.WarnLevel || level == zerolog.NoLevel {
		return true, 0
	}
	if b.onProblem != nil {
		b.onProblem()
	}
	b.lock.Lock()
	l := b.limiters[msg]
	if l == nil {
		if len(b.limiters) >= maxLimiters {
			clear(b.limiters)
		}
		l = &Limiter{}
		b.limiters[msg] = l
	}
	b.lock.Unlock()
	return l.Allow(time.Now(), b.interval)
}

var _ zerolog.LevelWriter = (*bridge)(nil)

func (b *bridge) Write(p []byte) (int, error) {
	return b.WriteLevel(zerolog.NoLevel, p)
}

func (b *bridge) WriteLevel(level zerolog.Level, p []byte) (int, error) {
	var fields map[string]any
	if err := json.Unmarshal(p, &fields); err != nil {
		b.log.WithField("component", "mautrix").Info(strings.TrimSpace(string(p)))
		return len(p), nil
	}
	msg, _ := fields[zerolog.MessageFieldName].(string)
	ok, held := b.allow(level, msg)
	if !ok {
		return len(p), nil
	}
	if held > 0 {
		fields["held_back"] = held
	}
	delete(fields, zerolog.MessageFieldName)
	delete(fields, zerolog.LevelFieldName)
	delete(fields, zerolog.TimestampFieldName)
	if _, ok := fields["component"]; !ok {
		fields["component"] = "mautrix"
	}
	entry := b.log.WithFields(fields)
	switch level {
	case zerolog.TraceLevel:
		entry.Trace(msg)
	case zerolog.DebugLevel:
		entry.Debug(msg)
	case zerolog.WarnLevel:
		entry.Warn(msg)
	case zerolog.ErrorLevel, zerolog.FatalLevel, zerolog.PanicLevel:
		// A library's fatal must not end our process: log it as an error.
		entry.Error(msg)
	default:
		entry.Info(msg)
	}
	return len(p), nil
}
