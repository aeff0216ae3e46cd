// Package otelops reports what the durable path stores and does as
// OpenTelemetry metrics: the outbox's backlog, lag, dead letters and
// schedule, what its relay and inbox counted, what the bus's
// subscriptions did with each message, and the sagas by status with what
// their runner did. Every instrument is asynchronous: it is read, from
// the modules' read API (fxoutbox's Backlog, DeadLetters and Scheduled,
// fxsaga's Counts) and counters (Stats), when the SDK collects, so that
// nothing is paid between collections; a collection costs four aggregate
// queries on the outbox's tables and one on the sagas' (see their
// methods).
//
// A package of its own in the otel module, so that only its users compile
// the outbox and saga modules. Under fx, [Module] reads whichever of
// *fxoutbox.Outbox, *fxbus.Bus, *fxsaga.Runner and fxsaga.Store the graph
// has:
//
//	fx.New(..., fxoutbox.Module, fxsaga.Module, otelops.Module)
//
// # Instruments
//
// Gauges, read at each collection:
//
//	fxcqrs.outbox.backlog        {row}      rows waiting, by topic (fxcqrs.topic)
//	fxcqrs.outbox.lag            s          how long the oldest due row of a topic has waited
//	fxcqrs.outbox.dead_letters   {row}      dead letters, by topic
//	fxcqrs.outbox.scheduled      {message}  scheduled messages not yet moved into the outbox
//	fxcqrs.bus.in_flight         {message}  inbound messages between delivery and ack
//	fxcqrs.sagas                 {saga}     sagas, by name (fxcqrs.saga) and status (fxcqrs.saga.status)
//
// Counters, since the process started:
//
//	fxcqrs.outbox.relayed          {row}        rows published and deleted
//	fxcqrs.outbox.publish_failures {publish}    publishes the broker refused (the rows waited)
//	fxcqrs.outbox.dead_lettered    {row}        rows moved to the dead letters
//	fxcqrs.inbox.duplicates        {handling}   inbound handlings the inbox skipped
//	fxcqrs.bus.messages            {message}    inbound messages by outcome (fxcqrs.outcome: handled, retried, dead_lettered, redelivered, skipped)
//	fxcqrs.saga.events             {saga}       what runners did, by fxcqrs.outcome: recovered, resumed, timed_out, compensated, compensation_failed, failed, unmatched
//
// The messaging conventions name client-side instruments only
// (messaging.client.*); these are the server side of a store, so they
// carry fxcqrs's own names, documented here.
package otelops

import (
	"context"
	"errors"

	"github.com/fxcqrs/fxcqrs/fxbus"
	"github.com/fxcqrs/fxcqrs/fxcqrsotel"
	"github.com/fxcqrs/fxcqrs/fxoutbox"
	"github.com/fxcqrs/fxcqrs/fxsaga"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/fx"
)

// Attribute keys of the instruments.
const (
	TopicKey   = attribute.Key("fxcqrs.topic")
	SagaKey    = attribute.Key("fxcqrs.saga")
	StatusKey  = attribute.Key("fxcqrs.saga.status")
	OutcomeKey = attribute.Key("fxcqrs.outcome")
)

// Sources are what the metrics read; each is optional.
type Sources struct {
	Outbox *fxoutbox.Outbox
	Bus    *fxbus.Bus
	Runner *fxsaga.Runner
	Sagas  fxsaga.Reader
}

