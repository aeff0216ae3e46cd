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
//	fxcqrs.bus.messages            {message}    inbound messages by outcome (fxcqrs.outcome: handled, retried, dead_lettered, expired, redelivered, skipped, throttled)
//	fxcqrs.saga.events             {saga}       what runners did, by fxcqrs.outcome: recovered, resumed, timed_out, compensated, compensation_failed, failed, unmatched
//
// On fxcqrs.bus.messages, expired counts the messages a subscription
// received after their deliver-by time (fxbus.DeliverWithin) and
// dead-lettered unhandled; dead_lettered counts the others, the
// failures, so that an alert on it does not fire for what a producer
// asked for. throttled counts the messages that waited for their rate
// limit's budget (fxbus.RateLimit) before they were handled: like
// retried, something that befell a message on its way, not where it
// ended.
//
// The messaging conventions name client-side instruments only
// (messaging.client.*); these are the server side of a store, so they
// carry fxcqrs's own names, documented here.
package otelops

import (
	"context"

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
	in, err := newInstruments(m)
	if err != nil {
		return nil, err
	}
	reg, err := m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		return in.observe(ctx, o, src)
	}, in.all()...)
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
