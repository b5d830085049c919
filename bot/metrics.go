package bot

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/presence-router/presence-router/commands"
)

// Metrics are the bot's Prometheus series. A nil *Metrics records nothing.
type Metrics struct {
	commands  *prometheus.CounterVec
	connected prometheus.Gauge
	recovered prometheus.Counter
	// encryption counts the encryption device's warnings and errors.
	encryption prometheus.Counter
}

// NewMetrics registers the bot's series with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presence_router_commands_total",
			Help: "Chat commands processed, by result (ok, invalid, refused).",
		}, []string{"result"}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "presence_router_bot_connected",
			Help: "1 while the bot is registered and joined to the control room and the homeserver answers (checked every 5 s).",
		}),
		recovered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_router_commands_recovered_total",
			Help: "Commands the homeserver did not deliver, found in the control room's timeline.",
		}),
		encryption: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_router_encryption_problems_total",
			Help: "Warnings and errors of the bot's encryption device (to-device messages it cannot read, events it cannot decrypt), each one whether logged or held back.",
		}),
	}
	for _, result := range []string{commands.ResultOK, commands.ResultInvalid, commands.ResultRefused} {
		m.commands.WithLabelValues(result)
	}
	reg.MustRegister(m.commands, m.connected, m.recovered, m.encryption)
	return m
}

func (m *Metrics) countCommand(result string) {
	if m != nil {
		m.commands.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) setConnected(connected bool) {
	if m == nil {
		return
	}
	if connected {
		m.connected.Set(1)
	} else {
		m.connected.Set(0)
	}
}

func (m *Metrics) countRecovered(n int) {
	if m != nil {
		m.recovered.Add(float64(n))
	}
}

func (m *Metrics) countEncryptionProblem() {
	if m != nil {
		m.encryption.Inc()
	}
}
