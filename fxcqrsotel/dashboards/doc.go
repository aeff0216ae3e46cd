// Package dashboards holds a Grafana dashboard over the metrics that
// fxcqrsotel (calls, handler invocations and their durations) and
// fxcqrsotel/otelops (the outbox's backlog, lag and dead letters, the
// relay's rate, the bus's messages, the sagas) export, for teams whose
// metrics reach Prometheus: through the OpenTelemetry Prometheus
// exporter or the Collector, which name them as Prometheus does (dots to
// underscores, "_seconds" for a unit of s, "_total" for a counter, the
// attributes' dots to underscores: fxcqrs_outbox_lag_seconds{fxcqrs_topic}).
//
// Import grafana.json in Grafana (Dashboards, New, Import) and choose the
// Prometheus data source; or provision it from [Grafana]:
//
//	os.WriteFile("/var/lib/grafana/dashboards/fxcqrs.json", dashboards.Grafana, 0o644)
//
// Its first row answers "is something wrong?": the worst lag, the
// backlog, the dead letters and the failed sagas; then the backlog and
// lag by topic, the relay's rate, the dead letters by topic, the inbound
// messages by outcome, the handlers' durations (p50, p95, p99, and the
// slowest handlers), and the sagas by status. A test checks that every
// metric and label its queries name is one the code exports.
package dashboards

import _ "embed"

// Grafana is the dashboard's JSON (grafana.json in this folder).
//
//go:embed grafana.json
var Grafana []byte
