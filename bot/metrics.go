package bot

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the bot's Prometheus series. A nil *Metrics records nothing.
type Metrics struct {
	commands  *prometheus.CounterVec
	connected prometheus.Gauge
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
			Help: "1 while the bot is registered and joined to the control room.",
		}),
	}
	for _, result := range []string{resultOK, resultInvalid, resultRefused} {
		m.commands.WithLabelValues(result)
	}
	reg.MustRegister(m.commands, m.connected)
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
