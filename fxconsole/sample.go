package fxconsole

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fxcqrs/fxcqrs"
	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxsaga"
)

// The samples the charts draw: what the console read at a fixed
// interval, kept in a ring.

// Defaults of the sampling (see Config).
const (
	DefaultSampleEvery = 15 * time.Second
	DefaultSamples     = 480 // two hours at DefaultSampleEvery
	// maxTopics bounds the topics one sample keeps (the largest
	// backlogs), so that a ring's size does not grow with the topics.
	maxTopics = 50
)

// Sample is what the console read at one moment.
type Sample struct {
	// At is when, by the console's clock (Config.Now).
	At time.Time
	// Topics is each topic's backlog, by topic (at most 50: the largest).
	Topics []TopicSample
	// DeadLetters is the dead letters not discarded, the outbox's and
	// the inbound ones; ParkedKeys the keys they park, a key once per
	// tenant that parked it.
	DeadLetters, ParkedKeys int
	// Relayed is the outbox's relay's rows published since it started,
	// and Handled the bus's messages handled (the counters, read with
	// WithOutboxStats and WithBusStats): the charts draw their rates.
	Relayed, Handled       uint64
	HasRelayed, HasHandled bool
	// SagasWaiting and SagasFailed count the sagas waiting for an event
	// and those failed or set aside, of every name.
	SagasWaiting, SagasFailed int
	// HasOutbox and HasSagas say which stores were read.
	HasOutbox, HasSagas bool
	// Err is what could not be read, "" when everything was.
	Err string
}

// TopicSample is one topic's backlog in a Sample.
type TopicSample struct {
	Topic     string
	Rows, Due int
	Lag       time.Duration
}

// Topic returns the sample of topic, and whether s has it.
func (s Sample) Topic(topic string) (TopicSample, bool) {
	i, ok := slices.BinarySearchFunc(s.Topics, topic, func(t TopicSample, topic string) int { return strings.Compare(t.Topic, topic) })
	if !ok {
		return TopicSample{Topic: topic}, false
	}
	return s.Topics[i], true
}

// ring keeps the last samples, the oldest overwritten first.
type ring struct {
	mu   sync.Mutex
	buf  []Sample
	next int
	full bool
}

func (r *ring) add(s Sample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf[r.next] = s
	r.next = (r.next + 1) % len(r.buf)
	r.full = r.full || r.next == 0
}

// all returns the samples, the oldest first.
func (r *ring) all() []Sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.full {
		return slices.Clone(r.buf[:r.next])
	}
	return append(slices.Clone(r.buf[r.next:]), r.buf[:r.next]...)
}

// Option adds a source to the console made with New.
type Option func(*Console)

// WithOutboxStats gives the console the outbox's counters (Outbox.Stats),
// for the rows relayed per minute.
func WithOutboxStats(stats func() fxoutbox.Stats) Option {
	return func(c *Console) { c.outboxStats = stats }
}

// WithBusStats gives the console the bus's counters (Bus.Stats), for the
// messages handled per minute.
func WithBusStats(stats func() fxbus.Stats) Option {
	return func(c *Console) { c.busStats = stats }
}

// WithChecks gives the console the health checks whose state the
// overview shows first (under fx: the checks the modules register).
func WithChecks(checks ...fxcqrs.Check) Option {
	return func(c *Console) { c.checks = append(c.checks, checks...) }
}

// Samples returns the samples the console keeps, the oldest first.
func (c *Console) Samples() []Sample { return c.ring.all() }

// Sample reads what the charts draw, as at now, and keeps it. The
// sampling loop (Start) calls it at every Config.SampleEvery; a test, or
// a service with a schedule of its own, may call it instead. It keeps a
// sample even when a read failed (Sample.Err says which), and returns
// that error.
func (c *Console) Sample(ctx context.Context, now time.Time) error {
	s := Sample{At: now, HasOutbox: c.admin != nil, HasSagas: c.sagas != nil}
	var errs []error
	if c.admin != nil {
		backlog, err := c.admin.Backlog(ctx)
		errs = append(errs, err)
		for _, b := range backlog {
			s.Topics = append(s.Topics, TopicSample{Topic: b.Topic, Rows: b.Rows, Due: b.Due, Lag: b.Lag})
		}
		if len(s.Topics) > maxTopics {
			slices.SortFunc(s.Topics, func(a, b TopicSample) int { return b.Rows - a.Rows })
			s.Topics = s.Topics[:maxTopics]
		}
		slices.SortFunc(s.Topics, func(a, b TopicSample) int { return strings.Compare(a.Topic, b.Topic) })
		dead, err := c.admin.DeadLetters(ctx)
		errs = append(errs, err)
		for _, d := range dead {
			s.DeadLetters += d.Rows
			keys, err := c.admin.ParkedKeys(ctx, d.Topic)
			errs = append(errs, err)
			s.ParkedKeys += len(keys)
		}
	}
	if c.outboxStats != nil {
		s.Relayed, s.HasRelayed = c.outboxStats().Sent, true
	}
	if c.busStats != nil {
		s.Handled, s.HasHandled = c.busStats().Handled, true
	}
	if c.sagas != nil {
		counts, err := c.sagas.Counts(ctx)
		errs = append(errs, err)
		for _, n := range counts {
			switch n.Status {
			case fxsaga.Waiting:
				s.SagasWaiting += n.N
			case fxsaga.Failed, fxsaga.SetAside:
				s.SagasFailed += n.N
			}
		}
	}
	err := errors.Join(errs...)
	if err != nil {
		s.Err = err.Error()
	}
	c.ring.add(s)
	return err
}

// Start takes a sample, then one at every Config.SampleEvery until Stop:
// the history the charts draw. Under Module, the fx lifecycle starts and
// stops it. Without it the charts stay empty and the pages say so.
func (c *Console) Start(ctx context.Context) error {
	c.loop.Lock()
	defer c.loop.Unlock()
	if c.stop != nil {
		return errors.New("fxconsole.Start: already started")
	}
	_ = c.Sample(ctx, c.cfg.Now()) // a failed read is kept in the sample, and shown
	stop, done := make(chan struct{}), make(chan struct{})
	c.stop, c.done = stop, done
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-c.cfg.After(c.cfg.SampleEvery):
			}
			ctx, cancel := context.WithTimeout(context.Background(), c.cfg.SampleEvery)
			_ = c.Sample(ctx, c.cfg.Now())
			cancel()
		}
	}()
	return nil
}

// Stop ends the sampling Start began, waiting for a sample being taken
// at most until ctx ends.
func (c *Console) Stop(ctx context.Context) error {
	c.loop.Lock()
	defer c.loop.Unlock()
	if c.stop == nil {
		return nil
	}
	close(c.stop)
	c.stop = nil
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return errors.New("fxconsole.Stop: a sample was still being taken: " + ctx.Err().Error())
	}
}

// sampling says whether the loop runs.
func (c *Console) sampling() bool {
	c.loop.Lock()
	defer c.loop.Unlock()
	return c.stop != nil
}
