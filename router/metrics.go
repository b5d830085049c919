package router

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the routing API's Prometheus series. A nil *Metrics records
// nothing.
type Metrics struct {
	reg      prometheus.Registerer
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// NewMetrics registers the routing API's series with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presence_router_routing_requests_total",
			Help: "Routing API requests, by endpoint and HTTP status.",
		}, []string{"endpoint", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "presence_router_routing_request_duration_seconds",
			Help:    "Routing API request latency, by endpoint (the change feed's long polls included).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .5, 1, 5, 30, 60},
		}, []string{"endpoint"}),
	}
	reg.MustRegister(m.requests, m.latency)
	return m
}

// watch registers the gauges that read the engine and the handler.
func (m *Metrics) watch(e *Engine, h *Handler) {
	if m == nil {
		return
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "presence_router_version",
			Help: "Version of the latest committed rule change.",
		}, func() float64 { return float64(e.Version()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "presence_router_list_size",
			Help:        "Number of users on each list.",
			ConstLabels: prometheus.Labels{"list": "always_send"},
		}, func() float64 { n, _, _ := e.Counts(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "presence_router_list_size",
			Help:        "Number of users on each list.",
			ConstLabels: prometheus.Labels{"list": "blacklist"},
		}, func() float64 { _, n, _ := e.Counts(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "presence_router_adapter_last_request_age_seconds",
			Help: "Seconds since the adapter's last authenticated routing API request (-1: never).",
		}, func() float64 {
			last := h.LastContact()
			if last.IsZero() {
				return -1
			}
			return time.Since(last).Seconds()
		}),
	)
}

func (m *Metrics) observe(endpoint string, status int, took time.Duration) {
	if m == nil {
		return
	}
	known := "other"
	for _, ep := range endpoints {
		if ep.name == endpoint {
			known = ep.name
		}
	}
	m.requests.WithLabelValues(known, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(known).Observe(took.Seconds())
}
