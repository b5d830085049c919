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

type bridge struct {
	log *logrus.Logger
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