// Register registers the instruments of src with mp's meter, and returns
// what unregisters them.
func Register(mp metric.MeterProvider, src Sources) (unregister func() error, err error) {
	m := mp.Meter(fxcqrsotel.ScopeName)
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
	var (
		backlog   = gauge("fxcqrs.outbox.backlog", "{row}", "Rows waiting in the outbox, by topic")
		lag       = fgauge("fxcqrs.outbox.lag", "s", "How long the oldest due row of a topic has waited in the outbox")
		dead      = gauge("fxcqrs.outbox.dead_letters", "{row}", "Dead letters of the outbox, by topic")
		scheduled = gauge("fxcqrs.outbox.scheduled", "{message}", "Scheduled messages not yet moved into the outbox")
		inFlight  = gauge("fxcqrs.bus.in_flight", "{message}", "Inbound messages between delivery and acknowledgement")
		sagas     = gauge("fxcqrs.sagas", "{saga}", "Sagas, by name and status")
		relayed   = counter("fxcqrs.outbox.relayed", "{row}", "Rows the relay published and deleted")
		failures  = counter("fxcqrs.outbox.publish_failures", "{publish}", "Publishes the broker refused")
		deadLet   = counter("fxcqrs.outbox.dead_lettered", "{row}", "Rows moved to the dead letters")
		dups      = counter("fxcqrs.inbox.duplicates", "{handling}", "Inbound handlings the inbox skipped")
		inbound   = counter("fxcqrs.bus.messages", "{message}", "Inbound messages, by outcome")
		runner    = counter("fxcqrs.saga.events", "{saga}", "What saga runners did, by outcome")
	)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	outcome := func(s string) metric.ObserveOption { return metric.WithAttributes(OutcomeKey.String(s)) }
	reg, err := m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		var errs []error
		if src.Outbox != nil {
			rows, err := src.Outbox.Backlog(ctx)
			errs = append(errs, err)
			for _, b := range rows {
				topic := metric.WithAttributes(TopicKey.String(b.Topic))
				o.ObserveInt64(backlog, int64(b.Rows), topic)
				o.ObserveFloat64(lag, b.Lag.Seconds(), topic)
			}
			letters, err := src.Outbox.DeadLetters(ctx)
			errs = append(errs, err)
			for _, d := range letters {
				o.ObserveInt64(dead, int64(d.Rows), metric.WithAttributes(TopicKey.String(d.Topic)))
			}
			sched, err := src.Outbox.Scheduled(ctx)
			errs = append(errs, err)
			o.ObserveInt64(scheduled, int64(sched.Rows))
			st := src.Outbox.Stats()
			o.ObserveInt64(relayed, int64(st.Sent))
			o.ObserveInt64(failures, int64(st.PublishFailures))
			o.ObserveInt64(deadLet, int64(st.DeadLettered))
			o.ObserveInt64(dups, int64(st.InboxDuplicates))
		}
		if src.Bus != nil {
			st := src.Bus.Stats()
			o.ObserveInt64(inFlight, st.InFlight)
			o.ObserveInt64(inbound, int64(st.Handled), outcome("handled"))
			o.ObserveInt64(inbound, int64(st.Retried), outcome("retried"))
			o.ObserveInt64(inbound, int64(st.DeadLettered), outcome("dead_lettered"))
			o.ObserveInt64(inbound, int64(st.Redelivered), outcome("redelivered"))
			o.ObserveInt64(inbound, int64(st.Skipped), outcome("skipped"))
		}
		if src.Sagas != nil {
			counts, err := src.Sagas.Counts(ctx)
			errs = append(errs, err)
			for _, c := range counts {
				o.ObserveInt64(sagas, int64(c.N), metric.WithAttributes(SagaKey.String(c.Name), StatusKey.String(string(c.Status))))
			}
		}
		if src.Runner != nil {
			st := src.Runner.Stats()
			for name, n := range map[string]uint64{
				"recovered": st.Recovered, "resumed": st.Resumed, "timed_out": st.TimedOut, "compensated": st.Compensations,
				"compensation_failed": st.CompensationFailures, "failed": st.Failed, "unmatched": uint64(max(st.Unmatched, 0)),
			} {
				o.ObserveInt64(runner, int64(n), outcome(name))
			}
		}
		return errors.Join(errs...)
	}, backlog, lag, dead, scheduled, inFlight, sagas, relayed, failures, deadLet, dups, inbound, runner)
	if err != nil {
		return nil, err
	}
	return reg.Unregister, nil
}

// Module registers the instruments of what the graph has (each of
// *fxoutbox.Outbox, *fxbus.Bus, *fxsaga.Runner and fxsaga.Store is
// optional) with the graph's metric.MeterProvider, or OpenTelemetry's
// global one, and unregisters them when the application stops.
var Module = fx.Module("otelops", fx.Invoke(register))

type params struct {
	fx.In

	Lifecycle fx.Lifecycle
	Meter     metric.MeterProvider `optional:"true"`
	Outbox    *fxoutbox.Outbox     `optional:"true"`
	Bus       *fxbus.Bus           `optional:"true"`
	Runner    *fxsaga.Runner       `optional:"true"`
	Store     fxsaga.Store         `optional:"true"`
}

func register(p params) error {
	if p.Meter == nil {
		p.Meter = otel.GetMeterProvider()
	}
	src := Sources{Outbox: p.Outbox, Bus: p.Bus, Runner: p.Runner}
	if r, ok := p.Store.(fxsaga.Reader); ok {
		src.Sagas = r
	}
	unregister, err := Register(p.Meter, src)
	if err != nil {
		return err
	}
	p.Lifecycle.Append(fx.StopHook(unregister))
	return nil
}
