package dashboards_test

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/fxcqrs/fxcqrs/fxcqrsotel"
	"github.com/fxcqrs/fxcqrs/fxcqrsotel/dashboards"
	"github.com/fxcqrs/fxcqrs/fxcqrsotel/otelops"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/embedded"
	"go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// instrument is one instrument the code made: its name, unit and kind.
type instrument struct {
	name, unit string
	kind       string // "gauge", "counter" (monotonic), "histogram"
}

// recorder is a MeterProvider that records every instrument made with
// it, and otherwise does nothing: the instruments the code under test
// makes, enumerated from the code itself.
type recorder struct {
	embedded.MeterProvider
	mu   sync.Mutex
	made []instrument
}

func (r *recorder) Meter(string, ...metric.MeterOption) metric.Meter { return &meter{r: r} }

func (r *recorder) add(name, unit, kind string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.made = append(r.made, instrument{name: name, unit: unit, kind: kind})
}

// meter records the instruments of the kinds fxcqrsotel and otelops
// make; a kind it does not know goes unrecorded, and a dashboard query
// naming it fails the test: the test errs on the safe side.
type meter struct {
	noop.Meter
	r *recorder
}

func (m *meter) Int64Counter(name string, o ...metric.Int64CounterOption) (metric.Int64Counter, error) {
	m.r.add(name, metric.NewInt64CounterConfig(o...).Unit(), "counter")
	return m.Meter.Int64Counter(name, o...)
}

func (m *meter) Int64UpDownCounter(name string, o ...metric.Int64UpDownCounterOption) (metric.Int64UpDownCounter, error) {
	m.r.add(name, metric.NewInt64UpDownCounterConfig(o...).Unit(), "gauge")
	return m.Meter.Int64UpDownCounter(name, o...)
}

func (m *meter) Float64Histogram(name string, o ...metric.Float64HistogramOption) (metric.Float64Histogram, error) {
	m.r.add(name, metric.NewFloat64HistogramConfig(o...).Unit(), "histogram")
	return m.Meter.Float64Histogram(name, o...)
}

func (m *meter) Int64ObservableCounter(name string, o ...metric.Int64ObservableCounterOption) (metric.Int64ObservableCounter, error) {
	m.r.add(name, metric.NewInt64ObservableCounterConfig(o...).Unit(), "counter")
	return m.Meter.Int64ObservableCounter(name, o...)
}

func (m *meter) Int64ObservableGauge(name string, o ...metric.Int64ObservableGaugeOption) (metric.Int64ObservableGauge, error) {
	m.r.add(name, metric.NewInt64ObservableGaugeConfig(o...).Unit(), "gauge")
	return m.Meter.Int64ObservableGauge(name, o...)
}

func (m *meter) Float64ObservableGauge(name string, o ...metric.Float64ObservableGaugeOption) (metric.Float64ObservableGauge, error) {
	m.r.add(name, metric.NewFloat64ObservableGaugeConfig(o...).Unit(), "gauge")
	return m.Meter.Float64ObservableGauge(name, o...)
}

// promName is the name Prometheus gives an OpenTelemetry name or
// attribute: every character outside [a-zA-Z0-9_:] becomes "_".
func promName(s string) string {
	return regexp.MustCompile(`[^a-zA-Z0-9_:]`).ReplaceAllString(s, "_")
}

// series are the Prometheus series names of in, as the OpenTelemetry
// Prometheus exporter and the Collector write them: the unit's suffix
// ("s": _seconds; an annotation in braces: none), then _total for a
// monotonic counter, and _bucket, _sum, _count for a histogram.
func series(in instrument) []string {
	base := promName(in.name)
	switch {
	case in.unit == "s":
		base += "_seconds"
	case in.unit == "" || strings.HasPrefix(in.unit, "{"):
	default:
		base += "_" + promName(in.unit)
	}
	switch in.kind {
	case "counter":
		return []string{base + "_total"}
	case "histogram":
		return []string{base + "_bucket", base + "_sum", base + "_count"}
	}
	return []string{base}
}

