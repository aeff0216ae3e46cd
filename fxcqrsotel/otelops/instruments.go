package otelops

import (
	"context"
	"errors"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"go.opentelemetry.io/otel/metric"
)

// instruments are the package's instruments (see the package's
// documentation), each observed from the source that has it.
type instruments struct {
	// The outbox's.
	backlog, dead, scheduled         metric.Int64ObservableGauge
	lag                              metric.Float64ObservableGauge
	relayed, failures, deadLet, dups metric.Int64ObservableCounter
	// The bus's.
	inFlight metric.Int64ObservableGauge
	inbound  metric.Int64ObservableCounter
	// The sagas' and their runner's.
	sagas  metric.Int64ObservableGauge
	runner metric.Int64ObservableCounter
}

// newInstruments makes the instruments with m, and returns every error
// that made, joined.
func newInstruments(m metric.Meter) (*instruments, error) {
	var errs []error
	gauge := func(name, unit, desc string) metric.Int64ObservableGauge {
		g, err := m.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return g
	}
	fgauge := func(name, unit, desc string) metric.Float64ObservableGauge {
		g, err := m.Float64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return g
	}
	counter := func(name, unit, desc string) metric.Int64ObservableCounter {
		c, err := m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	in := &instruments{
		backlog:   gauge("fxcqrs.outbox.backlog", "{row}", "Rows waiting in the outbox, by topic"),
		lag:       fgauge("fxcqrs.outbox.lag", "s", "How long the oldest due row of a topic has waited in the outbox"),
		dead:      gauge("fxcqrs.outbox.dead_letters", "{row}", "Dead letters of the outbox, by topic"),
		scheduled: gauge("fxcqrs.outbox.scheduled", "{message}", "Scheduled messages not yet moved into the outbox"),
		inFlight:  gauge("fxcqrs.bus.in_flight", "{message}", "Inbound messages between delivery and acknowledgement"),
		sagas:     gauge("fxcqrs.sagas", "{saga}", "Sagas, by name and status"),
		relayed:   counter("fxcqrs.outbox.relayed", "{row}", "Rows the relay published and deleted"),
		failures:  counter("fxcqrs.outbox.publish_failures", "{publish}", "Publishes the broker refused"),
		deadLet:   counter("fxcqrs.outbox.dead_lettered", "{row}", "Rows moved to the dead letters"),
		dups:      counter("fxcqrs.inbox.duplicates", "{handling}", "Inbound handlings the inbox skipped"),
		inbound:   counter("fxcqrs.bus.messages", "{message}", "Inbound messages, by outcome"),
		runner:    counter("fxcqrs.saga.events", "{saga}", "What saga runners did, by outcome"),
	}
	return in, errors.Join(errs...)
}

// all is every instrument, for the callback's registration.
func (in *instruments) all() []metric.Observable {
	return []metric.Observable{
		in.backlog, in.lag, in.dead, in.scheduled, in.inFlight, in.sagas,
		in.relayed, in.failures, in.deadLet, in.dups, in.inbound, in.runner,
	}
}

// observe reads each source src has: one collection. It returns the
// read errors joined, having observed what it could read.
func (in *instruments) observe(ctx context.Context, o metric.Observer, src Sources) error {
	var errs []error
	if src.Outbox != nil {
		errs = append(errs, in.observeOutbox(ctx, o, src.Outbox))
	}
	if src.Bus != nil {
		in.observeBus(o, src.Bus)
	}
	if src.Sagas != nil {
		errs = append(errs, in.observeSagas(ctx, o, src.Sagas))
	}
	if src.Runner != nil {
		in.observeRunner(o, src.Runner)
	}
	return errors.Join(errs...)
}

// observeOutbox reads the outbox's backlog, dead letters and schedule
// (its read API: three aggregate queries) and its relay's counters.
func (in *instruments) observeOutbox(ctx context.Context, o metric.Observer, ob *fxoutbox.Outbox) error {
	var errs []error
	rows, err := ob.Backlog(ctx)
	errs = append(errs, err)
	for _, b := range rows {
		topic := metric.WithAttributes(TopicKey.String(b.Topic))
		o.ObserveInt64(in.backlog, int64(b.Rows), topic)
		o.ObserveFloat64(in.lag, b.Lag.Seconds(), topic)
	}
	letters, err := ob.DeadLetters(ctx)
	errs = append(errs, err)
	for _, d := range letters {
		o.ObserveInt64(in.dead, int64(d.Rows), metric.WithAttributes(TopicKey.String(d.Topic)))
	}
	sched, err := ob.Scheduled(ctx)
	errs = append(errs, err)
	o.ObserveInt64(in.scheduled, int64(sched.Rows))
	st := ob.Stats()
	o.ObserveInt64(in.relayed, int64(st.Sent))
	o.ObserveInt64(in.failures, int64(st.PublishFailures))
	o.ObserveInt64(in.deadLet, int64(st.DeadLettered))
	o.ObserveInt64(in.dups, int64(st.InboxDuplicates))
	return errors.Join(errs...)
}

// observeBus reads the bus's counters.
func (in *instruments) observeBus(o metric.Observer, b *fxbus.Bus) {
	st := b.Stats()
	o.ObserveInt64(in.inFlight, st.InFlight)
	o.ObserveInt64(in.inbound, int64(st.Handled), outcome("handled"))
	o.ObserveInt64(in.inbound, int64(st.Retried), outcome("retried"))
	// An expired message is an outcome of its own, not among the
	// dead_lettered, whose alerts it must not raise: its producer asked
	// for it (see fxbus.DeliverWithin).
	o.ObserveInt64(in.inbound, int64(st.DeadLettered-min(st.Expired, st.DeadLettered)), outcome("dead_lettered"))
	o.ObserveInt64(in.inbound, int64(st.Expired), outcome("expired"))
	o.ObserveInt64(in.inbound, int64(st.Redelivered), outcome("redelivered"))
	o.ObserveInt64(in.inbound, int64(st.Skipped), outcome("skipped"))
	o.ObserveInt64(in.inbound, int64(st.Throttled), outcome("throttled"))
}

// observeSagas reads the sagas by name and status (one aggregate query).
func (in *instruments) observeSagas(ctx context.Context, o metric.Observer, r fxsaga.Reader) error {
	counts, err := r.Counts(ctx)
	for _, c := range counts {
		o.ObserveInt64(in.sagas, int64(c.N), metric.WithAttributes(SagaKey.String(c.Name), StatusKey.String(string(c.Status))))
	}
	return err
}

// observeRunner reads the saga runner's counters.
func (in *instruments) observeRunner(o metric.Observer, r *fxsaga.Runner) {
	st := r.Stats()
	for name, n := range map[string]uint64{
		"recovered": st.Recovered, "resumed": st.Resumed, "timed_out": st.TimedOut, "compensated": st.Compensations,
		"compensation_failed": st.CompensationFailures, "failed": st.Failed, "unmatched": uint64(max(st.Unmatched, 0)),
	} {
		o.ObserveInt64(in.runner, int64(n), outcome(name))
	}
}

func outcome(s string) metric.ObserveOption { return metric.WithAttributes(OutcomeKey.String(s)) }
