package fxconsole

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/fxcqrs/fxcqrs/fxoutbox"
)

// The history the samples make: the overview's and a topic's charts, and
// the answers to "is something wrong?" read from them.

// growWindow is how far back the overview looks for a growing backlog.
const growWindow = 5 * time.Minute

// window returns the samples and the span the charts draw.
func window(samples []Sample) (from, to time.Time) {
	if len(samples) == 0 {
		return time.Time{}, time.Time{}
	}
	return samples[0].At, samples[len(samples)-1].At
}

// topTopics returns the topics of samples, the largest backlog now (then
// the largest ever) first, at most n.
func topTopics(samples []Sample, n int) []string {
	latest, peak := map[string]int{}, map[string]int{}
	for i, s := range samples {
		for _, t := range s.Topics {
			peak[t.Topic] = max(peak[t.Topic], t.Rows)
			if i == len(samples)-1 {
				latest[t.Topic] = t.Rows
			}
		}
	}
	topics := make([]string, 0, len(peak))
	for t := range peak {
		topics = append(topics, t)
	}
	slices.SortFunc(topics, func(a, b string) int {
		if latest[a] != latest[b] {
			return latest[b] - latest[a]
		}
		if peak[a] != peak[b] {
			return peak[b] - peak[a]
		}
		if a < b {
			return -1
		}
		return 1
	})
	return topics[:min(n, len(topics))]
}

// topicSeries is, for each topic, f of its sample (0 where a sample has
// no row of it: nothing waits).
func topicSeries(samples []Sample, topics []string, f func(TopicSample) float64) []series {
	out := make([]series, len(topics))
	for i, topic := range topics {
		out[i].Name = topic
		for _, s := range samples {
			if !s.HasOutbox {
				continue
			}
			t, _ := s.Topic(topic)
			out[i].Times, out[i].Values = append(out[i].Times, s.At), append(out[i].Values, f(t))
		}
	}
	return out
}

// valueSeries is f of every sample where has says f can be read.
func valueSeries(name string, samples []Sample, has func(Sample) bool, f func(Sample) float64) series {
	s := series{Name: name}
	for _, x := range samples {
		if has(x) {
			s.Times, s.Values = append(s.Times, x.At), append(s.Values, f(x))
		}
	}
	return s
}

// rateSeries is a counter's increase per minute between samples, drawn
// at the later one.
func rateSeries(name string, samples []Sample, has func(Sample) bool, count func(Sample) uint64) series {
	s := series{Name: name}
	var prev *Sample
	for i := range samples {
		x := &samples[i]
		if !has(*x) {
			continue
		}
		if prev != nil && x.At.After(prev.At) {
			d := float64(count(*x))
			if count(*x) >= count(*prev) { // else the process restarted: count from zero
				d -= float64(count(*prev))
			}
			s.Times, s.Values = append(s.Times, x.At), append(s.Values, d*float64(time.Minute)/float64(x.At.Sub(prev.At)))
		}
		prev = x
	}
	return s
}

func nonEmpty(ss ...series) []series {
	var out []series
	for _, s := range ss {
		if len(s.Values) > 0 {
			out = append(out, s)
		}
	}
	return out
}

// overviewCharts are the overview's charts over samples.
func overviewCharts(samples []Sample, marks []repairMark) []chart {
	from, to := window(samples)
	topics := topTopics(samples, maxLines)
	outbox := func(s Sample) bool { return s.HasOutbox }
	sagas := func(s Sample) bool { return s.HasSagas }
	return []chart{
		newChart("chart-backlog", "Backlog by topic", "rows", "Rows waiting in the outbox, by topic, over time", from, to,
			topicSeries(samples, topics, func(t TopicSample) float64 { return float64(t.Rows) }), marks),
		newChart("chart-lag", "Lag by topic", "s", "How long the oldest due row of each topic has waited, in seconds", from, to,
			topicSeries(samples, topics, func(t TopicSample) float64 { return t.Lag.Seconds() }), marks),
		newChart("chart-rate", "Throughput", "/min", "Rows relayed and messages handled per minute", from, to, nonEmpty(
			rateSeries("relayed", samples, func(s Sample) bool { return s.HasRelayed }, func(s Sample) uint64 { return s.Relayed }),
			rateSeries("handled", samples, func(s Sample) bool { return s.HasHandled }, func(s Sample) uint64 { return s.Handled }),
		), marks),
		newChart("chart-failures", "Dead letters and parked keys", "", "Dead letters not discarded and the keys they park", from, to, nonEmpty(
			valueSeries("dead letters", samples, outbox, func(s Sample) float64 { return float64(s.DeadLetters) }),
			valueSeries("parked keys", samples, outbox, func(s Sample) float64 { return float64(s.ParkedKeys) }),
		), marks),
		newChart("chart-sagas", "Sagas waiting and failed", "sagas", "Sagas waiting for an event, and those failed or set aside", from, to, nonEmpty(
			valueSeries("waiting", samples, sagas, func(s Sample) float64 { return float64(s.SagasWaiting) }),
			valueSeries("failed", samples, sagas, func(s Sample) float64 { return float64(s.SagasFailed) }),
		), marks),
	}
}