// exported is every series name the code's instruments make, and every
// label their attributes make.
func exported(t *testing.T) (metrics, labels map[string]bool) {
	t.Helper()
	r := &recorder{}
	_, err := fxcqrsotel.New(tracenoop.NewTracerProvider(), r)
	require.NoError(t, err)
	unregister, err := otelops.Register(r, otelops.Sources{})
	require.NoError(t, err)
	require.NoError(t, unregister())
	require.NotEmpty(t, r.made)
	metrics = map[string]bool{}
	for _, in := range r.made {
		for _, s := range series(in) {
			metrics[s] = true
		}
	}
	labels = map[string]bool{"le": true} // a histogram's bucket bound
	for _, k := range []attribute.Key{
		fxcqrsotel.KindKey, fxcqrsotel.MessageKey, fxcqrsotel.HandlerKey, fxcqrsotel.ErrorTypeKey,
		fxcqrsotel.BreakerStateKey, fxcqrsotel.FallbackKey,
		otelops.TopicKey, otelops.SagaKey, otelops.StatusKey, otelops.OutcomeKey,
	} {
		labels[promName(string(k))] = true
	}
	return metrics, labels
}

// queries returns every PromQL expression of the dashboard: its panels'
// targets and its variables' queries.
func queries(t *testing.T) []string {
	t.Helper()
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr   string `json:"expr"`
				Legend string `json:"legendFormat"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Type       string `json:"type"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	require.NoError(t, json.Unmarshal(dashboards.Grafana, &d), "the dashboard is JSON")
	var out []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			require.NotEmpty(t, tg.Expr, p.Title)
			out = append(out, tg.Expr)
			for _, l := range legendLabel.FindAllStringSubmatch(tg.Legend, -1) { // a legend names labels: check them as a query would
				out = append(out, "fxcqrs_outbox_backlog{"+l[1]+"=\"\"}")
			}
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			out = append(out, v.Definition)
		}
	}
	return out
}

var (
	matchers    = regexp.MustCompile(`\{[^}]*\}`)
	labelLists  = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	matcherKey  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	identifier  = regexp.MustCompile(`\bfxcqrs_[a-zA-Z0-9_]+`)
	legendLabel = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
	labelValue  = regexp.MustCompile(`label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)`)
)

// Every metric and every label the dashboard's queries name is one the
// code exports (enumerated from the instruments fxcqrsotel and otelops
// make, not from a copy of their names), and the dashboard draws what an
// operator needs: the backlog, the lag, the dead letters, the relay's
// rate, the handlers' durations.
func TestDashboardNamesWhatTheCodeExports(t *testing.T) {
	metrics, labels := exported(t)
	named := map[string]bool{}
	for _, q := range queries(t) {
		var used []string
		for _, m := range matchers.FindAllStringSubmatch(q, -1) {
			for _, k := range matcherKey.FindAllStringSubmatch(m[0], -1) {
				used = append(used, k[1])
			}
		}
		for _, l := range labelLists.FindAllStringSubmatch(q, -1) {
			for _, k := range strings.Split(l[1], ",") {
				used = append(used, strings.TrimSpace(k))
			}
		}
		bare := q
		if lv := labelValue.FindStringSubmatch(q); lv != nil {
			used = append(used, lv[2])
			bare = lv[1]
		}
		for _, l := range used {
			assert.True(t, labels[l], "%q names the label %s, which no attribute of the code makes", q, l)
		}
		bare = labelLists.ReplaceAllString(matchers.ReplaceAllString(bare, ""), "")
		ids := identifier.FindAllString(bare, -1)
		assert.NotEmpty(t, ids, "%q names no fxcqrs metric", q)
		for _, id := range ids {
			named[id] = true
			assert.True(t, metrics[id], "%q names %s, which the code does not export (it exports %v)", q, id, keys(metrics))
		}
	}
	for _, need := range []string{
		"fxcqrs_outbox_backlog", "fxcqrs_outbox_lag_seconds", "fxcqrs_outbox_dead_letters",
		"fxcqrs_outbox_relayed_total", "fxcqrs_invocation_duration_seconds_bucket",
	} {
		assert.True(t, named[need], "the dashboard draws %s", need)
	}
}

// The check itself catches a name the code does not export.
func TestDashboardCheckCatchesAMisspelling(t *testing.T) {
	metrics, _ := exported(t)
	assert.True(t, metrics["fxcqrs_outbox_lag_seconds"])
	assert.False(t, metrics["fxcqrs_outbox_lag"], "a gauge in seconds is named with its unit")
	assert.False(t, metrics["fxcqrs_outbox_relayed"], "a counter is named with _total")
	assert.True(t, metrics["fxcqrs_invocation_duration_seconds_count"])
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
