package main

// Prometheus metrics of switchboard-http, served at /metrics on the operator
// listener (--operator_listen), never on the API's port: requests by route
// and status, their duration, and control's answers as the gRPC client sees
// them (go-grpc-prometheus: grpc_client_handled_total by method and code,
// grpc_client_handling_seconds). Routes are this proxy's own short list, never
// a path a caller chose, so the number of series is bounded.

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	grpc_prometheus "github.com/grpc-ecosystem/go-grpc-prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

var (
	httpRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "switchboard_http_requests_total",
		Help: "HTTP requests answered by switchboard-http, by route (its own list) and HTTP status",
	}, []string{"route", "code"})
	httpSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "switchboard_http_request_duration_seconds",
		Help:    "HTTP requests from arrival to the last byte of the answer (control's call included), by route",
		Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
	}, []string{"route"})
	buildInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "switchboard_http_build_info",
		Help: "switchboard-http's version (always 1)",
	}, []string{"version"})
)

// version is set at link time (-X main.version=...).
var version = "dev"

func init() {
	prometheus.MustRegister(httpRequests, httpSeconds, buildInfo)
	buildInfo.WithLabelValues(version).Set(1)
	grpc_prometheus.EnableClientHandlingTimeHistogram(grpc_prometheus.WithHistogramBuckets(
		[]float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}))
}

// routeOf names a request by the route it matches: the label values are
// these and nothing else.
func routeOf(r *http.Request) string {
	p := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case len(p) == 5 && p[0] == "apps" && p[2] == "users" && p[4] == "connections":
		return "user_connections"
	case len(p) == 5 && p[0] == "apps" && p[2] == "users" && p[4] == "terminate_connections":
		return "terminate_user"
	case len(p) == 5 && p[0] == "apps" && p[2] == "connections" && p[4] == "disconnect":
		return "disconnect"
	case len(p) == 5 && p[0] == "apps" && p[2] == "users" && p[4] == "send":
		return "send_to_user"
	case len(p) == 5 && p[0] == "apps" && p[2] == "connections" && p[4] == "send":
		return "send_to_client"
	case len(p) == 3 && p[0] == "apps" && p[2] == "events":
		return "pusher_events"
	case len(p) == 3 && p[0] == "apps" && p[2] == "batch_events":
		return "pusher_batch_events"
	case len(p) == 1 && p[0] == "gateways":
		return "list_gateways"
	case len(p) == 1 && p[0] == "openapi.json":
		return "openapi"
	case len(p) >= 1 && p[0] == "api":
		return "centrifugo_api"
	case len(p) == 1 && (p[0] == "livez" || p[0] == "healthz" || p[0] == "readyz"):
		return "health"
	case len(p) >= 1 && p[0] == "admin":
		return "admin"
	case len(p) == 1 && p[0] == "metrics":
		return "metrics"
	}
	return "other"
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// instrument counts and times every request `next` answers.
func instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		route := routeOf(r)
		httpRequests.WithLabelValues(route, strconv.Itoa(rec.status)).Inc()
		httpSeconds.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

// metricsHandler serves the registry in Prometheus' text format.
func metricsHandler() http.Handler {
	return promhttp.HandlerFor(prometheus.DefaultGatherer, promhttp.HandlerOpts{})
}