// topicCharts are a topic's charts over samples.
func topicCharts(samples []Sample, topic string, marks []repairMark) []chart {
	from, to := window(samples)
	named := func(name string, f func(TopicSample) float64) series {
		s := topicSeries(samples, []string{topic}, f)[0]
		s.Name = name
		return s
	}
	return []chart{
		newChart("chart-topic-backlog", "Backlog", "rows", "Rows of "+topic+" waiting in the outbox, and those due", from, to, []series{
			named("rows", func(t TopicSample) float64 { return float64(t.Rows) }),
			named("due", func(t TopicSample) float64 { return float64(t.Due) }),
		}, marks),
		newChart("chart-topic-lag", "Lag", "s", "How long the oldest due row of "+topic+" has waited, in seconds", from, to,
			[]series{named("lag", func(t TopicSample) float64 { return t.Lag.Seconds() })}, marks),
	}
}

// growth is a backlog that grew over the last minutes.
type growth struct {
	Topic    string
	From, To int
	Over     time.Duration
}

// growing returns the topics whose backlog is larger in the newest
// sample than growWindow before it (or the oldest sample, if younger),
// the largest growth first.
func growing(samples []Sample) []growth {
	if len(samples) < 2 {
		return nil
	}
	last := samples[len(samples)-1]
	then := samples[0]
	for _, s := range samples {
		if last.At.Sub(s.At) < growWindow {
			break
		}
		then = s
	}
	var out []growth
	for _, t := range last.Topics {
		was, _ := then.Topic(t.Topic)
		if t.Rows > was.Rows {
			out = append(out, growth{Topic: t.Topic, From: was.Rows, To: t.Rows, Over: last.At.Sub(then.At)})
		}
	}
	slices.SortFunc(out, func(a, b growth) int { return (b.To - b.From) - (a.To - a.From) })
	return out
}

// checkState is a health check's outcome.
type checkState struct {
	Name      string
	Readiness bool
	Err       string
}

// runChecks runs the console's health checks, in parallel, each at most
// 5s, a panic included.
func (c *Console) runChecks(ctx context.Context) []checkState {
	out := make([]checkState, len(c.checks))
	var wg sync.WaitGroup
	for i, ch := range c.checks {
		out[i] = checkState{Name: ch.Name, Readiness: ch.Readiness}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			defer func() {
				if v := recover(); v != nil {
					out[i].Err = fmt.Sprintf("panicked: %v", v)
				}
			}()
			if err := ch.Run(ctx); err != nil {
				out[i].Err = err.Error()
			}
		})
	}
	wg.Wait()
	slices.SortFunc(out, func(a, b checkState) int {
		if a.Name < b.Name {
			return -1
		}
		return 1
	})
	return out
}

// marks returns the repairs the charts mark: the outbox's recorded ones
// (the console's, the command line's, another replica's) and the saga
// marks this console made.
func (c *Console) repairMarks(ctx context.Context) ([]repairMark, error) {
	var out []repairMark
	var err error
	if c.admin != nil {
		var repairs []fxoutbox.Repair
		repairs, err = c.admin.Repairs(ctx, 50)
		for _, r := range repairs {
			label := r.Action + " " + r.Target
			if r.Tenant != "" {
				label += " of tenant " + r.Tenant
			}
			out = append(out, repairMark{At: r.At, Label: label + " by " + r.Who + ": " + r.Why})
		}
	}
	c.marksMu.Lock()
	out = append(out, c.marks...)
	c.marksMu.Unlock()
	return out, err
}

// mark records a repair this console made that the outbox does not.
func (c *Console) mark(label string) {
	c.marksMu.Lock()
	defer c.marksMu.Unlock()
	c.marks = append(c.marks, repairMark{At: c.cfg.Now(), Label: label})
	if len(c.marks) > 100 {
		c.marks = slices.Delete(c.marks, 0, len(c.marks)-100)
	}
}

// freshness says how old the newest sample is.
type freshness struct {
	Sampling bool
	Every    time.Duration
	Samples  int
	Age      time.Duration
	Newest   time.Time
	Stale    bool // older than two intervals
	Err      string
}

func (c *Console) freshness(samples []Sample) freshness {
	f := freshness{Sampling: c.sampling(), Every: c.cfg.SampleEvery, Samples: len(samples)}
	if len(samples) > 0 {
		last := samples[len(samples)-1]
		f.Newest, f.Err = last.At, last.Err
		f.Age = max(c.cfg.Now().Sub(last.At), 0)
		f.Stale = f.Age > 2*c.cfg.SampleEvery
	}
	return f
}

type topicData struct {
	Topic     string
	Now       TopicSample
	Known     bool
	Charts    []chart
	Freshness freshness
}

func (c *Console) topic(w http.ResponseWriter, r *http.Request) {
	topic := r.URL.Query().Get("name")
	samples := c.ring.all()
	marks, err := c.repairMarks(r.Context())
	d := topicData{Topic: topic, Charts: topicCharts(samples, topic, marks), Freshness: c.freshness(samples)}
	if len(samples) > 0 {
		d.Now, d.Known = samples[len(samples)-1].Topic(topic)
	}
	c.render(w, r, "topic.html", "Topic "+topic, d, err)
}
